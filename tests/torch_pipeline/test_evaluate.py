"""Bits per character on hand-computed cases, padding, ranks and parameter counts."""

import dataclasses
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_ext.lila.data import ByteTokenizer, TokenData, TokenSplit  # noqa: E402
from torch_ext.lila.evaluate import (  # noqa: E402
    bits_per_character,
    eval_windows,
    evaluate,
    matrix_ranks,
    param_counts,
    weight_ranks,
)
from torch_ext.lila.results import EvalResult, EvalSums  # noqa: E402

EOS = 256
#: the keys of bits_per_character's result (and of the JSON written by the CLI)
BPC_KEYS = {"bpc", "nll_bits", "n_chars", "n_bytes", "n_docs", "n_tokens_scored", "bits_per_byte", "loss",
            "perplexity", "nll_bits_separators", "chars_per_token", "eval_seconds", "eval_tokens_per_s",
            "block_size", "stride"}
PARAM_KEYS = {"params_trainable", "params_frozen"}
RANK_KEYS = {"stable_rank", "effective_rank", "ranks"}


class FixedModel(torch.nn.Module):
    """Predicts the same distribution everywhere: p(a) = 1/2, p(b) = 1/4, p(EOS) = 1/4."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        lp = torch.full((257,), -1e4)
        lp[ord("a")], lp[ord("b")], lp[EOS] = math.log(0.5), math.log(0.25), math.log(0.25)
        self.register_buffer("lp", lp)
        self.calls = []

    def forward(self, idx):
        self.calls.append(idx.clone())
        return self.lp.expand(*idx.shape, 257) + 0 * self.w


def _split(texts):
    return TokenSplit.from_texts(texts, ByteTokenizer())


def test_hand_computed_bpc():
    # stream [EOS a b EOS b EOS]: targets a, b, EOS, b, EOS -> 1 + 2 + 2 + 2 + 2 = 9 bits
    sp = _split(["ab", "b"])
    assert sp.tokens.tolist() == [EOS, 97, 98, EOS, 98, EOS]
    r = bits_per_character(FixedModel(), sp, eos_id=EOS, block_size=4)
    assert r["nll_bits"] == pytest.approx(9.0, abs=1e-5)
    assert r["n_chars"] == 3 and r["n_tokens_scored"] == 5
    assert r["bpc"] == pytest.approx(3.0, abs=1e-5)
    assert r["nll_bits_separators"] == pytest.approx(4.0, abs=1e-5)  # two EOS targets, 2 bits each
    assert r["perplexity"] == pytest.approx(2 ** (9 / 5), rel=1e-5)
    assert r["bits_per_byte"] == pytest.approx(3.0, abs=1e-5)


def test_characters_not_bytes():
    # "é" is 2 UTF-8 bytes but 1 character: BPC divides by characters
    sp = _split(["é"])
    assert (sp.n_chars, sp.n_bytes, sp.n_targets) == (1, 2, 3)
    m = FixedModel()
    m.lp[0xC3], m.lp[0xA9], m.lp[EOS] = math.log(0.25), math.log(0.25), math.log(0.5)
    m.lp[ord("a")] = m.lp[ord("b")] = -1e4
    r = bits_per_character(m, sp, eos_id=EOS, block_size=8)
    assert r["nll_bits"] == pytest.approx(2 + 2 + 1, abs=1e-4)
    assert r["bpc"] == pytest.approx(2 * r["bits_per_byte"], rel=1e-6)


@pytest.mark.parametrize("block_size", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_padding_is_not_scored(block_size, batch_size):
    # The padded last window has targets "-1": if they were scored (as token 0, p ~ e^-1e4)
    # the total would explode.  Every block size, batch and stride gives the same 9 bits.
    sp = _split(["ab", "b"])
    for stride in [None] + list(range(1, block_size + 1)):
        m = FixedModel()
        r = bits_per_character(m, sp, eos_id=EOS, block_size=block_size, batch_size=batch_size, stride=stride)
        assert r["nll_bits"] == pytest.approx(9.0, abs=1e-4)
        assert r["n_tokens_scored"] == 5
        assert all(c.shape[1] == block_size for c in m.calls)


def test_windows_score_each_target_once():
    for n in range(2, 40):
        for T in range(1, 9):
            for S in range(1, T + 1):
                seen = []
                for start, n_in, first in eval_windows(n, T, S):
                    assert 1 <= n_in <= T and 0 <= first < n_in and start + n_in <= n - 1
                    seen += list(range(start + 1 + first, start + n_in + 1))
                assert seen == list(range(1, n))


def test_overlapping_windows_give_more_context():
    class Counter(torch.nn.Module):  # p(EOS) grows with the position in the window
        def forward(self, idx):
            t = idx.shape[1]
            lg = torch.zeros(*idx.shape, 257)
            lg[..., EOS] = torch.arange(t, dtype=torch.float32)
            return lg

    sp = _split(["abababab"] * 3)
    a = bits_per_character(Counter(), sp, eos_id=EOS, block_size=8)
    b = bits_per_character(Counter(), sp, eos_id=EOS, block_size=8, stride=2)
    assert a["n_tokens_scored"] == b["n_tokens_scored"] == sp.n_targets
    assert a["nll_bits"] != b["nll_bits"]


def test_evaluate_on_tokendata_and_bare_split():
    sp = _split(["ab", "b"])
    data = TokenData(sp, sp, ByteTokenizer(), {"name": "hand"}, "k")
    r = evaluate(FixedModel(), data, block_size=2)
    assert r["bpc"] == pytest.approx(3.0, abs=1e-5) and r["split"] == "validation"
    assert r["params_trainable"] == 1 and r["params_frozen"] == 257
    with pytest.raises(ValueError, match="eos_id"):
        evaluate(FixedModel(), sp, block_size=2)
    assert evaluate(FixedModel(), sp, block_size=2, eos_id=EOS)["nll_bits"] == pytest.approx(9.0, abs=1e-5)
    with pytest.raises(TypeError, match="data"):
        evaluate(FixedModel(), [1, 2, 3], block_size=2)
    with pytest.raises(ValueError, match="block_size"):
        evaluate(FixedModel(), data)


def test_bad_window_arguments():
    with pytest.raises(ValueError, match="stride"):
        list(eval_windows(10, 4, stride=5))
    with pytest.raises(ValueError, match="block_size"):
        list(eval_windows(10, 0))
    with pytest.raises(ValueError, match="n_tokens"):
        list(eval_windows(1, 4))
    with pytest.raises(ValueError, match="batch_size"):
        bits_per_character(FixedModel(), _split(["a"]), eos_id=EOS, block_size=2, batch_size=0)


def test_matrix_ranks():
    w = torch.diag(torch.tensor([3.0, 1.0, 1.0, 1.0]))
    r = matrix_ranks(w)
    assert r["stable_rank"] == pytest.approx(12 / 9)
    p = np.array([3, 1, 1, 1]) / 6
    assert r["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    q, _ = torch.linalg.qr(torch.randn(24, 24, dtype=torch.float64))
    r = matrix_ranks(q)
    assert r["stable_rank"] == pytest.approx(24) and r["effective_rank"] == pytest.approx(24)
    assert matrix_ranks(torch.ones(3, 5))["stable_rank"] == pytest.approx(1.0)
    assert matrix_ranks(torch.zeros(3, 3))["stable_rank"] == 0.0
    with pytest.raises(ValueError, match="2-D"):
        matrix_ranks(torch.ones(3))


def test_ranks_and_counts_of_a_lila_model():
    from torch_ext.model import LilaConfig, LilaTransformer

    torch.manual_seed(0)
    m = LilaTransformer(LilaConfig.preset("lila-tiny", d_model=24, n_head=1, n_layer=1, block_size=8))
    ranks = weight_ranks(m)
    assert "wte.weight" in ranks and any(v["frozen"] for v in ranks.values())
    for _name, v in ranks.items():
        assert 1.0 <= v["stable_rank"] <= min(v["shape"]) + 1e-9
        assert v["stable_rank"] <= v["effective_rank"] + 1e-9
    frozen = [v for v in ranks.values() if v["frozen"]]
    assert all(v["stable_rank"] == pytest.approx(24.0) for v in frozen)  # orthogonal kernels
    c = param_counts(m)
    assert c["params_trainable"] == sum(p.numel() for p in m.parameters())
    assert c["params_frozen"] == m.num_params().frozen > 0


def test_ranks_leave_out_the_row_scales_of_quantized_layers():
    from torch_ext.model import LilaConfig, LilaTransformer
    from torch_ext.quantize import quantize_model

    torch.manual_seed(0)
    m = LilaTransformer(LilaConfig.preset("lila-tiny", d_model=24, n_head=1, n_layer=1, block_size=8))
    quantize_model(m, method="rtn", rotation="none")
    assert any(b.ndim == 2 and min(b.shape) == 1 for b in m.buffers())  # (n, 1) scales
    ranks = weight_ranks(m)
    assert ranks and all(min(v["shape"]) > 1 for v in ranks.values())
    assert "wte.weight" in ranks


def test_results_are_frozen_dataclasses_with_the_json_keys():
    sp = _split(["ab", "b"])
    r = bits_per_character(FixedModel(), sp, eos_id=EOS, block_size=4)
    assert isinstance(r, EvalResult) and set(r.to_dict()) == BPC_KEYS
    assert r["nll_bits"] == r.nll_bits and r.split is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.bpc = 0.0
    with pytest.raises(KeyError):
        r["no_such_key"]
    data = TokenData(sp, sp, ByteTokenizer(), {"name": "hand"}, "k")
    full = evaluate(FixedModel(), data, block_size=2)
    assert set(full.to_dict()) == BPC_KEYS | {"split"} | PARAM_KEYS | RANK_KEYS
    no_ranks = evaluate(FixedModel(), data, block_size=2, ranks=False)
    assert set(no_ranks.to_dict()) == BPC_KEYS | {"split"} | PARAM_KEYS
    d = full.to_dict()
    assert json.loads(json.dumps(d)) == d
    d["stable_rank"]["added"] = 1.0  # a copy: the result does not change
    assert "added" not in full.stable_rank and "added" not in full.to_dict()["stable_rank"]


@pytest.mark.parametrize("world", [2, 3])
def test_shard_sums_add_up_to_the_whole_split(world):
    sp = _split(["abab", "b", "aab"])
    whole = bits_per_character(FixedModel(), sp, eos_id=EOS, block_size=3)
    parts = [bits_per_character(FixedModel(), sp, eos_id=EOS, block_size=3, shard=(r, world))
             for r in range(world)]
    assert all(isinstance(p, EvalSums) for p in parts)
    total = dataclasses.replace(parts[0], nll_nats=sum(p.nll_nats for p in parts),
                                sep_nats=sum(p.sep_nats for p in parts),
                                n_tokens_scored=sum(p.n_tokens_scored for p in parts))
    res = total.result(sp)
    assert res.nll_bits == pytest.approx(whole.nll_bits, rel=1e-12)
    assert res.n_tokens_scored == whole.n_tokens_scored == sp.n_targets
    with pytest.raises(RuntimeError, match="scored"):
        parts[0].result(sp)  # one shard alone does not cover the split
    with pytest.raises(ValueError, match="shard"):
        bits_per_character(FixedModel(), sp, eos_id=EOS, block_size=3, shard=(2, 2))
