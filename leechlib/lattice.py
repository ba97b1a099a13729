r"""The Leech lattice :math:`\Lambda_{24}` in MOG coordinates.

Two coordinate conventions are used throughout leechlib, named the same way
everywhere in the API:

``coords="unit"`` (the default)
    :math:`\Lambda_{24}` itself: unimodular, even, minimal norm 4.
``coords="int"``
    :math:`\sqrt8\,\Lambda_{24} \subset \mathbb{Z}^{24}`: minimal norm 32, for exact
    integer work.  A point in ``"unit"`` coordinates is the ``"int"`` point divided
    by :math:`\sqrt 8`.

In the integer model (Conway & Sloane, *SPLAG* ch. 4),

.. math::

    \sqrt8\,\Lambda_{24} = \bigcup_{u \in \mathcal{C}_{24}}
        (2u + 4D_{24}) \cup (\mathbf 1 + 2u + 4(D_{24} + e_1)),

so a vector is written ``x = eps + 2u + 4y`` with ``eps`` in {0, 1} (the *even*
and *odd* halves), ``u`` a Golay codeword and ``sum(y)`` congruent to ``eps``
modulo 2.  Everything below (generator matrix, membership, automorphisms) and in
:mod:`leechlib.shells` (theta series, shell counts, shells, minimal vectors) is
derived from this description and the Golay code of :mod:`leechlib.golay`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np

from ._mog import readonly as _readonly
from ._validation import SQRT8, as_binary, as_real_points, as_rng, check_coords, check_int, check_positive
from .golay import _as_perm, _code
from .shells import _iter_shell_int, minimal_vectors_int, shell_count, theta_series

__all__ = ["LeechLattice", "theta_series", "shell_count", "MINIMAL_SHAPES", "SQRT8"]

#: Numbers of minimal vectors of each shape (integer model).
MINIMAL_SHAPES = {"(±4², 0²²)": 1104, "(±2⁸, 0¹⁶)": 97152, "(∓3, ±1²³)": 98304}


# ---------------------------------------------------------------------------
# The lattice
# ---------------------------------------------------------------------------


def _hnf_rows(gens: list[list[int]]) -> np.ndarray:
    """Integer row basis (upper triangular, Hermite normal form) of a generating set."""
    rows = [list(r) for r in gens]
    n = len(rows[0])
    basis = []
    for col in range(n):
        piv = [r for r in rows if r[col] != 0]
        rest = [r for r in rows if r[col] == 0]
        while len(piv) > 1:
            piv.sort(key=lambda r: abs(r[col]))
            p = piv[0]
            new = [p]
            for r in piv[1:]:
                q = r[col] // p[col]
                rr = [a - q * b for a, b in zip(r, p, strict=True)]
                (new if rr[col] != 0 else rest).append(rr)
            piv = new
        if piv:
            p = piv[0]
            if p[col] < 0:
                p = [-a for a in p]
            basis.append(p)
        rows = rest
    # reduce entries above the diagonal
    for i in range(len(basis)):
        for j in range(i):
            col = next(k for k, v in enumerate(basis[i]) if v != 0)
            q = basis[j][col] // basis[i][col]
            basis[j] = [a - q * b for a, b in zip(basis[j], basis[i], strict=True)]
    return np.array(basis, dtype=np.int64)


class LeechLattice:
    r"""The Leech lattice :math:`\Lambda_{24}` (MOG coordinates).

    Methods take ``coords="unit"`` (the default: :math:`\Lambda_{24}`, minimal norm
    4) or ``coords="int"`` (:math:`\sqrt8\Lambda_{24} \subset \mathbb Z^{24}`,
    minimal norm 32).  Construction is free; tables are built on first use and
    cached.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib import LeechLattice
    >>> L = LeechLattice()
    >>> v = L.minimal_vectors(coords="int")
    >>> v.shape, v.dtype
    ((196560, 24), dtype('int8'))
    >>> bool(L.contains(v[:5], coords="int").all())
    True
    >>> round(float(np.linalg.det(L.gram_matrix())))
    1
    """

    dim = 24
    minimal_norm = 4
    kissing_number = 196560
    packing_radius = 1.0
    covering_radius = math.sqrt(2.0)

    def __repr__(self) -> str:
        return "LeechLattice(dim=24, coordinates='MOG')"

    # ------------------------------------------------------------- matrices
    @staticmethod
    @functools.cache
    def _generator_int() -> np.ndarray:
        code = _code()
        gens = [[2 * int(b) for b in row] for row in code.G]
        for i in range(23):
            for s in (1, -1):
                r = [0] * 24
                r[i] = 4
                r[i + 1] = 4 * s
                gens.append(r)
        gens.append([-3] + [1] * 23)
        return _readonly(_hnf_rows(gens))

    def generator_matrix(self, coords: str = "unit") -> np.ndarray:
        """A basis of the lattice as the rows of a 24×24 matrix.

        In ``"int"`` coordinates it is the integer Hermite normal form (upper
        triangular) of the generating set {2·(rows of the Golay generator matrix),
        4(e_i ± e_{i+1}), (−3, 1²³)}; its determinant is 8¹².  ``"unit"`` divides it
        by √8.

        Examples
        --------
        >>> from leechlib import LeechLattice
        >>> B = LeechLattice().generator_matrix(coords="int")
        >>> int(round(abs(__import__("numpy").linalg.det(B.astype(float))))) == 8**12
        True
        """
        check_coords(coords)
        g = self._generator_int()
        if coords == "int":
            return g.copy()
        return g / SQRT8

    def gram_matrix(self, coords: str = "unit") -> np.ndarray:
        """Gram matrix ``B Bᵀ`` of :meth:`generator_matrix`.

        In ``"unit"`` coordinates it is integral, even and has determinant 1 (the
        float result is exactly the integer matrix ``gram_matrix("int") / 8``).

        Examples
        --------
        >>> from leechlib import LeechLattice
        >>> Gm = LeechLattice().gram_matrix()
        >>> bool((Gm.diagonal() % 2 == 0).all())
        True
        """
        check_coords(coords)
        g = self._generator_int()
        gram = g @ g.T
        if coords == "int":
            return gram
        return (gram // 8).astype(np.float64)

    # ----------------------------------------------------------- membership
    def contains(self, x, coords: str = "unit", *, atol: float = 1e-6) -> np.ndarray:
        """Whether points of shape ``(..., 24)`` are lattice vectors.

        The rule of *SPLAG* ch. 4 in the integer model: all coordinates congruent
        to ``m`` modulo 2, their sum congruent to ``4m`` modulo 8, and for each
        residue ``a`` modulo 4 the positions with ``x_i ≡ a`` form a Golay codeword.
        In ``"unit"`` coordinates a point is first scaled by √8 and must be within
        ``atol`` of an integer vector.

        Examples
        --------
        >>> import numpy as np
        >>> from leechlib import LeechLattice
        >>> L = LeechLattice()
        >>> x = np.zeros(24); x[:2] = 4
        >>> L.contains(x, coords="int"), L.contains(x / np.sqrt(8))
        (True, True)
        >>> x[0] = 2
        >>> L.contains(x, coords="int")
        False
        """
        check_coords(coords)
        atol = check_positive(atol, "atol", allow_zero=True)
        arr = as_real_points(x, "x", allow_empty=True)
        with np.errstate(over="ignore", invalid="ignore"):  # huge entries may become inf
            z = arr.astype(np.float64) * (SQRT8 if coords == "unit" else 1.0)
            zi = np.rint(z)
            tol = atol * SQRT8 if coords == "unit" else 0.0
            near = np.all(np.abs(z - zi) <= tol, axis=-1)
            # membership depends on x mod 8 only (8Z^24 is a sublattice), and the
            # remainder is exact in float64: no cast of entries beyond int64
            zi = np.where(np.isfinite(zi), np.fmod(zi, 8.0), 0.0).astype(np.int64)
        out = near & self._contains_int(zi)
        return out if out.ndim else bool(out)

    @staticmethod
    def _contains_int(z: np.ndarray) -> np.ndarray:
        code = _code()
        m = z[..., :1] & 1
        same_parity = np.all((z & 1) == m, axis=-1)
        sum_ok = (z.sum(axis=-1) - 4 * m[..., 0]) % 8 == 0
        ok = same_parity & sum_ok
        r = z % 4
        for a in range(4):
            ok &= code.contains((r == a).astype(np.uint8))
        return ok

    # ------------------------------------------------------------- vectors
    _minimal_int = staticmethod(minimal_vectors_int)

    def minimal_vectors(self, coords: str = "unit") -> np.ndarray:
        """The 196 560 minimal vectors, built from the code structure.

        Order (integer model): rows ``0..1103`` are ``(±4, ±4, 0²²)`` on pairs
        ``i < j`` in lexicographic order, row ``4*pair + s`` with bit 0 of ``s`` the
        minus sign on ``i`` and bit 1 on ``j``; rows ``1104 + 128*k + b`` are ±2 on
        octad ``k`` of :meth:`GolayCode.octads`, bits 0–6 of ``b`` the minus signs on
        its first seven positions (the eighth makes their number even); rows
        ``98256 + 24*c + k`` are ``(−1)^{c_i}`` with ``−3(−1)^{c_k}`` at ``k``, ``c``
        codeword ``c`` of :meth:`GolayCode.codewords`.

        Parameters
        ----------
        coords : {"unit", "int"}
            ``"int"`` gives a read-only int8 array (norm 32), ``"unit"`` float64
            (norm 4).

        Examples
        --------
        >>> import numpy as np
        >>> from leechlib import LeechLattice
        >>> v = LeechLattice().minimal_vectors()
        >>> np.allclose((v * v).sum(axis=1), 4)
        True
        """
        check_coords(coords)
        v = self._minimal_int()
        if coords == "int":
            return v
        return v / SQRT8

    def shell(
        self, norm: int, coords: str = "unit", *, chunk_size: int = 1 << 18
    ) -> Iterator[np.ndarray]:
        """Iterate over the lattice vectors of squared norm ``norm`` in chunks.

        Vectors are generated from the structure ``x = eps + 2u + 4y`` (for each
        coset half and Golay codeword ``u``), so memory stays at one chunk; the
        whole norm-6 shell (16 773 120 vectors) streams in ``chunk_size`` rows.

        Parameters
        ----------
        norm : int
            Squared norm in unit coordinates (0, 4, 6, 8, …; odd norms and 2 are
            empty).
        coords : {"unit", "int"}
            int8 chunks in ``"int"``, float64 in ``"unit"``.
        chunk_size : int
            Rows per chunk (the last chunk may be shorter).

        Yields
        ------
        numpy.ndarray
            ``(m, 24)`` arrays.

        Examples
        --------
        >>> from leechlib import LeechLattice
        >>> sum(len(c) for c in LeechLattice().shell(4, coords="int"))
        196560
        """
        norm = check_int(norm, "norm", 0)
        check_coords(coords)
        chunk_size = check_int(chunk_size, "chunk_size", 1)
        if norm * 8 > 127 * 127 * 24:
            raise ValueError(f"norm {norm} is too large for int8 coordinates")
        if norm % 2 or norm == 2:
            return
        for chunk in _iter_shell_int(8 * norm, chunk_size):
            yield chunk if coords == "int" else chunk / SQRT8

    def theta_series(self, n: int) -> list[int]:
        """Same as :func:`leechlib.theta_series`."""
        return theta_series(n)

    # -------------------------------------------------------- automorphisms
    @staticmethod
    def sign_change(codeword) -> np.ndarray:
        """Diagonal automorphism negating the coordinates of a Golay codeword.

        Examples
        --------
        >>> from leechlib import LeechLattice, GolayCode
        >>> S = LeechLattice.sign_change(GolayCode().G[0])
        >>> S.shape
        (24, 24)
        """
        c = as_binary(codeword, "codeword", 24)
        if c.ndim != 1:
            raise ValueError(f"codeword must have shape (24,), got {c.shape}")
        if not _code().contains(c):
            raise ValueError("codeword is not a Golay codeword")
        return np.diag(1.0 - 2.0 * c)

    @staticmethod
    def permutation(perm) -> np.ndarray:
        """Permutation matrix ``P`` with ``(x @ P.T)[perm[i]] = x[i]``.

        It is an automorphism iff ``perm`` is in M24 (checked: ``ValueError``).

        Examples
        --------
        >>> from leechlib import LeechLattice, GolayCode
        >>> P = LeechLattice.permutation(GolayCode().m24_generators()[0])
        >>> float(abs(P).sum())
        24.0
        """
        p = _as_perm(perm, "perm")
        if not _code().is_automorphism(p):
            raise ValueError("perm is not an automorphism of the Golay code (not in M24)")
        m = np.zeros((24, 24))
        m[p, np.arange(24)] = 1.0
        return m

    @staticmethod
    def xi() -> np.ndarray:
        r"""The sextet element :math:`\xi_T`.

        On each MOG column (the tetrads of the standard sextet) the 4×4 matrix
        :math:`\tfrac12 J - I`, followed by negating the coordinates of column 0.
        Entries are in {0, ±1/2}; it is orthogonal and not monomial, so together
        with the monomial group :math:`2^{12}{:}M_{24}` it generates
        :math:`\mathrm{Co}_0`.

        Examples
        --------
        >>> import numpy as np
        >>> from leechlib import LeechLattice
        >>> X = LeechLattice.xi()
        >>> bool(np.array_equal(X @ X.T, np.eye(24)))
        True
        """
        block = 0.5 * np.ones((4, 4)) - np.eye(4)
        m = np.kron(np.eye(6), block)
        m[:4, :] *= -1.0
        return m

    def automorphism_generators(self) -> list[np.ndarray]:
        """Generators of Co0 = Aut(Λ24) as 24×24 orthogonal matrices (act as ``x @ A.T``).

        The permutation matrices of :meth:`GolayCode.m24_generators`, the sign changes
        on the rows of the Golay generator matrix, and :meth:`xi`.

        Examples
        --------
        >>> from leechlib import LeechLattice
        >>> len(LeechLattice().automorphism_generators())
        17
        """
        code = _code()
        gens = [self.permutation(g) for g in code.m24_generators()]
        gens += [self.sign_change(row) for row in code.G]
        gens.append(self.xi())
        return gens

    def random_automorphism(self, *, rng=None, length: int = 8) -> np.ndarray:
        r"""A random automorphism of :math:`\Lambda_{24}` (an element of Co0).

        A product of ``length`` factors ``P S ξ`` with ``P`` a uniform element of
        M24 and ``S`` a sign change on a uniform Golay codeword.  Entries are exact
        multiples of 1/8, so ``A @ A.T`` is exactly the identity.  (This is a random
        walk in Co0, not an exactly Haar-uniform sample.)

        Parameters
        ----------
        rng : None, int or numpy.random.Generator
            Seed or generator (scipy style).
        length : int
            Number of ``P S ξ`` factors.

        Returns
        -------
        numpy.ndarray
            ``(24, 24)`` float64 orthogonal matrix ``A``; it maps the lattice onto
            itself as ``x -> x @ A.T``.

        Examples
        --------
        >>> import numpy as np
        >>> from leechlib import LeechLattice
        >>> L = LeechLattice()
        >>> A = L.random_automorphism(rng=0)
        >>> bool(np.array_equal(A @ A.T, np.eye(24)))
        True
        >>> v = L.minimal_vectors(coords="int")[:1000]
        >>> bool(L.contains(v @ A.T, coords="int").all())
        True
        """
        gen = as_rng(rng)
        length = check_int(length, "length", 0)
        code = _code()
        cw = code.codewords()
        xi = self.xi()
        a = np.eye(24)
        for _ in range(length):
            p = code.random_automorphism(rng=gen)
            c = cw[int(gen.integers(4096))]
            factor = self.permutation(p) @ np.diag(1.0 - 2.0 * c) @ xi
            a = factor @ a
            a = np.rint(a * 8.0) / 8.0  # exact: entries are multiples of 1/8
        return a

