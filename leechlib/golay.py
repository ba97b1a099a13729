r"""The hexacode, the MOG and the extended binary Golay code :math:`\mathcal{C}_{24}`.

Conventions (Conway & Sloane, *SPLAG*, Fig. 4.12):

* coordinate ``i = 4*column + row``: 6 columns and 4 rows of the MOG;
* rows are labelled by :math:`\mathrm{GF}(4) = \{0, 1, \omega, \bar\omega\}`, encoded
  ``0, 1, 2, 3``; addition is XOR and :math:`\omega^2 = \bar\omega`;
* the hexacode is :math:`\{(a, b, c, \varphi(1), \varphi(\omega), \varphi(\bar\omega))\}`
  with :math:`\varphi(x) = a x^2 + b x + c`;
* a 24-bit word is a Golay codeword iff every column has the parity of the top row
  and the column *scores* (sum of the labels of the set rows) form a hexacode word.

Everything here is derived from that rule; nothing is pasted.  Words are numpy
arrays of 0/1 (``uint8``) with the 24 coordinates on the last axis; internally
they are also packed into Python/numpy integers with bit ``i`` = coordinate ``i``.
The tables (GF(4), the hexacode, the column patterns, the codewords and octads) are
built once per process in :mod:`leechlib._mog`, which the decoders share.

Soft-decision decoding (:func:`golay_decode_soft`) runs a Numba kernel; the kernel
module is imported inside the function, so that importing leechlib does not import
Numba.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import numpy as np

from . import _mog
from . import m24 as _m24
from ._jit import num_threads
from ._mog import GF4_MUL, column_pattern, hexacode_words
from ._mog import pack as _pack
from ._mog import popcount as _popcount
from ._mog import readonly as _readonly
from ._mog import unpack as _unpack
from ._validation import as_binary, as_codes, as_real_points, as_rng, check_int
from .m24 import find_isomorphism, quadratic_residue_code

__all__ = [
    "GF4_MUL",
    "hexacode_words",
    "mog_position",
    "mog_index",
    "column_pattern",
    "GolayCode",
    "DecodeResult",
    "find_isomorphism",
    "quadratic_residue_code",
]


def mog_position(i):
    """(column, row) of MOG coordinate ``i`` (``i = 4*column + row``).

    Examples
    --------
    >>> from leechlib.golay import mog_position
    >>> mog_position(13)
    (3, 1)
    """
    return divmod(check_int(i, "i", 0, 23), 4)


def mog_index(column, row):
    """Coordinate ``4*column + row`` of a MOG cell.

    Examples
    --------
    >>> from leechlib.golay import mog_index
    >>> mog_index(3, 1)
    13
    """
    return 4 * check_int(column, "column", 0, 5) + check_int(row, "row", 0, 3)


class DecodeResult(NamedTuple):
    """Result of :meth:`GolayCode.decode`.

    Attributes
    ----------
    codewords : numpy.ndarray
        ``(..., 24)`` uint8 decoded codewords; a word with 4 detected errors is
        returned unchanged.
    n_errors : numpy.ndarray
        ``(...)`` int8: the number of corrected errors (0 to 3), or ``-1`` where an
        uncorrectable pattern (4 errors) was detected.
    """

    codewords: np.ndarray
    n_errors: np.ndarray


class GolayCode:
    r"""The extended binary Golay code :math:`\mathcal{C}_{24}`, a [24, 12, 8] code.

    Built from the MOG rule in MOG coordinates (Conway & Sloane, *SPLAG*, Fig. 4.12).
    Methods accept one word of shape ``(24,)`` (or message ``(12,)``) or a batch of
    shape ``(..., 24)`` and return arrays of matching batch shape, in the style of
    ``galois``.

    Attributes
    ----------
    n, k, d : int
        Length 24, dimension 12, minimum distance 8.
    G : numpy.ndarray
        ``(12, 24)`` uint8 generator matrix in reduced row-echelon form; the message
        sits in the coordinates :attr:`information_set`.
    H : numpy.ndarray
        ``(12, 24)`` uint8 parity-check matrix.  The code is self-dual, so ``H``
        equals ``G``.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib import GolayCode
    >>> code = GolayCode()
    >>> msg = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0], dtype=np.uint8)
    >>> c = code.encode(msg)
    >>> int(c.sum()) in (0, 8, 12, 16, 24)
    True
    >>> r = c.copy(); r[[2, 7, 19]] ^= 1          # three bit errors
    >>> dec = code.decode(r)
    >>> bool((dec.codewords == c).all()), int(dec.n_errors)
    (True, 3)
    """

    n = 24
    k = 12
    d = 8

    def __init__(self):
        # the tables are built once per process (leechlib._mog), not per instance
        self._G, self._info = _mog.generator()
        self._H = self._G  # self-dual
        self._syndrome_cols = _syndrome_columns()  # (24,) ints, syndrome of e_i

    # ------------------------------------------------------------------ matrices
    @property
    def G(self) -> np.ndarray:
        """``(12, 24)`` generator matrix (reduced row-echelon form, read-only)."""
        return self._G

    @property
    def H(self) -> np.ndarray:
        """``(12, 24)`` parity-check matrix (equal to :attr:`G`: self-dual)."""
        return self._H

    @property
    def information_set(self) -> np.ndarray:
        """The 12 coordinates where :meth:`encode` places the message."""
        return self._info

    def __repr__(self) -> str:
        return "GolayCode(n=24, k=12, d=8, coordinates='MOG')"

    # ------------------------------------------------------------- encode/detect
    def encode(self, messages) -> np.ndarray:
        """Encode messages of shape ``(..., 12)`` into codewords ``(..., 24)``.

        ``encode(m) = m @ G (mod 2)``; since :attr:`G` is in reduced row-echelon
        form, ``encode(m)[..., information_set] == m``.

        Examples
        --------
        >>> import numpy as np
        >>> from leechlib import GolayCode
        >>> code = GolayCode()
        >>> m = np.eye(12, dtype=np.uint8)
        >>> bool((code.encode(m) == code.G).all())
        True
        """
        m = as_binary(messages, "messages", 12, allow_empty=True)
        return ((m.astype(np.int32) @ self._G.astype(np.int32)) & 1).astype(np.uint8)

    def syndrome(self, words) -> np.ndarray:
        """Syndromes ``H w`` of words ``(..., 24)``, shape ``(..., 12)`` uint8.

        Examples
        --------
        >>> import numpy as np
        >>> from leechlib import GolayCode
        >>> code = GolayCode()
        >>> int(code.syndrome(code.G[3]).sum())
        0
        """
        w = as_binary(words, "words", 24, allow_empty=True)
        return ((w.astype(np.int32) @ self._H.T.astype(np.int32)) & 1).astype(np.uint8)

    def _syndrome_ints(self, w: np.ndarray) -> np.ndarray:
        s = np.zeros(w.shape[:-1], dtype=np.int64)
        for i in range(24):
            s ^= np.where(w[..., i] != 0, self._syndrome_cols[i], 0)
        return s

    def detect(self, words) -> np.ndarray:
        """``True`` where a word ``(..., 24)`` is not a codeword (errors detected).

        Examples
        --------
        >>> import numpy as np
        >>> from leechlib import GolayCode
        >>> code = GolayCode()
        >>> w = code.G[0].copy()
        >>> bool(code.detect(w)), bool(code.detect(w ^ np.eye(24, dtype=np.uint8)[5]))
        (False, True)
        """
        w = as_binary(words, "words", 24, allow_empty=True)
        return self._syndrome_ints(w) != 0

    def contains(self, words) -> np.ndarray:
        """``True`` where a word ``(..., 24)`` is a codeword."""
        return ~self.detect(words)

    # -------------------------------------------------------------------- decode
    def decode(self, words) -> DecodeResult:
        """Hard-decision decoding: correct up to 3 errors, detect 4.

        Parameters
        ----------
        words : array_like
            Received words, shape ``(24,)`` or ``(..., 24)``, values 0/1.

        Returns
        -------
        DecodeResult
            ``(codewords, n_errors)``; ``n_errors`` is ``-1`` where 4 errors were
            detected (the word is returned unchanged there).

        Examples
        --------
        >>> import numpy as np
        >>> from leechlib import GolayCode
        >>> code = GolayCode()
        >>> r = np.zeros(24, dtype=np.uint8); r[:4] = 1        # 4 errors from 0
        >>> int(code.decode(r).n_errors)
        -1
        """
        w = as_binary(words, "words", 24, allow_empty=True)
        table = _decode_table()
        e = table[self._syndrome_ints(w)]
        ok = e >= 0
        err_bits = _unpack(np.where(ok, e, 0))
        cw = w ^ err_bits
        n = np.where(ok, _popcount(np.where(ok, e, 0)), -1).astype(np.int8)
        return DecodeResult(cw, n)

    def decode_soft(self, reliabilities, *, workers=None) -> np.ndarray:
        r"""Maximum-likelihood soft decoding.

        For reliabilities :math:`r` (log-likelihood ratios: positive means bit 0 is
        more likely), returns the codeword :math:`c` maximising
        :math:`\sum_i (-1)^{c_i} r_i`, i.e. minimising :math:`\sum_i c_i r_i`.

        Ties are broken by the fixed search order of the kernel (hexacode word, then
        parity, then the top-row repair), identical in every backend.

        Parameters
        ----------
        reliabilities : array_like
            Real array of shape ``(24,)`` or ``(..., 24)``.
        workers : int, optional
            Threads, as in scipy: ``None``/1 one thread, -1 all cores.

        Returns
        -------
        numpy.ndarray
            ``(..., 24)`` uint8 codewords.

        Examples
        --------
        >>> import numpy as np
        >>> from leechlib import GolayCode
        >>> code = GolayCode()
        >>> c = code.G[5]
        >>> r = (1.0 - 2.0 * c) + 0.4 * np.random.default_rng(0).standard_normal(24)
        >>> bool((code.decode_soft(r) == c).all())
        True
        """
        r = as_real_points(reliabilities, "reliabilities", 24, allow_empty=True)
        return golay_decode_soft(r, workers=workers)

    # ----------------------------------------------------------------- structure
    def codewords(self) -> np.ndarray:
        """All 4096 codewords, ``(4096, 24)`` uint8, row ``i`` = ``encode(bits of i)``.

        Bit ``k`` of ``i`` (least significant first) is message symbol ``k``.

        Examples
        --------
        >>> from leechlib import GolayCode
        >>> GolayCode().codewords().shape
        (4096, 24)
        """
        return _mog.codewords()

    def codeword_ints(self) -> np.ndarray:
        """The codewords of :meth:`codewords` packed as ints (bit ``i`` = coordinate ``i``)."""
        return _mog.codeword_ints()

    def weight_enumerator(self) -> np.ndarray:
        """Number of codewords of each weight 0..24, a length-25 int64 array.

        Examples
        --------
        >>> from leechlib import GolayCode
        >>> w = GolayCode().weight_enumerator()
        >>> {i: int(c) for i, c in enumerate(w) if c}
        {0: 1, 8: 759, 12: 2576, 16: 759, 24: 1}
        """
        return np.bincount(self.codewords().sum(axis=1), minlength=25).astype(np.int64)

    def octads(self) -> np.ndarray:
        """The 759 octads (weight-8 codewords) as sorted 8-sets, ``(759, 8)`` int8.

        Rows are sorted lexicographically.

        Examples
        --------
        >>> from leechlib import GolayCode
        >>> o = GolayCode().octads()
        >>> o.shape
        (759, 8)
        """
        return _mog.octads()

    def sextets(self) -> np.ndarray:
        """The 1771 sextets, ``(1771, 6, 4)`` int8.

        A sextet is a partition of the 24 coordinates into six tetrads, the union of
        any two of which is an octad.  Tetrads are sorted within a sextet, and the
        sextets are ordered by their tetrad containing coordinate 0.

        Examples
        --------
        >>> from leechlib import GolayCode
        >>> s = GolayCode().sextets()
        >>> s.shape
        (1771, 6, 4)
        >>> s[0].tolist()[0]              # the standard sextet: the MOG columns
        [0, 1, 2, 3]
        """
        return _sextets()

    # -------------------------------------------------------------- automorphisms
    def is_automorphism(self, perm) -> bool:
        """Whether the coordinate permutation ``perm`` maps the code onto itself.

        ``perm`` is a sequence of 24 images: coordinate ``i`` moves to ``perm[i]``.

        Examples
        --------
        >>> from leechlib import GolayCode
        >>> code = GolayCode()
        >>> all(code.is_automorphism(g) for g in code.m24_generators())
        True
        >>> code.is_automorphism([1, 0] + list(range(2, 24)))
        False
        """
        p = _as_perm(perm, "perm")
        moved = np.zeros_like(self._G)
        moved[:, p] = self._G
        return not self.detect(moved).any()

    def m24_generators(self) -> list[np.ndarray]:
        """Generators of the Mathieu group M24 = Aut(code) as permutation arrays.

        Entry ``i`` of a generator is the image of coordinate ``i``.  They are
        derived, not pasted: the cyclic shift, the squaring map, the inversion
        :math:`i \\mapsto -1/i` of PSL(2, 23) and one further element are taken on
        the quadratic-residue presentation (:func:`quadratic_residue_code`) and
        transported to MOG coordinates with :func:`find_isomorphism`.  That they
        generate all of M24 is checked by :meth:`automorphism_group_order`.

        Examples
        --------
        >>> from leechlib import GolayCode
        >>> len(GolayCode().m24_generators())
        4
        """
        return [g.copy() for g in _m24.generators_mog()]

    def automorphism_group_order(self) -> int:
        """Order of the group generated by :meth:`m24_generators` (sympy Schreier–Sims).

        Examples
        --------
        >>> from leechlib import GolayCode
        >>> GolayCode().automorphism_group_order()
        244823040
        """
        return int(_m24.group().order())

    def random_automorphism(self, *, rng=None) -> np.ndarray:
        """A uniformly random element of M24, as a permutation array.

        Examples
        --------
        >>> from leechlib import GolayCode
        >>> code = GolayCode()
        >>> code.is_automorphism(code.random_automorphism(rng=1))
        True
        """
        return _m24.random_element(as_rng(rng))


@functools.cache
def _syndrome_columns() -> np.ndarray:
    """(24,) int64: the packed syndrome ``H e_i`` of each coordinate."""
    g, _ = _mog.generator()
    return _readonly(_pack(g.T))


@functools.cache
def _decode_table() -> np.ndarray:
    """Syndrome (0..4095) -> error pattern int of weight <= 3, or -1."""
    table = np.full(4096, -1, dtype=np.int64)
    cols = _syndrome_columns()
    for w in range(4):
        for pos in itertools.combinations(range(24), w):
            s = 0
            e = 0
            for i in pos:
                s ^= int(cols[i])
                e |= 1 << i
            if table[s] != -1:  # pragma: no cover - would contradict d = 8
                raise RuntimeError("coset leaders of weight <= 3 are not unique")
            table[s] = e
    return _readonly(table)


@functools.cache
def _sextets() -> np.ndarray:
    """The 1771 sextets of :meth:`GolayCode.sextets`."""
    ints = _mog.codeword_ints()
    oct_masks = ints[_popcount(ints) == 8]
    out = []
    for rest in itertools.combinations(range(1, 24), 3):
        t0 = (0,) + rest
        tmask = sum(1 << i for i in t0)
        tetrads = [t0]
        used = tmask
        for p in range(24):
            if used >> p & 1:
                continue
            s5 = tmask | (1 << p)
            o = int(oct_masks[(oct_masks & s5) == s5][0])
            t = o & ~tmask
            tetrads.append(tuple(i for i in range(24) if t >> i & 1))
            used |= t
        out.append(sorted(tetrads))
    return _readonly(np.array(out, dtype=np.int8))


@functools.cache
def _code() -> GolayCode:
    """The one :class:`GolayCode` instance the lattice modules share."""
    return GolayCode()


def _as_perm(perm, name: str) -> np.ndarray:
    p = as_codes(perm, name, allow_empty=True)
    if p.shape != (24,):
        raise ValueError(f"{name} must have shape (24,), got {p.shape}")
    if sorted(p.tolist()) != list(range(24)):
        raise ValueError(f"{name} must be a permutation of 0..23")
    return p.astype(np.intp)


def golay_decode_soft(r, workers=None) -> np.ndarray:
    """Soft-decision ML Golay decoding of validated reliabilities ``r`` (..., 24).

    Returns (..., 24) uint8 codewords maximising sum (-1)^{c_i} r_i; an empty batch
    gives an empty result.  Used by :meth:`GolayCode.decode_soft`, which validates.
    """
    arr = np.asarray(r)
    shape = arr.shape[:-1]
    rr = np.array(arr, dtype=np.float64, order="C", copy=True).reshape(-1, 24)
    out = np.zeros(rr.shape, dtype=np.uint8)
    if rr.shape[0]:
        from ._kernels.minvec import golay_soft

        t = _mog.kernel_tables()
        with num_threads(workers):
            golay_soft(rr, t["pat"], t["hoff_golay"], out)
    return out.reshape(shape + (24,))
