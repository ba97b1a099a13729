"""Faults and bad input in the LILA pipeline, second round (issue 24): paths stored in a checkpoint,
non-finite evaluations, crafted training metadata, `lila quantize` outputs and limits, a closed
pipe, non-finite optimizer moments on resume, atomic model files, a run's model.safetensors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from torch_ext.lila import cli  # noqa: E402
from torch_ext.lila import train as T  # noqa: E402
from torch_ext.model import LilaTransformer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _one_line_error(err: str, *words):
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _lila(argv, **kw):
    """``python -m torch_ext.lila ARGV`` in a subprocess."""
    if "stdout" not in kw and "stderr" not in kw:
        kw["capture_output"] = True
    return subprocess.run([sys.executable, "-m", "torch_ext.lila", *argv], cwd=ROOT, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, **kw)


def _read(path):
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def _crafted(src, dst, tensors=None, **meta):
    """A copy of the checkpoint ``src`` with metadata fields replaced (values as stored: JSON text)."""
    md, t = _read(src)
    save_file(tensors or t, str(dst), metadata={**md, **meta})
    return dst


@pytest.fixture
def run(tiny_args):
    """A finished tiny run (checkpoint, model.safetensors) on the local corpus of the fixtures."""
    return T.train(dict(tiny_args, steps=2))


# ------------------------------------------------------------------ item 2: paths in a file are never trusted


def test_eval_and_quantize_never_read_paths_stored_in_a_checkpoint(run, tmp_path, capsys, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n" * 50)
    args = json.loads(_read(run.checkpoint)[0]["args"])
    ck = _crafted(run.checkpoint, tmp_path / "crafted.safetensors", data_resolved=json.dumps(str(secret)),
                  args=json.dumps({**args, "data": str(secret), "cache_dir": str(elsewhere)}))
    default_cache = Path(os.environ["LEECHLIB_CACHE_DIR"]) / "lila-data"
    before = sorted(default_cache.rglob("*")) if default_cache.exists() else []
    for split in ([], ["--split", "all"], ["--split", "train"]):
        assert cli.main(["eval", str(ck), "--no-ranks", *split]) == 2
        line = _one_line_error(capsys.readouterr().err, "never read", f"pass --data {secret}")
        assert "bits per character" not in capsys.readouterr().out, line
    out = tmp_path / "q.safetensors"
    assert cli.main(["quantize", str(ck), "--out", str(out), "--method", "rtn", "--calib-steps", "2",
                     "--quiet"]) == 2
    _one_line_error(capsys.readouterr().err, "never read", f"pass --data {secret}")
    # nothing was read or written: not the stored cache folder, not the default cache, not --out
    assert not elsewhere.exists() and not out.exists()
    assert (sorted(default_cache.rglob("*")) if default_cache.exists() else []) == before
    # a folder named in the file is not walked either
    ck2 = _crafted(run.checkpoint, tmp_path / "crafted2.safetensors", data_resolved=json.dumps(str(ROOT)),
                   args=json.dumps({**args, "data": str(ROOT)}))
    import torch_ext.lila.corpora as corpora

    monkeypatch.setattr(corpora.LocalTextSource, "__init__", lambda *a, **k: pytest.fail("read a stored path"))
    assert cli.main(["eval", str(ck2), "--no-ranks"]) == 2
    _one_line_error(capsys.readouterr().err, f"pass --data {ROOT}")


def test_a_stored_corpus_name_is_a_default_and_a_stored_path_a_hint():
    from torch_ext.lila.checkpoint import stored_corpus, training_corpus

    assert training_corpus({"data_resolved": "tinystories", "args": {"data": "tinystories"}}) == "tinystories"
    assert training_corpus({"data_resolved": "/etc"}, "mine.txt") == "mine.txt"
    # a name in one field and a path in the other: a path, never used
    assert stored_corpus({"data_resolved": "/srv/x", "args": {"data": "shakespeare"}}) == (None, "/srv/x")
    with pytest.raises(ValueError, match="pass --data PATH"):
        training_corpus({})
    with pytest.raises(ValueError, match="pass --data /etc --split validation if you mean it"):
        training_corpus({"data_resolved": "/etc"}, split="validation")


def test_eval_with_the_corpus_named_uses_the_default_cache_not_the_stored_one(run, tiny_args, tmp_path, capsys):
    stored_cache = Path(tiny_args["cache_dir"])
    mine = tmp_path / "my-cache"
    j = tmp_path / "e.json"
    assert cli.main(["eval", run.checkpoint, "--no-ranks", "--data", tiny_args["data"], "--split", "validation",
                     "--cache-dir", str(mine), "--json", str(j)]) == 0
    assert json.loads(j.read_text())["bpc"] == pytest.approx(run.val.bpc, rel=1e-6)
    assert any(mine.iterdir()) and stored_cache.exists()
    # a --cache-dir that is a file: refused before any work, one line
    assert cli.main(["eval", run.checkpoint, "--no-ranks", "--data", tiny_args["data"],
                     "--cache-dir", str(j)]) == 2
    _one_line_error(capsys.readouterr().err, "--cache-dir", "is not a folder")


# ------------------------------------------------------------------ item 5: a non-finite metric is an error


def test_eval_refuses_a_non_finite_result(run, tiny_args, tmp_path, capsys):
    md, t = _read(run.checkpoint)
    t["model/wte.weight"] = torch.full_like(t["model/wte.weight"], 3e38)  # finite weights, infinite logits
    t["model/ln_f.weight"] = torch.full_like(t["model/ln_f.weight"], 3e38)
    ck = tmp_path / "ckpt-0000002.safetensors"
    save_file(t, str(ck), metadata=md)
    T.load_checkpoint(ck)  # the loader takes it: every weight is finite
    j = tmp_path / "e.json"
    assert cli.main(["eval", str(ck), "--no-ranks", "--data", tiny_args["data"], "--split", "validation",
                     "--cache-dir", tiny_args["cache_dir"], "--json", str(j)]) == 2
    captured = capsys.readouterr()
    _one_line_error(captured.err, "evaluation is not finite")
    assert "bits per character" not in captured.out and not j.exists()


def test_check_finite_result_names_the_metric():
    from torch_ext.lila.results import EvalResult

    good = EvalResult(1.0, 3.0, 3, 3, 1, 4, 1.0, 0.5, 1.6, 0.1, 0.75, 0.1, 40.0, 4, 4)
    cli.check_finite_result(good)
    import dataclasses

    for k in ("bpc", "loss", "perplexity"):
        with pytest.raises(T.CheckpointError, match=f"{k} (nan|inf)"):
            cli.check_finite_result(dataclasses.replace(good, **{k: float("nan") if k != "perplexity" else
                                                                  float("inf")}))


# ------------------------------------------------------------------ item 6: crafted training metadata


@pytest.mark.parametrize("field, value, words", [
    ("step", "Infinity", "step must be an integer"),
    ("step", "1e400", "step must be an integer"),
    ("step", "3.5", "step must be an integer, got 3.5"),
    ("step", "-1", "step must be an integer in [0"),
    ("step", "null", "step must be an integer"),
    ("args", "[1]", "args must be a JSON object"),
    ("args", "null", "args must be a JSON object"),
    ("tokenizer", '{"kind": 5}', "unknown tokenizer kind"),
    ("tokenizer", '{"kind": "bpe", "tokenizer": [1, 2]}', "tokenizer"),
    ("tokenizer", "garbage", "tokenizer must be a JSON object"),
    ("history", "5", "history must be a list"),
    ("history", '[{"step": 1, "val_bpc": "x"}]', "history[0].val_bpc must be a number"),
    ("history", '[{"step": "x"}]', "history[0].step must be an integer"),
    ("history", "[null]", "history[0] must be a JSON object"),
    ("total_steps", "1e400", "total_steps must be an integer"),
    ("train_tokens", "100000000000000000000000", "train_tokens must be an integer in"),
    ("world_size", '"x"', "world_size must be an integer"),
    ("train_tokens_per_s", "NaN", "train_tokens_per_s must be a finite number"),
    ("last_loss", "Infinity", "last_loss must be a finite number"),
    ("tokenizer_fingerprint", "[1]", "tokenizer_fingerprint must be a string"),
    ("optim_groups", '[{"params": "x"}]', "optim_groups must be a list"),
])
def test_crafted_training_metadata_is_a_one_line_error(run, tmp_path, capsys, field, value, words):
    ck = _crafted(run.checkpoint, tmp_path / "ckpt-0000002.safetensors", **{field: value})
    with pytest.raises(T.CheckpointError, match="has invalid metadata"):
        T.load_checkpoint(ck)
    assert cli.main(["eval", str(ck), "--no-ranks"]) == 2
    _one_line_error(capsys.readouterr().err, "invalid metadata", words)
    assert cli.main(["quantize", str(ck), "--out", str(tmp_path / "q.safetensors"), "--calib-steps", "0",
                     "--method", "rtn", "--quiet"]) == 2
    _one_line_error(capsys.readouterr().err, "invalid metadata", words)


@pytest.mark.parametrize("key, value, words", [
    ("seed", 1.5, "args: seed must be an int, got 1.5"),
    ("kernel_seed", 2.0, "args: kernel_seed must be an int"),
    ("val_fraction", float("nan"), "args: val_fraction must be a finite number"),
    ("max_docs", 1e400, "args: max_docs must be an int"),
    ("tokenizer", None, "args: tokenizer must be 'byte' or 'bpe'"),
    ("bpe_vocab_size", 10**30, "args: bpe_vocab_size must be an int in [258, 65535]"),
    ("cache_dir", 5, "args: cache_dir must be a string or null"),
    ("encoding", "no-such-codec", "args: "),
])
def test_crafted_training_arguments_are_refused_not_truncated(run, tmp_path, capsys, key, value, words):
    args = json.loads(_read(run.checkpoint)[0]["args"])
    ck = _crafted(run.checkpoint, tmp_path / "ckpt-0000002.safetensors", args=json.dumps({**args, key: value}))
    assert cli.main(["eval", str(ck), "--no-ranks"]) == 2
    _one_line_error(capsys.readouterr().err, "invalid metadata", words)


def test_resume_from_crafted_metadata_is_exit_2(tiny_args, capsys):
    T.train(dict(tiny_args, steps=4, stop_at=2))
    ck = Path(tiny_args["out"]) / "ckpt-0000002.safetensors"
    _crafted(ck, ck, step="Infinity")
    argv = ["train", "--resume", "--quiet"]
    for k, v in dict(tiny_args, steps=4).items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    assert cli.main(argv) == 2
    _one_line_error(capsys.readouterr().err, "cannot resume", "step must be an integer")


# ------------------------------------------------------------------ item 8: NaN optimizer moments on resume


def test_resume_from_nan_optimizer_moments_fails_at_once(tiny_args, capsys, monkeypatch):
    T.train(dict(tiny_args, steps=4, stop_at=2))
    ck = Path(tiny_args["out"]) / "ckpt-0000002.safetensors"
    md, t = _read(ck)
    key = next(k for k in t if k.startswith("optim/") and k.endswith("exp_avg_sq"))
    t[key].view(-1)[0] = float("nan")
    save_file(t, str(ck), metadata=md)
    steps = []
    monkeypatch.setattr(T._Run, "_train_step", lambda self: steps.append(1) or pytest.fail("a step ran"))
    with pytest.raises(T.CheckpointError, match=f"cannot resume: .*non-finite values .*{key}"):
        T.train(dict(tiny_args, steps=4, resume=True))
    assert not steps


# ------------------------------------------------------------------ item 7: lila quantize outputs and limits


def _quantize(src, out, *extra, calib=0):
    return ["quantize", str(src), "--out", str(out), "--method", "rtn", "--rotation", "none",
            "--calib-steps", str(calib), "--quiet", *extra]


@pytest.fixture
def no_work(monkeypatch):
    import torch_ext.lila.quantize as qlila

    monkeypatch.setattr(qlila, "quantize_model", lambda *a, **k: pytest.fail("quantized before checking"))
    monkeypatch.setattr(qlila, "load_data", lambda *a, **k: pytest.fail("read data before checking"))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs the proc file system")
def test_quantize_refuses_an_unwritable_out_or_cache_before_any_work(run, tmp_path, capsys, no_work):
    assert cli.main(_quantize(run.checkpoint, "/proc/lila-q.safetensors")) == 2
    _one_line_error(capsys.readouterr().err, "cannot be written")
    f = tmp_path / "a-file"
    f.write_text("x")
    for cache in (f, f / "under"):
        assert cli.main(_quantize(run.checkpoint, tmp_path / "q.safetensors", "--cache-dir", str(cache))) == 2
        _one_line_error(capsys.readouterr().err, "--cache-dir")
    assert not (tmp_path / "q.safetensors").exists()
    # --calib-steps beyond any sane size: a clear error before the data is read, not a MemoryError
    assert cli.main(_quantize(run.checkpoint, tmp_path / "q.safetensors", calib=10**9)) == 2
    _one_line_error(capsys.readouterr().err, "calibration tokens, more than the maximum")


def test_a_cache_that_cannot_be_written_is_exit_2_and_leaves_no_folder(run, tiny_args, tmp_path, capsys,
                                                                      monkeypatch):
    import torch_ext.lila.data as data

    cache = tmp_path / "new" / "cache"

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data, "_tokenize_split", fail)
    assert cli.main(_quantize(run.checkpoint, tmp_path / "q.safetensors", "--data", tiny_args["data"],
                              "--cache-dir", str(cache), calib=2)) == 2
    _one_line_error(capsys.readouterr().err, "No space left")
    assert not (tmp_path / "new").exists() and not (tmp_path / "q.safetensors").exists()


def test_a_failed_write_at_the_end_is_one_line_exit_2_with_nothing_left(run, tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    import torch_ext.lila.quantize as qlila

    def efbig(model, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: IoError(Os { code: 27, kind: FileTooLarge })")

    monkeypatch.setattr(qlila, "save_quantized", efbig)
    out = tmp_path / "new" / "q.safetensors"
    assert cli.main(_quantize(run.checkpoint, out)) == 2
    _one_line_error(capsys.readouterr().err, "FileTooLarge")
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
def test_quantize_past_the_file_size_limit_for_real(run, tmp_path):
    import resource

    out = tmp_path / "q.safetensors"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    res = _lila(_quantize(run.checkpoint, out), preexec_fn=limit)
    assert res.returncode == 2, res.stderr
    _one_line_error(res.stderr, str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no file, no temporary


def test_calibration_windows_are_built_as_they_are_read():
    import tracemalloc

    from torch_ext.lila.quantize import calibration_windows

    tokens = np.arange(100_000, dtype=np.uint16)
    tracemalloc.start()
    try:
        b = calibration_windows(tokens, steps=200_000, batch_size=4, block_size=16, seed=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(b) == 200_000 and peak < 1 << 20  # all batches at once would be 100 MB
    assert torch.equal(b[123_456], b[123_456]) and not torch.equal(b[0], b[1])
    assert b[-1].shape == (4, 16) and b[-1].dtype == torch.int64
    with pytest.raises(ValueError, match="more than the maximum"):
        calibration_windows(tokens, steps=10**9, batch_size=4, block_size=16)


# ------------------------------------------------------------------ item 8: a closed pipe


def test_eval_into_a_closed_pipe_exits_quietly(run, tiny_args):
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written: `lila eval ... | head -0`
    try:
        res = _lila(["eval", run.checkpoint, "--no-ranks", "--data", tiny_args["data"], "--split", "validation",
                     "--cache-dir", tiny_args["cache_dir"]], stdout=w, stderr=subprocess.PIPE)
    finally:
        os.close(w)
    assert res.returncode == cli.EXIT_BROKEN_PIPE == 141
    assert "error" not in res.stderr.lower() and "Exception" not in res.stderr, res.stderr


# ------------------------------------------------------------------ item 8: LilaTransformer.save is atomic


def test_model_save_is_atomic(run, tmp_path, monkeypatch):
    import torch_ext.model as M

    path = Path(run.out) / "model.safetensors"
    before = path.read_bytes()
    model = LilaTransformer.load(path)

    def half_then_fail(fd, data):
        os.write(fd, data[: len(data) // 2])
        os.close(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(M, "_write_all", half_then_fail, raising=False)
    with pytest.raises(OSError, match="No space left"):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")) == []
    monkeypatch.undo()
    model.save(tmp_path / "m.safetensors")
    assert LilaTransformer.load(tmp_path / "m.safetensors").config == model.config


# ------------------------------------------------------------------ item 9: a run's model.safetensors


def test_quantize_and_eval_take_a_runs_model_file(run, tiny_args, tmp_path, capsys):
    model_file = Path(run.out) / "model.safetensors"
    ck = T.load_checkpoint(model_file)
    assert ck.step == run.step and ck.meta["run_checkpoint"] == run.checkpoint
    assert ck.meta["tokenizer_fingerprint"] == T.load_checkpoint(run.checkpoint).meta["tokenizer_fingerprint"]
    out = tmp_path / "q.safetensors"
    corpus = ["--data", tiny_args["data"], "--cache-dir", tiny_args["cache_dir"]]
    assert cli.main(_quantize(model_file, out, "--calib-batch-size", "2", *corpus, calib=2)) == 0
    assert f"checkpoint {model_file} (step {run.step})" in capsys.readouterr().out
    assert T.load_checkpoint(out).step == run.step
    j = tmp_path / "e.json"
    assert cli.main(["eval", str(model_file), "--no-ranks", *corpus, "--split", "validation",
                     "--json", str(j)]) == 0
    assert json.loads(j.read_text())["bpc"] == pytest.approx(run.val.bpc, rel=1e-6)
    # out of its run directory: no metadata, the byte tokenizer; still quantized without calibration
    alone = tmp_path / "alone" / "model.safetensors"
    alone.parent.mkdir()
    alone.write_bytes(model_file.read_bytes())
    assert T.load_checkpoint(alone).meta == {}
    assert cli.main(_quantize(alone, tmp_path / "q2.safetensors")) == 0
    assert cli.main(_quantize(alone, tmp_path / "q3.safetensors", calib=2)) == 2
    _one_line_error(capsys.readouterr().err, "does not name the corpus", "--data PATH")
