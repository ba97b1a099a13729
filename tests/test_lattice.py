"""Invariants of the Leech lattice: matrices, membership, shells, theta series, Co0."""

import numpy as np
import pytest
import sympy

from leechlib import LeechLattice, shell_count, theta_series
from leechlib.lattice import MINIMAL_SHAPES, SQRT8


def _row_set(v):
    v = np.ascontiguousarray(v.astype(np.int8))
    return {r.tobytes() for r in v}


def test_generator_matrix_determinant_and_rows(lattice):
    B = lattice.generator_matrix(coords="int")
    assert B.dtype == np.int64 and B.shape == (24, 24)
    assert sympy.Matrix(B.tolist()).det() == 8**12
    assert lattice.contains(B, coords="int").all()
    np.testing.assert_allclose(lattice.generator_matrix(), B / SQRT8)


def test_gram_matrix_unimodular_even(lattice):
    gi = lattice.gram_matrix(coords="int")
    assert np.all(gi % 8 == 0)
    g = sympy.Matrix((gi // 8).tolist())
    assert g.det() == 1
    assert all(int(g[i, i]) % 2 == 0 for i in range(24))
    assert np.array_equal(lattice.gram_matrix(), (gi // 8).astype(float))


def test_contains_8z24_and_generated_vectors(lattice, rng):
    assert lattice.contains(8 * np.eye(24, dtype=int), coords="int").all()
    B = lattice.generator_matrix(coords="int")
    coeffs = rng.integers(-3, 4, size=(500, 24))
    pts = coeffs @ B
    assert lattice.contains(pts, coords="int").all()
    assert lattice.contains(pts / SQRT8).all()


def test_contains_rejects_non_lattice_points(lattice, rng):
    B = lattice.generator_matrix(coords="int")
    pts = rng.integers(-3, 4, size=(200, 24)) @ B
    e = np.zeros(24, dtype=int)
    e[rng.integers(24)] = 1
    # a lattice point moved by a vector of norm 1, 4, 8 (all shorter than 32) is not in it
    for shift in (1, 2, 4):
        bad = pts.copy()
        bad[:, 5] += shift
        assert not lattice.contains(bad, coords="int").any()
    assert not lattice.contains(pts / SQRT8 + 0.01).any()
    assert not lattice.contains(np.full(24, 0.5), coords="int")


def test_contains_rule_vs_generator_solution(lattice, rng):
    """Membership by the mod-8 rule agrees with solving x = c B in integers."""
    B = lattice.generator_matrix(coords="int").astype(float)
    Binv = np.linalg.inv(B)
    x = rng.integers(-6, 7, size=(4000, 24))
    x[:, :] += (rng.integers(0, 2, size=(4000, 1)))  # some all-odd vectors
    coef = x @ Binv
    by_solve = np.all(np.abs(coef - np.rint(coef)) < 1e-6, axis=1)
    by_rule = lattice.contains(x, coords="int")
    assert np.array_equal(by_solve, by_rule)


def test_minimal_vectors(lattice):
    v = lattice.minimal_vectors(coords="int")
    assert v.shape == (196560, 24) and v.dtype == np.int8
    assert not v.flags.writeable
    assert np.all((v.astype(np.int32) ** 2).sum(axis=1) == 32)
    assert lattice.contains(v, coords="int").all()
    rows = _row_set(v)
    assert len(rows) == 196560
    assert rows == _row_set(-v)  # closed under negation
    # shapes 1104 + 97152 + 98304, in that order
    absmax = np.abs(v).max(axis=1)
    sizes = list(MINIMAL_SHAPES.values())
    assert np.all(absmax[: sizes[0]] == 4) and np.all((v[: sizes[0]] != 0).sum(axis=1) == 2)
    assert np.all(absmax[sizes[0] : sizes[0] + sizes[1]] == 2)
    assert np.all(absmax[sizes[0] + sizes[1] :] == 3)
    assert sum(sizes) == 196560
    u = lattice.minimal_vectors()
    np.testing.assert_allclose((u * u).sum(axis=1), 4.0)


def test_minimal_vector_inner_products(lattice, rng):
    v = lattice.minimal_vectors(coords="int").astype(np.int32)
    sample = v[rng.choice(len(v), 400, replace=False)]
    ip = np.unique(sample @ v.T) // 8  # unit coordinates
    assert set(ip.tolist()) == {-4, -2, -1, 0, 1, 2, 4}


def test_theta_series_values():
    t = theta_series(6)
    assert t == [1, 0, 196560, 16773120, 398034000, 4629381120]
    assert all(isinstance(c, int) for c in t)
    assert theta_series(0) == []


def test_theta_series_matches_structural_counts():
    t = theta_series(30)
    assert [shell_count(2 * k) for k in range(30)] == t
    assert shell_count(5) == 0 and shell_count(2) == 0


def test_theta_series_modular_cross_check():
    """Θ(q) as a weight-12 form: coefficients are (65520/691)(σ11(n) − τ(n))."""
    t = theta_series(12)
    tau = [0, 1, -24, 252, -1472, 4830, -6048, -16744, 84480, -113643, -115920, 534612]
    sig = [0] + [sum(d**11 for d in range(1, n + 1) if n % d == 0) for n in range(1, 12)]
    for n in range(1, 12):
        assert t[n] * 691 == 65520 * (sig[n] - tau[n])


def test_shell_2_is_empty(lattice):
    assert list(lattice.shell(2)) == []


def test_shell_4_equals_minimal_vectors(lattice):
    chunks = list(lattice.shell(4, coords="int", chunk_size=50000))
    assert max(len(c) for c in chunks) <= 50000
    allv = np.vstack(chunks)
    assert _row_set(allv) == _row_set(lattice.minimal_vectors(coords="int"))


@pytest.mark.slow
def test_shell_6_count_norm_membership(lattice, rng):
    n = 0
    seen_shapes = {}
    for chunk in lattice.shell(6, coords="int", chunk_size=1 << 20):
        c = chunk.astype(np.int32)
        assert np.all((c * c).sum(axis=1) == 48)
        n += len(chunk)
        pick = chunk[rng.choice(len(chunk), 2000, replace=False)] if len(chunk) > 2000 else chunk
        assert lattice.contains(pick, coords="int").all()
        # the largest |x_i| tells the four shapes of norm 48 apart
        for k, cnt in enumerate(np.bincount(np.abs(chunk).max(axis=1), minlength=6)):
            if cnt:
                seen_shapes[k] = seen_shapes.get(k, 0) + int(cnt)
    assert n == 16773120 == theta_series(4)[3]
    assert seen_shapes == {
        2: 2576 * 2**11,  # (±2^12, 0^12) on dodecads, even number of minus signs
        3: 4096 * 2024,  # (∓3^3, ±1^21)
        4: 759 * 16 * 2**8,  # (±4, ±2^8, 0^15)
        5: 4096 * 24,  # (±5, ±1^23)
    }


def test_shell_unit_coords(lattice):
    first = next(lattice.shell(4, chunk_size=10))
    np.testing.assert_allclose((first**2).sum(axis=1), 4.0)


def test_xi_and_generators_preserve_minimal_vectors(lattice):
    v = lattice.minimal_vectors(coords="int").astype(np.float64)
    rows = _row_set(v)
    gens = lattice.automorphism_generators()
    assert len(gens) == 4 + 12 + 1
    for A in gens:
        assert np.array_equal(A @ A.T, np.eye(24))
        w = v @ A.T
        assert np.array_equal(w, np.rint(w))
        assert _row_set(w) == rows


def test_xi_needs_its_sign_change(lattice):
    """½J − I on the columns alone does not preserve the lattice."""
    block = 0.5 * np.ones((4, 4)) - np.eye(4)
    plain = np.kron(np.eye(6), block)
    v = lattice.minimal_vectors(coords="int").astype(float)
    assert not lattice.contains(v @ plain.T, coords="int").all()
    xi = lattice.xi()
    assert set(np.unique(xi).tolist()) == {-0.5, 0.0, 0.5}


def test_random_automorphism(lattice):
    A = lattice.random_automorphism(rng=3)
    assert np.array_equal(A, lattice.random_automorphism(rng=3))
    assert not np.array_equal(A, lattice.random_automorphism(rng=4))
    assert np.array_equal(A @ A.T, np.eye(24))
    assert np.array_equal(A * 8, np.rint(A * 8))
    v = lattice.minimal_vectors(coords="int").astype(np.float64)
    w = v @ A.T
    assert _row_set(w) == _row_set(v)  # a permutation of the 196 560 vectors
    assert not np.all((A != 0).sum(axis=1) == 1)  # not monomial


def test_sign_change_and_permutation_validate(lattice, code):
    with pytest.raises(ValueError, match="codeword is not a Golay codeword"):
        LeechLattice.sign_change(np.eye(24, dtype=np.uint8)[0])
    bad = np.arange(24)
    bad[[0, 1]] = bad[[1, 0]]
    with pytest.raises(ValueError, match="perm is not an automorphism"):
        LeechLattice.permutation(bad)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda L: L.contains(np.zeros(23)), ValueError, r"x must have shape \(\.\.\., 24\)"),
        (lambda L: L.contains(np.full(24, np.nan)), ValueError, "x contains NaN or inf"),
        (lambda L: L.contains(np.zeros(24), coords="bad"), ValueError, "coords must be"),
        (lambda L: L.contains(np.zeros(24, dtype=complex)), TypeError, "x must be a real"),
        (lambda L: L.minimal_vectors(coords=3), TypeError, "coords must be"),
        (lambda L: next(L.shell(-2)), ValueError, "norm must be >= 0"),
        (lambda L: next(L.shell(4.0)), TypeError, "norm must be an int"),
        (lambda L: next(L.shell(4, chunk_size=0)), ValueError, "chunk_size"),
        (lambda L: L.random_automorphism(rng="seed"), TypeError, "rng must be"),
        (lambda L: theta_series(-1), ValueError, "n must be"),
    ],
)
def test_bad_input(lattice, call, exc, match):
    with pytest.raises(exc, match=match):
        call(lattice)


def test_contains_batch_shapes(lattice):
    x = np.zeros((2, 3, 24))
    assert lattice.contains(x).shape == (2, 3)
    assert lattice.contains(np.zeros(24)) is True


def test_contains_huge_entries_exactly_without_warnings():
    import warnings

    L = LeechLattice()
    x = np.zeros((4, 24))
    x[:, :2] = 4.0
    x[0, 5] = 2.0**70          # a multiple of 8: still a lattice point
    x[1, 5] = 2.0**70 + 2**18  # also a multiple of 8
    x[2, :2] = 2.0             # (2, 2, 0, ...) is not a lattice point
    x[2, 7] = 1e300
    x[3, 5] = -(2.0**63)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert L.contains(x, coords="int").tolist() == [True, True, False, True]
        assert L.contains(np.full(24, 1e308)) is False  # overflows to inf when scaled
        assert L.contains(np.full(24, 8e300), coords="int") is True
