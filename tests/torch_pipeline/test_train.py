"""Training: resume == uninterrupted, --stop-at, atomic checkpoints, argument checks."""

import dataclasses
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.torch import load_file  # noqa: E402

from torch_ext.lila import train as T  # noqa: E402
from torch_ext.lila.results import TrainResult  # noqa: E402

#: the keys of the JSON that `leechlib lila train --json` writes (TrainResult.to_dict)
TRAIN_KEYS = {"out", "step", "steps", "final_loss", "val", "history", "checkpoint", "tokens_per_s",
              "train_seconds", "wall_seconds", "resumed_from", "stopped", "interrupted", "world_size",
              "device", "params_trainable", "params_frozen", "skipped_steps", "interrupted_by"}
VAL_KEYS = {"bpc", "nll_bits", "n_chars", "n_bytes", "n_docs", "n_tokens_scored", "bits_per_byte", "loss",
            "perplexity", "nll_bits_separators", "chars_per_token", "eval_seconds", "eval_tokens_per_s",
            "block_size", "stride", "params_trainable", "params_frozen"}


def _weights(path):
    return {k: v for k, v in load_file(str(path)).items() if k.startswith(("model/", "optim/"))}


def _assert_bitwise_equal(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_lr_schedule():
    lrs = [T.lr_at(s, 100, 10, 1e-3, 0.1) for s in range(100)]
    assert lrs[9] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.01)


@pytest.mark.parametrize("variant", ["dropout+align", "accum"])
def test_resume_equals_uninterrupted(tiny_args, tmp_path, variant):
    extra = (dict(dropout=0.1, align_weight=0.05, align_directions="frame") if variant == "dropout+align"
             else dict(grad_accum=2, attention="learned"))
    args = dict(tiny_args, steps=7, eval_every=3, save_every=2, **extra)
    full = T.train(dict(args, out=str(tmp_path / "full")))
    assert full["step"] == 7 and not full["stopped"] and full["val"] is not None

    part = T.train(dict(args, out=str(tmp_path / "part"), stop_at=4))
    assert part["stopped"] and part["step"] == 4 and part["val"] is None
    assert [s for s, _ in T.list_checkpoints(tmp_path / "part")] == [2, 4]
    rest = T.train(dict(args, out=str(tmp_path / "part"), resume=True))
    assert rest["resumed_from"] == 4 and rest["step"] == 7

    _assert_bitwise_equal(_weights(Path(full["checkpoint"])), _weights(Path(rest["checkpoint"])))
    assert rest["final_loss"] == full["final_loss"]
    assert rest["val"]["nll_bits"] == full["val"]["nll_bits"]
    assert rest["history"] == full["history"]
    assert [h["step"] for h in full["history"]] == [3, 6, 7]


def test_resume_after_a_kill_from_an_older_checkpoint(tiny_args, tmp_path):
    # a kill after step 5 leaves the checkpoint of step 4 (save_every=2): the resumed
    # run redoes step 5 from the checkpointed generator and ends identical
    args = dict(tiny_args, steps=6, save_every=2)
    full = T.train(dict(args, out=str(tmp_path / "full")))
    T.train(dict(args, out=str(tmp_path / "part"), stop_at=5))
    (tmp_path / "part" / "ckpt-0000005.safetensors").unlink()  # as if killed before saving
    rest = T.train(dict(args, out=str(tmp_path / "part"), resume=True))
    assert rest["resumed_from"] == 4
    _assert_bitwise_equal(_weights(full["checkpoint"]), _weights(rest["checkpoint"]))


def test_resume_requires_the_same_arguments(tiny_args, tmp_path):
    T.train(dict(tiny_args, stop_at=2))
    with pytest.raises(ValueError, match="lr"):
        T.train(dict(tiny_args, resume=True, lr=0.5))
    with pytest.raises(ValueError, match="resume"):
        T.train(dict(tiny_args))  # the out dir has checkpoints: refuse to overwrite


def test_checkpoint_writes_are_atomic(tiny_args, tmp_path, monkeypatch):
    res = T.train(dict(tiny_args, steps=3))
    run = Path(res["out"])
    good = T.resolve_checkpoint(run)
    # a partial temporary file from a killed write is ignored
    (run / ".ckpt-0000009.safetensors.abc123.tmp").write_bytes(b"\x00" * 100)
    assert T.resolve_checkpoint(run) == good
    ck = T.load_checkpoint(run)
    assert ck.step == 3 and ck.path == good

    # a crash in the middle of writing leaves the previous checkpoint intact
    before = good.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(T.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        T.save_checkpoint(good, ck.model, step=99)
    monkeypatch.undo()
    assert good.read_bytes() == before
    assert T.load_checkpoint(good).step == 3
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp") and "abc123" not in p.name]

    # truncated or garbage files are a clear CheckpointError, not a crash
    bad = run / "ckpt-0000010.safetensors"
    bad.write_bytes(before[: len(before) // 2])
    with pytest.raises(T.CheckpointError, match="corrupt"):
        T.load_checkpoint(run)  # the latest is the broken one
    with pytest.raises(T.CheckpointError, match="no checkpoint"):
        T.load_checkpoint(run / "missing.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(T.CheckpointError, match="holds no checkpoint"):
        T.load_checkpoint(empty)


def test_model_export_loads_with_the_model_class(tiny_args):
    from torch_ext.model import LilaTransformer

    res = T.train(dict(tiny_args, steps=2))
    m = LilaTransformer.load(Path(res["out"]) / "model.safetensors")
    ck = T.load_checkpoint(res["checkpoint"])
    for (k, a), (_, b) in zip(sorted(m.state_dict().items()), sorted(ck.model.state_dict().items()), strict=False):
        assert torch.equal(a, b), k


def test_export_failure_is_a_clear_error(tiny_args, monkeypatch):
    from torch_ext.model import LilaTransformer

    def refuse(self, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(LilaTransformer, "save", refuse)
    with pytest.raises(OSError, match="exporting the weights") as info:
        T.train(dict(tiny_args, steps=2))
    assert "Permission denied" in str(info.value) and "ckpt-0000002" in str(info.value)
    assert T.load_checkpoint(tiny_args["out"]).step == 2  # the final checkpoint is there


@pytest.mark.parametrize("override, match", [
    (dict(steps=0), "steps"),
    (dict(batch_size=-1), "batch_size"),
    (dict(lr=0.0), "lr"),
    (dict(lr="big"), "lr"),
    (dict(stop_at=99), "stop_at"),
    (dict(tokenizer="chars"), "tokenizer"),
    (dict(attention="sparse"), "attention"),
    (dict(kernel="e8"), "kernel"),
    (dict(d_model=50), "d_model"),
    (dict(preset="lila-huge"), "preset"),
    (dict(data="/no/such/dir"), "data"),
    (dict(dropout=1.5), "dropout"),
    (dict(dropout=1.0), "dropout"),
    (dict(attn_dropout=1.0), "attn_dropout"),
    (dict(block_size=10**6), "block"),
    (dict(device="gpu0"), "device"),
])
def test_bad_arguments(tiny_args, override, match):
    with pytest.raises((ValueError, TypeError), match=match):
        T.train(dict(tiny_args, **override))


def test_unknown_argument(tiny_args):
    with pytest.raises(ValueError, match="unknown"):
        T.train(dict(tiny_args, learning_rate=1.0))


def test_time_budget_shortens_the_schedule(tiny_args):
    res = T.train(dict(tiny_args, steps=100_000, time_budget=0.5))
    assert 1 <= res["step"] == res["steps"] < 100_000
    assert not res["stopped"] and res["val"] is not None
    assert res["train_seconds"] < 5.0


def test_result_is_a_frozen_dataclass_with_the_json_keys(tiny_args):
    res = T.train(dict(tiny_args, steps=2))
    assert isinstance(res, TrainResult)
    d = res.to_dict()
    assert set(d) == TRAIN_KEYS and set(d["val"]) == VAL_KEYS
    assert json.loads(json.dumps(d)) == d
    assert res["step"] == res.step == 2 and res.tokenizer.eos_id == 256
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.step = 3
    stopped = T.train(dict(tiny_args, steps=4, stop_at=2, out=tiny_args["out"] + "-stopped"))
    assert stopped.val is None and stopped.to_dict()["val"] is None and set(stopped.to_dict()) == TRAIN_KEYS
