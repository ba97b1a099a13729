"""Two gloo processes (torchrun, CPU) match one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from safetensors.torch import load_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _cli_args(args: dict) -> list[str]:
    out = []
    for k, v in args.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def test_two_gloo_processes_match_one_process(tiny_args, tmp_path):
    base = {k: v for k, v in tiny_args.items() if k not in ("out", "batch_size")}
    base.update(steps=4, eval_every=2, grad_accum=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ddp_json = tmp_path / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "torch_ext.lila", "train", *_cli_args(base), "--batch-size", "2", "--out", str(tmp_path / "ddp"),
           "--json", str(ddp_json), "--quiet"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ddp = json.loads(ddp_json.read_text())
    assert ddp["world_size"] == 2

    from torch_ext.lila.train import train

    one = train(dict(base, batch_size=4, out=str(tmp_path / "one")))
    assert one["world_size"] == 1
    a = load_file(ddp["checkpoint"])
    b = load_file(one["checkpoint"])
    keys = [k for k in a if k.startswith("model/")]
    assert keys and sorted(keys) == sorted(k for k in b if k.startswith("model/"))
    for k in keys:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert ddp["final_loss"] == pytest.approx(one["final_loss"], rel=1e-5)
    # the sharded evaluation over both processes covers the same split
    assert ddp["val"]["n_tokens_scored"] == one["val"]["n_tokens_scored"]
    assert ddp["val"]["bpc"] == pytest.approx(one["val"]["bpc"], rel=1e-5)
    assert [h["step"] for h in ddp["history"]] == [h["step"] for h in one["history"]] == [2, 4]
