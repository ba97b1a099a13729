r"""Other presentations of the Golay code and its automorphism group M24.

* :func:`quadratic_residue_code`: the Golay code as the extended quadratic-residue
  code of length 24, a construction independent of the MOG;
* :func:`find_isomorphism`: a coordinate permutation between two presentations,
  found through their Steiner systems S(5, 8, 24) of octads;
* M24 = Aut(Golay code) in MOG coordinates: generators carried over from the
  projective line over GF(23), the group (sympy) and uniform random elements,
  behind :meth:`leechlib.GolayCode.m24_generators`,
  :meth:`~leechlib.GolayCode.automorphism_group_order` and
  :meth:`~leechlib.GolayCode.random_automorphism`.

:func:`find_isomorphism` and :func:`quadratic_residue_code` are also importable
from :mod:`leechlib.golay` (and the former from :mod:`leechlib`).  sympy and
networkx are imported on first use only.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from . import _mog
from ._mog import pack as _pack
from ._mog import popcount as _popcount
from ._mog import readonly as _readonly
from ._mog import rref_gf2 as _rref_gf2
from ._mog import unpack as _unpack
from ._validation import as_binary, check_choice

__all__ = ["quadratic_residue_code", "find_isomorphism"]

_QR_POINTS = ["inf"] + list(range(23))  # coordinate 0 = infinity, 1 + k = k mod 23


def quadratic_residue_code() -> np.ndarray:
    """The Golay code as the extended quadratic-residue code of length 24.

    Coordinates are the projective line over GF(23): coordinate 0 is ∞ and
    coordinate ``1 + k`` is ``k``.  The code is spanned by the all-ones word and the
    23 translates of the word supported on ``{0} ∪ N`` (N the non-residues mod 23),
    each extended by its parity bit at ∞: a standard construction, independent of
    the MOG.

    Returns
    -------
    numpy.ndarray
        ``(4096, 24)`` uint8 codewords.

    Examples
    --------
    >>> from leechlib.golay import quadratic_residue_code
    >>> import numpy as np
    >>> C = quadratic_residue_code()
    >>> sorted(set(C.sum(axis=1).tolist()))
    [0, 8, 12, 16, 24]
    """
    residues = {(k * k) % 23 for k in range(1, 23)}
    nonres = [k for k in range(1, 23) if k not in residues]
    gens = []
    for shift in range(23):
        w = np.zeros(24, dtype=np.uint8)
        for k in [0] + nonres:
            w[1 + (k + shift) % 23] = 1
        w[0] = w[1:].sum() % 2
        gens.append(w)
    gens.append(np.ones(24, dtype=np.uint8))
    g, _ = _rref_gf2(np.array(gens, dtype=np.uint8))
    if g.shape[0] != 12:  # pragma: no cover
        raise RuntimeError("QR construction did not give a 12-dimensional code")
    msgs = _unpack(np.arange(4096), 12).astype(np.int32)
    return ((msgs @ g.astype(np.int32)) & 1).astype(np.uint8)


def _octad_graph(codewords: np.ndarray):
    import networkx as nx

    cw = np.asarray(codewords)
    octs = cw[cw.sum(axis=1) == 8]
    g = nx.Graph()
    g.add_nodes_from(range(24), kind="point")
    for k, o in enumerate(octs):
        node = 24 + k
        g.add_node(node, kind="octad")
        for i in np.nonzero(o)[0]:
            g.add_edge(node, int(i))
    return g


def _octad_index(codewords: np.ndarray):
    """Octad masks and a map from every 5-subset mask to its octad mask."""
    ints = _pack(codewords)
    octs = ints[_popcount(ints) == 8]
    five = {}
    for o in octs.tolist():
        pts = [i for i in range(24) if o >> i & 1]
        for sub in itertools.combinations(pts, 5):
            five[sum(1 << i for i in sub)] = o
    return five


def _steiner_isomorphism(words_a: np.ndarray, words_b: np.ndarray):
    """Backtracking search for a point map carrying the octads of A onto those of B.

    Five points are mapped first (M24 is 5-transitive, so any images extend); each
    further point ``p -> q`` must respect, for every 4-subset ``S`` of the first five
    points, the octad through ``S + p``: its mapped points must go to the octad
    through ``phi(S) + q`` and nowhere else.
    """
    five_a, five_b = _octad_index(words_a), _octad_index(words_b)
    octads_a = set(five_a.values())
    octads_b = set(five_b.values())
    base = [0, 1, 2, 3, 4]
    quads = list(itertools.combinations(base, 4))

    def consistent(phi, p, q):
        for quad in quads:
            sa = sum(1 << i for i in quad) | (1 << p)
            sb = sum(1 << phi[i] for i in quad) | (1 << q)
            oa, ob = five_a[sa], five_b[sb]
            for r, img in phi.items():
                if (oa >> r & 1) != (ob >> img & 1):
                    return False
        return True

    def is_isomorphism(phi):
        for o in octads_a:
            img = sum(1 << phi[i] for i in range(24) if o >> i & 1)
            if img not in octads_b:
                return False
        return True

    def extend(phi, used, order):
        if not order:
            return dict(phi) if is_isomorphism(phi) else None
        p = order[0]
        for q in range(24):
            if used >> q & 1 or not consistent(phi, p, q):
                continue
            phi[p] = q
            found = extend(phi, used | (1 << q), order[1:])
            if found is not None:
                return found
            del phi[p]
        return None

    phi = {i: i for i in base}
    return extend(phi, sum(1 << i for i in base), [i for i in range(24) if i not in base])


def _networkx_isomorphism(words_a: np.ndarray, words_b: np.ndarray):
    from networkx.algorithms.isomorphism import GraphMatcher

    ga, gb = _octad_graph(words_a), _octad_graph(words_b)
    gm = GraphMatcher(ga, gb, node_match=lambda x, y: x["kind"] == y["kind"])
    for mapping in gm.isomorphisms_iter():
        return {i: mapping[i] for i in range(24)}
    return None


def find_isomorphism(code_a, code_b, *, method: str = "steiner") -> np.ndarray:
    """A coordinate permutation mapping one presentation of the Golay code onto another.

    Both arguments are ``(m, 24)`` binary arrays spanning a [24, 12, 8] code
    (generator matrices or codeword lists).  The octads of each code form a
    Steiner system S(5, 8, 24), and a point map carrying octads onto octads is a
    code isomorphism.

    Parameters
    ----------
    code_a, code_b : array_like
        Binary ``(m, 24)`` arrays.
    method : {"steiner", "networkx"}
        ``"steiner"`` (default, a few hundredths of a second): backtracking on points
        after fixing five of them, which 5-transitivity of M24 allows.
        ``"networkx"`` (seconds): VF2 graph matching of the point–octad incidence
        graphs, an independent cross-check.

    Returns
    -------
    numpy.ndarray
        Permutation ``p`` (24 ints) with: ``w`` in code A iff ``w'`` in code B, where
        ``w'[p[i]] = w[i]``.

    Raises
    ------
    ValueError
        If an argument is not a 12-dimensional code of minimum distance 8, or no
        isomorphism exists.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib import GolayCode
    >>> from leechlib.golay import find_isomorphism, quadratic_residue_code
    >>> code = GolayCode()
    >>> qr = quadratic_residue_code()
    >>> p = find_isomorphism(qr, code.G)
    >>> moved = np.zeros_like(qr); moved[:, p] = qr
    >>> bool(code.contains(moved).all())
    True
    """
    check_choice(method, "method", ("steiner", "networkx"))
    words = []
    for name, c in (("code_a", code_a), ("code_b", code_b)):
        arr = as_binary(c, name, 24)
        arr = arr.reshape(-1, 24)
        g, _ = _rref_gf2(arr)
        if g.shape[0] != 12:
            raise ValueError(f"{name} must span a 12-dimensional code, got rank {g.shape[0]}")
        msgs = _unpack(np.arange(4096), 12).astype(np.int32)
        cw = ((msgs @ g.astype(np.int32)) & 1).astype(np.uint8)
        wt = cw.sum(axis=1)
        if wt[wt > 0].min() != 8:
            raise ValueError(f"{name} must have minimum distance 8, got {wt[wt > 0].min()}")
        words.append(cw)
    search = _steiner_isomorphism if method == "steiner" else _networkx_isomorphism
    mapping = search(words[0], words[1])
    if mapping is not None:
        perm = np.array([mapping[i] for i in range(24)], dtype=np.intp)
        moved = np.zeros_like(words[0])
        moved[:, perm] = words[0]
        if set(_pack(moved).tolist()) == set(_pack(words[1]).tolist()):
            return perm
    raise ValueError("the two codes are not isomorphic")  # pragma: no cover - d = 8 forces it


def _qr_m24_generators() -> list[np.ndarray]:
    """M24 generators on the projective line (coordinate 0 = ∞, 1 + k = k)."""
    inf = "inf"
    residues = {(k * k) % 23 for k in range(1, 23)}

    def as_perm(f):
        img = []
        for pt in _QR_POINTS:
            q = f(pt)
            img.append(0 if q == inf else 1 + q % 23)
        return np.array(img, dtype=np.intp)

    def shift(x):
        return inf if x == inf else (x + 1) % 23

    def square(x):
        return inf if x == inf else (2 * x) % 23

    def invert(x):
        if x == inf:
            return 0
        if x == 0:
            return inf
        return (-pow(x, -1, 23)) % 23

    def conway_delta(x):
        # Conway's extra generator: x -> 9 x^3 on residues, x^3 / 9 on non-residues.
        if x == inf or x == 0:
            return x
        if x in residues:
            return (9 * pow(x, 3, 23)) % 23
        return (pow(x, 3, 23) * pow(9, -1, 23)) % 23

    return [as_perm(f) for f in (shift, square, invert, conway_delta)]


@functools.cache
def generators_mog() -> tuple:
    """M24 generators in MOG coordinates (read-only permutation arrays), from
    :func:`_qr_m24_generators` carried over by :func:`find_isomorphism`."""
    qr = quadratic_residue_code()
    g_mog, _ = _mog.generator()
    qr_ints = set(_pack(qr).tolist())
    gens_qr = []
    for g in _qr_m24_generators():
        moved = np.zeros_like(qr)
        moved[:, g] = qr
        if set(_pack(moved).tolist()) != qr_ints:  # pragma: no cover
            raise RuntimeError("a QR generator does not preserve the QR code")
        gens_qr.append(g)
    phi = find_isomorphism(qr, g_mog)  # QR coordinate i -> MOG coordinate phi[i]
    inv = np.argsort(phi)
    out = []
    for g in gens_qr:
        # MOG coordinate m: back to QR (inv[m]), apply g, forward to MOG.
        mog = phi[g[inv]]
        out.append(_readonly(mog.astype(np.intp)))
    return tuple(out)


@functools.cache
def group():
    """M24 as a sympy ``PermutationGroup`` on the MOG coordinates."""
    from sympy.combinatorics import Permutation, PermutationGroup

    return PermutationGroup([Permutation([int(v) for v in g]) for g in generators_mog()])


def random_element(gen: np.random.Generator) -> np.ndarray:
    """A uniformly random element of M24 (a permutation array) drawn with ``gen``."""
    from sympy.combinatorics import Permutation

    grp = group()
    # sympy's random element is a product of a random coset representative per
    # level of the stabiliser chain: uniform when the choices are uniform.
    grp.schreier_sims()
    perm = Permutation(list(range(24)))
    for transversal in grp.basic_transversals:
        keys = sorted(transversal)
        perm = transversal[keys[int(gen.integers(len(keys)))]] * perm
    return np.array(perm.array_form, dtype=np.intp)
