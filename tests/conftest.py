import os

import numpy as np
import pytest

os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def _have_gpu() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a CUDA device: skipped without one (torch is imported
    only when such a test was collected)."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if marked and not _have_gpu():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in marked:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def code():
    from leechlib import GolayCode

    return GolayCode()


@pytest.fixture(scope="session")
def lattice():
    from leechlib import LeechLattice

    return LeechLattice()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
