"""The quantizer protocol: Ball, ShapeGain, E8 and Scalar quantizers behave alike."""

import inspect
import math

import numpy as np
import pytest

from leechlib import BallQuantizer, LeechQuantizer, Quantizer, ShapeGainQuantizer
from leechlib.baselines import E8Quantizer, ScalarQuantizer

#: (name, factory, block size, fit options that keep the test fast)
CASES = [
    ("ball", lambda: BallQuantizer(max_norm=8), 24, {"max_points": 300, "iters": 4}),
    ("shape-gain", lambda: ShapeGainQuantizer(shells=(4,), gain_levels=4), 24,
     {"max_points": 300}),
    ("e8", lambda: E8Quantizer(4), 8, {"max_points": 300, "iters": 6}),
    ("scalar", lambda: ScalarQuantizer(2, kind="lloyd-max"), 1, {}),
]
IDS = [c[0] for c in CASES]


def _data(block, seed=0):
    rng = np.random.default_rng(seed)
    shape = (3, 40) if block == 1 else (3, 40, block)
    return rng.standard_normal(shape)


@pytest.fixture(scope="module")
def fitted():
    out = {}
    for name, make, block, opts in CASES:
        q = make()
        assert q.fit(_data(block).reshape(-1, block) if block > 1 else _data(block),
                     workers=1, **opts) is q
        out[name] = q
    return out


@pytest.mark.parametrize("name, make, block, opts", CASES, ids=IDS)
def test_members(name, make, block, opts):
    q = make()
    assert isinstance(q, Quantizer)
    assert q.block_size == block
    assert isinstance(q.size, int) and q.size >= 2
    assert math.isclose(q.bits, math.log2(q.size), rel_tol=0, abs_tol=1e-12)
    assert math.isclose(q.bits_per_dim, q.bits / block, rel_tol=0, abs_tol=1e-12)
    assert q.prepare() is q
    for method in ("fit", "encode", "decode", "quantize"):
        p = inspect.signature(getattr(q, method)).parameters["workers"]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is None, method


def test_other_objects_are_not_quantizers():
    assert not isinstance(LeechQuantizer(), Quantizer)  # no fit, size, ...
    assert not isinstance(np.zeros(3), Quantizer)


@pytest.mark.parametrize("name, block", [(c[0], c[2]) for c in CASES], ids=IDS)
def test_round_trip(fitted, name, block):
    q = fitted[name]
    x = _data(block, seed=1)
    codes = q.encode(x, workers=1)
    assert codes.dtype.kind in "iu"
    lead = x.shape if block == 1 else x.shape[:-1]
    assert codes.shape[: len(lead)] == lead
    xh = q.decode(codes, workers=-1)
    assert xh.dtype == np.float64 and xh.shape == x.shape
    np.testing.assert_array_equal(xh, q.quantize(x, workers=-1))
    # codewords are fixed points: quantizing them again changes nothing
    np.testing.assert_allclose(q.quantize(xh), xh, rtol=1e-12, atol=1e-12)
    # and the codewords beat a coarse alternative: zero
    assert np.mean((xh - x) ** 2) < np.mean(x**2)


@pytest.mark.parametrize("name, block", [(c[0], c[2]) for c in CASES], ids=IDS)
@pytest.mark.parametrize("workers, exc", [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_workers_checked_everywhere(fitted, name, block, workers, exc):
    q = fitted[name]
    x = _data(block)
    codes = q.encode(x)
    for call in (lambda: q.encode(x, workers=workers), lambda: q.decode(codes, workers=workers),
                 lambda: q.quantize(x, workers=workers)):
        with pytest.raises(exc, match="workers"):
            call()
