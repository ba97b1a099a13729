"""Invariants of the hexacode and the extended Golay code, hard decoding, M24."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leechlib.golay import (
    GF4_MUL,
    column_pattern,
    find_isomorphism,
    hexacode_words,
    mog_index,
    mog_position,
    quadratic_residue_code,
)


def test_gf4_is_a_field():
    nonzero = [1, 2, 3]
    for a in nonzero:
        assert sorted(int(GF4_MUL[a, b]) for b in nonzero) == nonzero  # invertible
    for a, b, c in itertools.product(range(4), repeat=3):  # distributive over XOR
        assert GF4_MUL[a, b ^ c] == GF4_MUL[a, b] ^ GF4_MUL[a, c]
    assert GF4_MUL[2, 2] == 3  # ω² = ω̄


def test_hexacode_invariants():
    h = hexacode_words().astype(int)
    assert len({tuple(r) for r in h}) == 64
    weights = (h != 0).sum(axis=1)
    assert np.bincount(weights, minlength=7).tolist() == [1, 0, 0, 0, 45, 0, 18]
    # GF(4)-linear: closed under addition (XOR) and scalar multiplication
    words = {tuple(r) for r in h}
    for a, b in itertools.product(h[:16], h[::5]):
        assert tuple(a ^ b) in words
    for s in (2, 3):
        assert all(tuple(GF4_MUL[s, r]) in words for r in h)


def test_column_pattern_is_unique():
    t = column_pattern()
    assert sorted(t.ravel().tolist()) == list(range(16))


def test_mog_maps_roundtrip():
    for i in range(24):
        assert mog_index(*mog_position(i)) == i
    with pytest.raises(ValueError, match="column"):
        mog_index(6, 0)
    with pytest.raises(ValueError, match="i must"):
        mog_position(24)


def test_code_parameters(code):
    cw = code.codewords()
    assert cw.shape == (4096, 24)
    assert len({r.tobytes() for r in cw}) == 4096
    w = code.weight_enumerator()
    assert {i: int(c) for i, c in enumerate(w) if c} == {0: 1, 8: 759, 12: 2576, 16: 759, 24: 1}
    assert cw.sum(axis=1)[1:].min() == 8  # minimum distance (linear code)


def test_mog_rule_holds_for_every_codeword(code):
    cw = code.codewords().reshape(4096, 6, 4).astype(int)
    top_parity = cw[:, :, 0].sum(axis=1) % 2
    assert np.all(cw.sum(axis=2) % 2 == top_parity[:, None])
    scores = np.zeros((4096, 6), dtype=int)
    for r in range(4):
        scores ^= cw[:, :, r] * r
    hexa = {tuple(r) for r in hexacode_words().astype(int)}
    assert all(tuple(s) in hexa for s in scores)


def test_generator_matrix(code):
    G = code.G.astype(int)
    assert G.shape == (12, 24)
    assert np.all((G @ G.T) % 2 == 0)  # self-orthogonal, hence self-dual (k = n/2)
    assert np.array_equal(code.H, code.G)
    assert np.array_equal(G[:, code.information_set], np.eye(12, dtype=int))


def test_self_dual(code):
    cw = code.codewords().astype(int)
    assert np.all((cw[::7] @ cw.T) % 2 == 0)


def test_encode_matches_codeword_table(code, rng):
    msgs = rng.integers(0, 2, size=(50, 12))
    c = code.encode(msgs)
    idx = (msgs << np.arange(12)).sum(axis=1)
    assert np.array_equal(c, code.codewords()[idx])
    assert np.array_equal(c[:, code.information_set], msgs)
    assert not code.detect(c).any()
    assert not code.syndrome(c).any()


def test_octads_form_steiner_system(code):
    octs = code.octads()
    assert octs.shape == (759, 8)
    assert np.all(np.diff(octs.astype(int), axis=1) > 0)
    masks = np.zeros(759, dtype=np.int64)
    for i in range(8):
        masks |= np.int64(1) << octs[:, i].astype(np.int64)
    # S(5, 8, 24): every 5-set lies in exactly one octad
    counts = {}
    for _m, o in zip(masks, octs, strict=False):
        for five in itertools.combinations(o.tolist(), 5):
            counts[five] = counts.get(five, 0) + 1
    assert len(counts) == 42504  # C(24, 5)
    assert set(counts.values()) == {1}


def test_sextets(code):
    s = code.sextets()
    assert s.shape == (1771, 6, 4)
    octs = {tuple(o) for o in code.octads().tolist()}
    for sextet in s[::37]:
        assert sorted(sextet.ravel().tolist()) == list(range(24))
        for a, b in itertools.combinations(range(6), 2):
            assert tuple(sorted(sextet[a].tolist() + sextet[b].tolist())) in octs
    tetrads0 = {tuple(x[0]) for x in s.tolist()}
    assert len(tetrads0) == 1771  # one sextet per tetrad through 0


def test_decode_corrects_up_to_three_errors_exhaustively_for_weight_one_two(code):
    c = code.codewords()[1234]
    for w in (1, 2):
        pats = np.zeros((len(list(itertools.combinations(range(24), w))), 24), dtype=np.uint8)
        for k, pos in enumerate(itertools.combinations(range(24), w)):
            pats[k, list(pos)] = 1
        res = code.decode(pats ^ c)
        assert np.all(res.codewords == c)
        assert np.all(res.n_errors == w)


@settings(deadline=None, max_examples=200)
@given(
    msg=st.integers(0, 4095),
    errs=st.sets(st.integers(0, 23), max_size=3),
)
def test_decode_hypothesis(code, msg, errs):
    c = code.codewords()[msg]
    r = c.copy()
    r[list(errs)] ^= 1
    res = code.decode(r)
    assert np.array_equal(res.codewords, c)
    assert int(res.n_errors) == len(errs)


def test_decode_detects_four_errors(code, rng):
    c = code.codewords()[rng.integers(4096, size=100)]
    r = c.copy()
    for row in r:
        row[rng.choice(24, 4, replace=False)] ^= 1
    res = code.decode(r)
    assert np.all(res.n_errors == -1)
    assert np.array_equal(res.codewords, r)
    assert code.detect(r).all()


def test_batch_shapes(code, rng):
    words = rng.integers(0, 2, size=(3, 5, 24)).astype(np.uint8)
    assert code.syndrome(words).shape == (3, 5, 12)
    assert code.detect(words).shape == (3, 5)
    res = code.decode(words)
    assert res.codewords.shape == (3, 5, 24)
    assert res.n_errors.shape == (3, 5)
    assert code.encode(np.zeros((2, 2, 12), dtype=bool)).shape == (2, 2, 24)


def test_read_only_and_non_contiguous_inputs(code):
    cw = code.codewords()  # read-only
    assert not cw.flags.writeable
    assert not code.detect(cw).any()
    big = np.zeros((10, 48), dtype=np.uint8)
    big[:, ::2] = cw[:10]
    view = big[:, ::2]
    assert not view.flags.c_contiguous
    assert not code.detect(view).any()


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.zeros(23, dtype=np.uint8), ValueError, r"words must have shape \(\.\.\., 24\)"),
        (np.full(24, 2), ValueError, "words must be binary"),
        (np.full(24, np.nan), ValueError, "words contains NaN"),
        (np.array(["a"] * 24), TypeError, "words must have a bool or integer dtype"),
        (np.zeros(24, dtype=complex), TypeError, "words"),
        (np.array(3), ValueError, "words must have shape"),
    ],
)
def test_bad_words(code, bad, exc, match):
    with pytest.raises(exc, match=match):
        code.decode(bad)


def test_bad_messages(code):
    with pytest.raises(ValueError, match=r"messages must have shape \(\.\.\., 12\)"):
        code.encode(np.zeros(24, dtype=np.uint8))


def test_empty_batch_is_allowed_for_hard_decoding(code):
    res = code.decode(np.zeros((0, 24), dtype=np.uint8))
    assert res.codewords.shape == (0, 24) and res.n_errors.shape == (0,)


def test_m24_generators_and_order(code):
    gens = code.m24_generators()
    for g in gens:
        assert code.is_automorphism(g)
    assert code.automorphism_group_order() == 244823040


def test_random_automorphism_is_seeded(code):
    a = code.random_automorphism(rng=7)
    b = code.random_automorphism(rng=7)
    assert np.array_equal(a, b)
    assert code.is_automorphism(a)
    assert not np.array_equal(a, code.random_automorphism(rng=8))


def test_is_automorphism_rejects_non_permutations(code):
    with pytest.raises(ValueError, match="perm must be a permutation"):
        code.is_automorphism([0] * 24)
    with pytest.raises(ValueError, match=r"perm must have shape \(24,\)"):
        code.is_automorphism(list(range(23)))


@pytest.mark.parametrize("method", ["steiner", pytest.param("networkx", marks=pytest.mark.slow)])
def test_isomorphism_from_quadratic_residue_code(code, method):
    qr = quadratic_residue_code()
    assert np.bincount(qr.sum(axis=1), minlength=25)[[0, 8, 12, 16, 24]].tolist() == [
        1, 759, 2576, 759, 1,
    ]
    # the QR code is a different presentation: not equal to the MOG code as a set
    assert code.detect(qr).any()
    p = find_isomorphism(qr, code.G, method=method)
    moved = np.zeros_like(qr)
    moved[:, p] = qr
    assert code.contains(moved).all()


def test_isomorphism_rejects_other_codes(code):
    with pytest.raises(ValueError, match="code_a must span a 12-dimensional code"):
        find_isomorphism(code.G[:6], code.G)


def test_isomorphism_of_a_shuffled_code(code, rng):
    from leechlib._mog import rref_gf2 as _rref_gf2

    perm = rng.permutation(24)
    shuffled = np.zeros_like(code.G)
    shuffled[:, perm] = code.G
    p = find_isomorphism(code.codewords(), shuffled)
    moved = np.zeros_like(code.G)
    moved[:, p] = code.G
    # the found map sends the MOG code onto the shuffled code (same row space)
    assert np.array_equal(_rref_gf2(moved)[0], _rref_gf2(shuffled)[0])


def test_isomorphism_rejects_bad_method(code):
    with pytest.raises(ValueError, match="method must be"):
        find_isomorphism(code.G, code.G, method="magic")
