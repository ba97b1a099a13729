"""Tests of torch_ext; the whole directory is skipped when torch is not installed."""

import importlib.util
import os

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

if importlib.util.find_spec("torch") is None:  # pragma: no cover - torch is an extra
    collect_ignore_glob = ["*.py"]
else:
    import numpy as np
    import pytest

    @pytest.fixture(autouse=True)
    def one_thread():
        """Run each test on one torch thread: on a small shared machine two intra-op
        threads mostly spin against each other (measured 5x slower under load)."""
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(old)

    @pytest.fixture(scope="session")
    def leech():
        from leechlib import LeechLattice

        return LeechLattice()

    @pytest.fixture
    def nrng():
        return np.random.default_rng(20240611)

