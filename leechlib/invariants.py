"""The invariants that ``leechlib info`` recomputes: the Golay code, the Leech lattice
and the decoder, each checked live against its known value.

:func:`invariant_checks` lists them as :class:`Check` objects (a group, a name, the
expected value and a function that computes it); the command line
(:func:`leechlib.cli.main`) runs them and prints the pass/fail table.  Nothing runs
when this module is imported: every check computes on call, and the heavy imports
(sympy) happen inside the check that needs them.

Examples
--------
>>> from leechlib.invariants import invariant_checks
>>> checks = invariant_checks()
>>> chk = checks[0]
>>> chk.group, chk.name, chk.expected
('Golay', 'codewords', 4096)
>>> chk.compute() == chk.expected
True
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from . import GolayCode, LeechLattice, hexacode_words, nearest_point, shell_count, theta_series
from ._kernels.reference import leech_nearest_ref

__all__ = ["Check", "invariant_checks"]


class Check:
    """One invariant: what it is, its known value and how to compute it.

    Parameters
    ----------
    group : str
        The object it belongs to: ``"Golay"``, ``"Leech"`` or ``"Decode"``.
    name : str
        What is checked, as ``leechlib info`` prints it.
    expected : object
        The known value.
    compute : callable
        Computes the value now (no arguments); the check holds if it returns a value
        equal to ``expected``.
    """

    def __init__(self, group: str, name: str, expected, compute: Callable[[], object]):
        self.group, self.name, self.expected, self.compute = group, name, expected, compute

    def __repr__(self) -> str:
        return f"Check({self.group!r}, {self.name!r}, expected={self.expected!r})"


def invariant_checks() -> list[Check]:
    """The invariants ``leechlib info`` recomputes, in the order it prints them.

    Returns
    -------
    list of Check
        The Golay code's (codewords, weight enumerator, minimum distance,
        self-duality, the Steiner system of the octads, sextets, hexacode weights,
        the order of M24), the Leech lattice's (Gram matrix, minimal vectors, theta
        series, shells, an automorphism) and the decoder's (exactness against brute
        force, the deep hole, the normalized second moment).  Building the list
        runs no check; each ``compute`` runs its own.
    """
    code = GolayCode()
    lat = LeechLattice()

    def weights():
        w = code.weight_enumerator()
        return {i: int(c) for i, c in enumerate(w) if c}

    def min_distance():
        w = code.codewords().sum(axis=1)
        return int(w[w > 0].min())

    def self_dual():
        g = code.G.astype(int)
        return bool(np.all((g @ g.T) % 2 == 0)) and g.shape == (12, 24)

    def steiner():
        seen = set()
        for o in code.octads().tolist():
            for five in itertools.combinations(o, 5):
                if five in seen:
                    return False
                seen.add(five)
        return len(seen) == 42504

    def hexa():
        h = hexacode_words()
        return {k: int(v) for k, v in enumerate(np.bincount((h != 0).sum(axis=1))) if v}

    def gram():
        import sympy  # heavy: imported when the check runs, not with leechlib.cli

        g = lat.gram_matrix(coords="int")
        m = sympy.Matrix((g // 8).tolist())
        even = all(int(m[i, i]) % 2 == 0 for i in range(24))
        return (int(m.det()), bool(np.all(g % 8 == 0)), even)

    def minimal():
        v = lat.minimal_vectors(coords="int")
        a = np.abs(v).max(axis=1)
        ok = lat.contains(v, coords="int").all()
        norms = set(np.unique((v.astype(np.int32) ** 2).sum(axis=1)).tolist())
        return (int((a == 4).sum()), int((a == 2).sum()), int((a == 3).sum()), bool(ok), norms)

    def inner_products():
        v = lat.minimal_vectors(coords="int").astype(np.int32)
        rng = np.random.default_rng(0)
        s = v[rng.choice(len(v), 200, replace=False)]
        return sorted(set((np.unique(s @ v.T) // 8).tolist()))

    def shell6():
        return sum(len(c) for c in lat.shell(6, coords="int", chunk_size=1 << 20))

    def automorphism():
        A = lat.random_automorphism(rng=0)
        v = lat.minimal_vectors(coords="int").astype(np.float64)
        w = v @ A.T
        same = {r.tobytes() for r in v.astype(np.int8)} == {
            r.tobytes() for r in w.astype(np.int8)
        }
        return bool(np.array_equal(A @ A.T, np.eye(24))) and same

    def decoder_exact():
        rng = np.random.default_rng(1)
        y = rng.standard_normal((100, 24)) * 4.0
        q = nearest_point(y, coords="int")
        ref, _, _ = leech_nearest_ref(y)
        d_fast = ((y - q) ** 2).sum(axis=1)
        d_ref = ((y - ref) ** 2).sum(axis=1)
        return bool(np.allclose(d_fast, d_ref, rtol=1e-12, atol=1e-12)) and bool(
            lat.contains(q, coords="int").all()
        )

    def deep_hole():
        h = np.zeros(24)
        h[0] = 4.0
        _, d2 = nearest_point(h, coords="int", return_distance=True)
        return float(d2) / 8.0

    def nsm():
        rng = np.random.default_rng(2)
        u = rng.random((400_000, 24)) @ lat.generator_matrix()
        _, d2 = nearest_point(u, return_distance=True, workers=-1)
        g = d2.mean() / 24.0
        se = d2.std() / 24.0 / np.sqrt(len(d2))
        return abs(g - 0.065753) < max(4 * se, 3e-5), round(float(g), 6)

    checks = [
        Check("Golay", "codewords", 4096, lambda: len(code.codewords())),
        Check("Golay", "weight enumerator", {0: 1, 8: 759, 12: 2576, 16: 759, 24: 1}, weights),
        Check("Golay", "minimum distance", 8, min_distance),
        Check("Golay", "self-dual (G Gᵀ = 0, k = 12)", True, self_dual),
        Check("Golay", "octads form S(5,8,24)", True, steiner),
        Check("Golay", "octads", 759, lambda: len(code.octads())),
        Check("Golay", "sextets", 1771, lambda: len(code.sextets())),
        Check("Golay", "hexacode weights", {0: 1, 4: 45, 6: 18}, hexa),
        Check("Golay", "|M24| (sympy Schreier–Sims)", 244823040, code.automorphism_group_order),
        Check("Leech", "det Gram, Gram int, even", (1, True, True), gram),
        Check(
            "Leech",
            "minimal vectors by shape, in Λ, norm",
            (1104, 97152, 98304, True, {32}),
            minimal,
        ),
        Check("Leech", "inner products of minimal vectors", [-4, -2, -1, 0, 1, 2, 4], inner_products),
        Check("Leech", "vectors of norm 2", 0, lambda: shell_count(2)),
        Check(
            "Leech",
            "theta series (E12 − 65520/691 Δ)",
            [1, 0, 196560, 16773120, 398034000, 4629381120, 34417656000],
            lambda: theta_series(7),
        ),
        Check(
            "Leech",
            "theta = structural shell counts (k < 14)",
            True,
            lambda: theta_series(14) == [shell_count(2 * k) for k in range(14)],
        ),
        Check("Leech", "norm-6 shell enumerated", 16773120, shell6),
        Check("Leech", "random automorphism permutes Λ(4)", True, automorphism),
        Check("Decode", "exact vs brute force (100 points)", True, decoder_exact),
        Check("Decode", "deep hole (4,0²³)/√8: distance² = ρ² = 2", 2.0, deep_hole),
        Check("Decode", "NSM within 4σ of 0.065753 (4·10⁵ pts)", True, lambda: nsm()[0]),
    ]
    return checks
