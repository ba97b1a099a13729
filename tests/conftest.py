import os

import numpy as np
import pytest

os.environ.setdefault("NUMBA_NUM_THREADS", "2")


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
