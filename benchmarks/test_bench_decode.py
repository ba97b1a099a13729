"""pytest-benchmark suite: ``pytest benchmarks/test_bench_decode.py --benchmark-enable``."""

import numpy as np
import pytest

from leechlib import GolayCode
from leechlib.decode import nearest_minimal_vector, nearest_point

N = 10_000


@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(0).standard_normal((N, 24))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("workers", [1, -1])
def test_nearest_point(benchmark, points, dtype, workers):
    x = points.astype(dtype)
    nearest_point(x[:10])
    out = benchmark(nearest_point, x, workers=workers)
    assert out.shape == x.shape


def test_nearest_minimal_vector(benchmark, points):
    x = points[:2000]
    nearest_minimal_vector(x[:10])
    benchmark(nearest_minimal_vector, x, workers=1)


def test_decode_soft(benchmark, points):
    code = GolayCode()
    code.decode_soft(points[:10])
    benchmark(code.decode_soft, points, workers=1)
