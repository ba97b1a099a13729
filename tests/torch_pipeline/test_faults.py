"""Faults and bad input in training and evaluation (issue 13): a user's files, non-finite values,
crafted configs, signals, operating-system errors, a user's own text to evaluate."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.torch import load_file, save_file  # noqa: E402

from torch_ext.lila import cli  # noqa: E402
from torch_ext.lila import train as T  # noqa: E402
from torch_ext.model import LilaTransformer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
MARKER = ".lila-run"


def _argv(args: dict, *extra) -> list:
    """``leechlib lila train`` arguments for a TrainConfig dict."""
    argv = ["train"]
    for k, v in args.items():
        flag = f"--{k.replace('_', '-')}"
        if v is True:
            argv.append(flag)
        elif v is not None and v is not False:
            argv += [flag, str(v)]
    return argv + ["--quiet", *extra]


def _lila(argv, timeout=300, **kw):
    """``python -m torch_ext.lila ARGV`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "torch_ext.lila", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kw)


def _one_line_error(err: str, *words):
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# ------------------------------------------------------------------ 1. a user's files


def test_a_users_directory_is_never_overwritten(tiny_args, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": 1}')
    (mine / "model.safetensors").write_bytes(b"my own weights")
    with pytest.raises(ValueError, match=r"not empty and is not a LILA run directory \(no \.lila-run file\)"):
        T.train(dict(tiny_args, out=str(mine)))
    assert cli.main(_argv(dict(tiny_args, out=str(mine)))) == 2
    _one_line_error(capsys.readouterr().err, "mine", "--force")
    assert (mine / "metrics.json").read_text() == '{"mine": 1}'
    assert (mine / "model.safetensors").read_bytes() == b"my own weights"
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.json", "model.safetensors"]
    # --force takes it
    res = T.train(dict(tiny_args, out=str(mine), steps=2, force=True))
    assert res.step == 2 and (mine / MARKER).is_file()
    assert LilaTransformer.load(mine / "model.safetensors").config.d_model == 24


def test_a_run_directory_is_marked_and_can_be_reused(tiny_args, tmp_path):
    out = Path(tiny_args["out"])
    T.train(dict(tiny_args, steps=2, stop_at=1))
    assert json.loads((out / MARKER).read_text()) == {"format": "lila-run", "version": 1}
    res = T.train(dict(tiny_args, steps=2, resume=True))  # our directory: resumes
    assert res.resumed_from == 1 and res.step == 2
    # a run directory of an older version (checkpoints, no marker) still resumes
    (out / MARKER).unlink()
    (out / "ckpt-0000002.safetensors").unlink()
    assert T.train(dict(tiny_args, steps=2, resume=True)).resumed_from == 1
    # a marker of a newer version, or garbage, is not ours
    (out / MARKER).write_text(json.dumps({"format": "lila-run", "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        T.train(dict(tiny_args, steps=2, resume=True))


# ------------------------------------------------------------------ 3. non-finite values

DIVERGE = dict(lr=1e4, warmup=1, steps=30)


def test_a_nan_loss_stops_training_at_its_step(tiny_args, capsys):
    args = dict(tiny_args, attention="learned", align_weight=0.0, save_every=1, **DIVERGE)
    with pytest.raises(T.NonFiniteError, match=r"^step \d+: the (training loss is nan|gradient norm is)") as info:
        T.train(args)
    err = info.value
    assert err.step >= 2 and err.last_good.endswith(f"ckpt-{err.step - 1:07d}.safetensors")
    assert f"latest good checkpoint is {err.last_good!r}: continue from it skipping such steps" in str(err)
    # every checkpoint written is finite, the last one is the step before
    cks = T.list_checkpoints(args["out"])
    assert cks[-1][0] == err.step - 1
    for _, p in cks:
        assert all(torch.isfinite(v).all() for k, v in load_file(str(p)).items() if v.is_floating_point())
    # the command line: exit status 3, the step and the cause on one line
    out2 = str(Path(args["out"]).with_name("cli"))
    assert cli.main(_argv(dict(args, out=out2))) == 3
    _one_line_error(capsys.readouterr().err, f"step {err.step}:", "not finite", "--skip-nonfinite")
    # what the message advises works: --skip-nonfinite may differ on --resume
    res = T.train(dict(args, resume=True, skip_nonfinite=True))
    assert res.resumed_from == err.step - 1 and res.step == 30 and res.skipped_steps >= 1


def test_skip_nonfinite_skips_counts_and_reports(tiny_args, capsys):
    args = dict(tiny_args, attention="learned", align_weight=0.0, skip_nonfinite=True, **DIVERGE)
    logs = []
    res = T.train(args, callback=lambda e: logs.append(e.get("message", "")))
    assert res.step == 30 and res.skipped_steps > 0 and res.to_dict()["skipped_steps"] == res.skipped_steps
    assert any("step skipped (--skip-nonfinite" in m for m in logs)
    ck = T.load_checkpoint(res.checkpoint)  # finite, or it would not load
    assert ck.meta["skipped_steps"] == res.skipped_steps
    assert cli.main(_argv(dict(args, out=args["out"] + "-cli"))) == 0
    assert f"{res.skipped_steps} non-finite steps skipped" in capsys.readouterr().out


def test_diverged_hidden_states_name_the_step_not_the_op(tiny_args):
    # the frozen preset with its alignment loss: the loss's op would say "x is too large"
    with pytest.raises(T.NonFiniteError, match=r"^step \d+: the hidden states diverged") as info:
        T.train(dict(tiny_args, align_weight=0.01, **DIVERGE))
    assert "x is too large" not in str(info.value) and "No checkpoint was written yet" in str(info.value)


def test_huge_hidden_states_are_named_not_x_is_too_large(tiny_args, monkeypatch):
    # residual activations of 1e15 (finite, and LayerNorm keeps the loss finite) are more than
    # the alignment loss's op can take; it said "x is too large: |x|/scale must stay below 2**50"
    init = LilaTransformer.__init__

    def blown_up(self, config):
        init(self, config)
        with torch.no_grad():
            self.wte.weight.mul_(1e17)

    monkeypatch.setattr(LilaTransformer, "__init__", blown_up)
    with pytest.raises(T.NonFiniteError, match=r"^step 1: the hidden states diverged: their largest entry is "
                                               r"\S+e\+1\d, beyond what the alignment loss can score"):
        T.train(dict(tiny_args, align_weight=0.01))


def test_weights_that_become_non_finite_are_never_checkpointed(tiny_args, monkeypatch):
    real_step = torch.optim.AdamW.step
    calls = []

    def poisoning_step(self, *a, **k):
        out = real_step(self, *a, **k)
        calls.append(1)
        if len(calls) == 3:  # the third update leaves an infinite weight (finite loss and gradients)
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    with pytest.raises(T.NonFiniteError, match="step 3: the weights became non-finite") as info:
        T.train(dict(tiny_args, save_every=1))
    assert info.value.last_good.endswith("ckpt-0000002.safetensors")
    assert [s for s, _ in T.list_checkpoints(tiny_args["out"])] == [1, 2]


def _nan_copy(src: Path, dst: Path):
    """A copy of the checkpoint ``src`` whose weights hold a NaN (what older versions could write)."""
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["model/wte.weight"][0, 0] = float("nan")
    meta["step"] = dst.name[5:12].lstrip("0")
    save_file(tensors, str(dst), metadata=meta)


def test_a_non_finite_checkpoint_is_refused_and_never_replaces_a_good_one(tiny_args, tmp_path, capsys):
    out = Path(tiny_args["out"])
    T.train(dict(tiny_args, steps=6, save_every=1, keep=2, stop_at=3))
    good = out / "ckpt-0000003.safetensors"
    bad = out / "ckpt-0000004.safetensors"
    _nan_copy(good, bad)
    # load_checkpoint and `lila eval` refuse it
    with pytest.raises(T.CheckpointError, match="non-finite values .*model/wte.weight"):
        T.load_checkpoint(bad)
    assert cli.main(["eval", str(bad), "--no-ranks"]) == 2
    _one_line_error(capsys.readouterr().err, "non-finite")
    # resuming from it is refused, naming the good one; with --keep 2 nothing good was deleted
    with pytest.raises(T.CheckpointError, match=f"latest good checkpoint is {str(good)!r}"):
        T.train(dict(tiny_args, steps=6, save_every=1, keep=2, resume=True))
    assert good.exists()
    # rotation keeps the latest finite checkpoint when the newer ones are not
    _nan_copy(good, out / "ckpt-0000005.safetensors")
    T.prune_checkpoints(out, 2)
    assert [s for s, _ in T.list_checkpoints(out)] == [3, 4, 5]
    # save_checkpoint never writes one
    ck = T.load_checkpoint(good)
    with torch.no_grad():
        ck.model.wte.weight[0, 0] = float("inf")
    with pytest.raises(T.NonFiniteError, match="refusing to write"):
        T.save_checkpoint(out / "ckpt-0000009.safetensors", ck.model, step=9)
    assert not (out / "ckpt-0000009.safetensors").exists()


# ------------------------------------------------------------------ 4. crafted configs


def _crafted(tmp_path, tiny_args, **config):
    """The exported model file of a tiny run, with its stored config replaced."""
    res = T.train(dict(tiny_args, steps=1))
    src = Path(res.out) / "model.safetensors"
    tensors = load_file(str(src))
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    cfg = {**json.loads(meta["lila_config"]), **config}
    model_file = tmp_path / "crafted.safetensors"
    save_file(tensors, str(model_file), metadata={**meta, "lila_config": json.dumps(cfg)})
    ck_src = Path(res.checkpoint)
    with safe_open(str(ck_src), framework="pt") as f:
        ck_meta = f.metadata()
        ck_tensors = {k: f.get_tensor(k) for k in f.keys()}
    ck_file = tmp_path / "ckpt-0000001.safetensors"
    save_file(ck_tensors, str(ck_file), metadata={**ck_meta, "config": json.dumps(cfg)})
    return model_file, ck_file


@pytest.mark.parametrize("config, match", [
    (dict(d_model=96000, n_layer=64, n_head=1), "need at least .* bytes of weights, the file has"),
    (dict(n_layer=2, vocab_size=1), "stores blocks \\[0\\], the config has n_layer=2"),
    (dict(vocab_size=300), "tensor .*wte.weight' has shape \\(257, 24\\), the config implies \\(300, 24\\)"),
    (dict(mlp_ratio=2), "c_fc.weight' has shape \\(96, 24\\), the config implies \\(48, 24\\)"),
])
def test_a_crafted_config_is_refused_before_anything_is_built(tiny_args, tmp_path, monkeypatch, capsys, config,
                                                            match):
    model_file, ck_file = _crafted(tmp_path, tiny_args, **config)

    def no_build(self, *a, **k):
        raise AssertionError("a model was built from a config the file does not bear out")

    monkeypatch.setattr(LilaTransformer, "__init__", no_build)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        LilaTransformer.load(model_file)
    with pytest.raises(T.CheckpointError, match=match):
        T.load_checkpoint(ck_file)
    assert time.perf_counter() - t0 < 5.0
    assert cli.main(["eval", str(ck_file), "--no-ranks"]) == 2
    _one_line_error(capsys.readouterr().err, "invalid model config")


# ------------------------------------------------------------------ 5. signals


@pytest.fixture(autouse=True)
def _sigint_default():
    # a shell's background job (``cmd &`` without job control) inherits SIGINT ignored, and
    # the trainer rightly leaves an ignored signal alone: these tests want Python's default
    old = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _default_sigint_in_child():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then installs its KeyboardInterrupt handler


def test_an_ignored_sigint_stays_ignored():
    from torch_ext._signals import StopSignals

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with StopSignals() as stop:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested is None
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_the_step_and_resume_is_bit_identical(tiny_args, tmp_path, name):
    sig = getattr(signal, name)
    args = dict(tiny_args, steps=6, save_every=4)

    def send_at_step_3(e):
        if e["event"] == "step" and e["step"] == 3:
            os.kill(os.getpid(), sig)

    part = T.train(args, callback=send_at_step_3)
    assert part.interrupted and part.interrupted_by == name and part.step == 3
    assert part.checkpoint.endswith("ckpt-0000003.safetensors") and part.val is None
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are given back
    rest = T.train(dict(args, resume=True))
    full = T.train(dict(args, out=str(tmp_path / "full")))
    assert rest.resumed_from == 3 and rest.step == 6
    a, b = load_file(rest.checkpoint), load_file(full.checkpoint)
    for k in a:
        if k.startswith(("model/", "optim/")):
            assert torch.equal(a[k], b[k]), k
    assert rest.final_loss == full.final_loss


def test_a_signal_during_an_evaluation_stops_it_and_resume_redoes_it(tiny_args, tmp_path, monkeypatch):
    args = dict(tiny_args, steps=6, eval_every=2, save_every=4)
    full = T.train(dict(args, out=str(tmp_path / "full")))
    real = T.bits_per_character
    calls = []

    def signal_in_the_second_evaluation(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # the evaluation of step 4 (a single process stops it at once)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(T, "bits_per_character", signal_in_the_second_evaluation)
    part = T.train(args)
    assert part.interrupted_by == "SIGTERM" and part.step == 4 and [h["step"] for h in part.history] == [2]
    monkeypatch.undo()
    rest = T.train(dict(args, resume=True))
    assert rest.history == full.history and rest.final_loss == full.final_loss
    assert rest.val.nll_bits == full.val.nll_bits


def test_a_second_signal_stops_at_once_without_a_checkpoint(tiny_args):
    def send_twice(e):
        if e["event"] == "step" and e["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt) as info:
        T.train(dict(tiny_args, steps=6, save_every=2), callback=send_twice)
    assert info.value.signal == "SIGTERM" and info.value.hard
    assert [s for s, _ in T.list_checkpoints(tiny_args["out"])] == [2]


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_the_command_line_exits_cleanly_on_a_signal(tiny_args, name, code):
    args = dict(tiny_args, steps=100_000, save_every=10**6)
    proc = subprocess.Popen([sys.executable, "-m", "torch_ext.lila", *_argv(args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint_in_child)
    try:
        for line in proc.stderr:  # the run has started: its first log line after the data
            if line.startswith("run "):
                break
        time.sleep(0.5)
        proc.send_signal(getattr(signal, name))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert f"interrupted by {name} at step" in out and "Traceback" not in err
    step = int(out.split(" at step ")[1].split(";")[0])
    assert T.load_checkpoint(tiny_args["out"]).step == step
    res = T.train(dict(args, resume=True, stop_at=step + 1))
    assert res.resumed_from == step and res.step == step + 1


def test_stale_temporaries_of_ours_are_removed_and_a_users_are_kept(tiny_args):
    out = Path(tiny_args["out"])
    T.train(dict(tiny_args, steps=4, stop_at=2))
    ours = [".ckpt-0000003.safetensors.a1b2c3d4.tmp", ".metrics.json.zz_9yy8x.tmp", ".model.safetensors.00012345.tmp"]
    users = ["notes.tmp", ".ckpt-notes.tmp", ".mine.a1b2c3d4.tmp", "ckpt-0000003.safetensors.a1b2c3d4.tmp"]
    for n in ours + users:
        (out / n).write_bytes(b"\0" * 10)
    T.train(dict(tiny_args, steps=4, resume=True))
    names = {p.name for p in out.iterdir()}
    assert not names & set(ours) and set(users) <= names


# ------------------------------------------------------------------ 6. operating-system errors


def test_out_that_is_a_file_or_under_one_is_one_line_exit_2(tiny_args, tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("x")
    assert cli.main(_argv(dict(tiny_args, out=str(f)))) == 2
    _one_line_error(capsys.readouterr().err, "is a file, not a run directory")
    assert cli.main(_argv(dict(tiny_args, out=str(f / "run")))) == 2
    _one_line_error(capsys.readouterr().err, "cannot be created", "a-file")
    assert f.read_text() == "x"


def test_unwritable_outputs_are_refused_before_any_work(tiny_args, tmp_path, capsys, monkeypatch):
    import torch_ext.lila._rundir as R
    from torch_ext.lila import data as D

    started = []
    monkeypatch.setattr(T, "load_run_data", lambda *a, **k: started.append(1))
    # --json in a missing folder: refused before the run directory or the data are touched
    assert cli.main(_argv(dict(tiny_args), "--json", str(tmp_path / "missing" / "x.json"))) == 2
    _one_line_error(capsys.readouterr().err, "--json", "does not exist")
    assert not Path(tiny_args["out"]).exists() and not started

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(R, "atomic_write", refuse)  # a read-only --out
    assert cli.main(_argv(dict(tiny_args))) == 2
    _one_line_error(capsys.readouterr().err, "cannot write the run directory", "Permission denied")
    assert not started
    monkeypatch.undo()
    monkeypatch.setattr(D.tempfile, "mkdtemp", refuse)  # a read-only --cache-dir
    assert cli.main(_argv(dict(tiny_args, cache_dir=str(tmp_path / "ro-cache")))) == 2
    _one_line_error(capsys.readouterr().err, "cannot write the token cache", "--cache-dir")


@pytest.mark.skipif(IS_ROOT or not hasattr(os, "geteuid"), reason="root writes into read-only folders")
def test_a_read_only_out_and_cache_for_real(tiny_args, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = _lila(_argv(dict(tiny_args, out=str(ro / "run"))))
        assert res.returncode == 2
        _one_line_error(res.stderr, "Permission denied")
        res = _lila(_argv(dict(tiny_args, cache_dir=str(ro / "cache"))))
        assert res.returncode == 2
        _one_line_error(res.stderr, "cannot write the token cache")
    finally:
        ro.chmod(0o755)


def test_os_errors_in_a_subprocess_are_one_line(tiny_args, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    res = _lila(_argv(dict(tiny_args, out=str(f / "run"))))
    assert res.returncode == 2
    _one_line_error(res.stderr, "cannot be created")


# ------------------------------------------------------------------ 9, 10. data the user hands in


def test_non_utf8_data_and_a_fifo_on_the_command_line(tiny_args, tmp_path, capsys):
    d = tmp_path / "latin1"
    d.mkdir()
    for i in range(4):
        (d / f"doc{i}.txt").write_bytes(("la première nuit, déjà " * 20 + "\n").encode("latin-1"))
    args = dict(tiny_args, data=str(d), val_fraction=0.5, steps=1)
    assert cli.main(_argv(args)) == 2
    _one_line_error(capsys.readouterr().err, "is not valid utf-8: byte 0xe8 at offset 8", "--encoding")
    assert cli.main(_argv(dict(args, encoding="latin-1"))) == 0
    assert cli.main(_argv(dict(args, out=args["out"] + "-2", encoding_errors="replace"))) == 0
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe")
        assert cli.main(_argv(dict(args, data=str(tmp_path / "pipe"), out=args["out"] + "-3"))) == 2
        line = _one_line_error(capsys.readouterr().err, "is a FIFO")
        assert "does not exist" not in line


def test_val_fraction_says_what_it_accepts(tiny_args, capsys):
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"val_fraction must be in \(0.0, 1.0\), got"):
            T.TrainConfig(val_fraction=bad).validate()
    T.TrainConfig(val_fraction=0.999).validate()


# ------------------------------------------------------------------ 11. a user's own text


@pytest.fixture
def tiny_checkpoint(tiny_args):
    return T.train(dict(tiny_args, steps=2)).checkpoint


def test_eval_scores_all_of_a_single_document(tiny_checkpoint, tmp_path, capsys):
    from torch_ext.lila.data import ByteTokenizer, TokenSplit
    from torch_ext.lila.evaluate import evaluate

    held = tmp_path / "held-out.txt"
    text = "Now is the winter of our discontent\nmade glorious summer by this sun of York;\n"
    held.write_text(text)
    j = tmp_path / "e.json"
    assert cli.main(["eval", tiny_checkpoint, "--data", str(held), "--json", str(j), "--no-ranks",
                     "--cache-dir", str(tmp_path / "c")]) == 0
    res = json.loads(j.read_text())
    assert res["split"] == "all" and res["n_docs"] == 1 and res["n_chars"] == len(text)
    # the same definition of bits per character as everywhere: the stream [EOS] text [EOS]
    ck = T.load_checkpoint(tiny_checkpoint)
    ref = evaluate(ck.model, TokenSplit.from_texts([text], ByteTokenizer()), "all", eos_id=256, ranks=False)
    assert res["nll_bits"] == pytest.approx(ref.nll_bits, rel=1e-9)
    assert res["bpc"] == pytest.approx(ref.nll_bits / len(text), rel=1e-9)


def test_eval_of_a_folder_defaults_to_all_of_it(tiny_checkpoint, corpus_dir, tmp_path, capsys):
    j = tmp_path / "all.json"
    assert cli.main(["eval", tiny_checkpoint, "--data", str(corpus_dir), "--json", str(j), "--no-ranks"]) == 0
    res = json.loads(j.read_text())
    assert res["split"] == "all" and res["n_docs"] == 12
    assert res["n_chars"] == sum(len(p.read_text()) for p in corpus_dir.iterdir())
    j2 = tmp_path / "val.json"
    assert cli.main(["eval", tiny_checkpoint, "--data", str(corpus_dir), "--split", "validation", "--json",
                     str(j2), "--no-ranks"]) == 0
    assert json.loads(j2.read_text())["n_docs"] < 12
    # eval --json into a folder: refused before any work
    assert cli.main(["eval", tiny_checkpoint, "--json", str(tmp_path)]) == 2
    _one_line_error(capsys.readouterr().err, "--json", "is a folder")
