"""Quantizers fitted at extreme scales (issue #24, item 13).

Every fit divides its data by a power of two near their largest entry and scales
what it fits (levels, scale) back, exact in binary floating point: a fit of ``x * 2**k``
is the fit of ``x`` times ``2**k``, and a fit of ``x * 1e-300`` or ``x * 1e300`` has the
relative error of the fit of ``x``.  Where a result cannot be represented in float64
the fit refuses ``x`` with a clear error.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leechlib import BallQuantizer, ShapeGainQuantizer
from leechlib.baselines import E8Quantizer, ScalarQuantizer

_X = np.random.default_rng(0).standard_normal((120, 24))

_QUANTIZERS = {
    "scalar-uniform": (lambda: ScalarQuantizer(2), {}),
    "scalar-lloyd-max": (lambda: ScalarQuantizer(3, kind="lloyd-max"), {}),
    "e8": (lambda: E8Quantizer(4), {"iters": 6}),
    "ball": (lambda: BallQuantizer(max_norm=4), {"iters": 6}),
    "shape-gain": (lambda: ShapeGainQuantizer(shells=(4,), gain_levels=3), {}),
}


def _relative_error(name, scale):
    make, kw = _QUANTIZERS[name]
    q = make()
    x = (_X * scale).reshape(-1, q.block_size)
    q.fit(x, **kw)
    xh = q.quantize(x)
    assert xh.shape == x.shape and np.isfinite(xh).all()
    top = np.abs(x).max()  # divided first: no overflow or underflow in the sums
    return math.sqrt(float((((xh - x) / top) ** 2).sum() / ((x / top) ** 2).sum()))


@pytest.fixture(scope="module")
def at_one():
    return {name: _relative_error(name, 1.0) for name in _QUANTIZERS}


@pytest.mark.parametrize("name", sorted(_QUANTIZERS))
@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e200, 1e300])
def test_fit_at_extreme_decimal_scales(name, scale, at_one):
    assert at_one[name] < 0.9
    assert _relative_error(name, scale) == pytest.approx(at_one[name], rel=1e-12)


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(sorted(_QUANTIZERS)), k=st.integers(-990, 990))
def test_fit_is_equivariant_under_powers_of_two(name, k):
    base = _relative_error(name, 1.0)
    assert _relative_error(name, math.ldexp(1.0, k)) == pytest.approx(base, rel=1e-12)


def test_fitted_levels_and_scales_scale_exactly():
    x = _X[:, :8]
    for k in (-1000, -600, 600, 1000):
        s = math.ldexp(1.0, k)
        a = ScalarQuantizer(2, kind="lloyd-max").fit(x)
        b = ScalarQuantizer(2, kind="lloyd-max").fit(x * s)
        assert np.array_equal(a.levels * s, b.levels)
        a = E8Quantizer(4).fit(x, iters=4)
        b = E8Quantizer(4).fit(x * s, iters=4)
        assert a.scale * s == b.scale
        a = BallQuantizer(max_norm=4).fit(_X, iters=4)
        b = BallQuantizer(max_norm=4).fit(_X * s, iters=4)
        assert a.scale * s == b.scale


def test_results_that_cannot_be_represented_are_refused():
    huge = _X / np.abs(_X).max() * 1.7e308
    with pytest.raises(ValueError, match="x cannot be fitted in float64"):
        BallQuantizer(max_norm=4).fit(np.sign(_X) * 1.7e308, iters=4)  # scale > 1.7e308
    q = E8Quantizer(4, scale=1e-300)
    with pytest.raises(ValueError, match="x is too large for the scale"):
        q.encode(_X[:, :8] * 1e10)
    # the largest representable data are fitted, not refused, where their codewords fit
    for q in (ScalarQuantizer(8), E8Quantizer(4)):
        xx = huge.reshape(-1, q.block_size)
        q.fit(xx, **({"iters": 4} if isinstance(q, E8Quantizer) else {}))
        assert np.isfinite(q.quantize(xx)).all()
