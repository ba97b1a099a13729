"""Every benchmark script imports (its imports of the library still resolve).

The benchmarks are run by hand, not by the suite; this catches a script left behind
by a refactor of the names it imports.  ``main()`` is not run.
"""

import glob
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: modules of benchmarks/ that the scripts and the tests import: not scripts (no ``main``)
MODULES = {"original_encoders.py", "trio_original_encoder.py", "_vq_data.py"}
SCRIPTS = sorted(
    p for p in glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
    if not os.path.basename(p).startswith("test_") and os.path.basename(p) not in MODULES
)
TORCH_SCRIPTS = {"bench_torch_ops.py", "gpu_check.py", "kernel_neutrality.py", "lila_ablation.py",
                 "lila_speed.py", "bench_rtn_scales.py",
                 "quantize_lila.py", "vq_autoencoder.py", "bench_qmatmul.py", "bench_generate.py"}


def _load(name: str, alias: str | None = None):
    """The benchmark script ``benchmarks/<name>`` as a module (benchmarks/ is not a package)."""
    path = name if os.path.isabs(name) else os.path.join(ROOT, "benchmarks", name)
    spec = importlib.util.spec_from_file_location(alias or "bench_" + os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", SCRIPTS, ids=os.path.basename)
def test_benchmark_script_imports(path):
    if os.path.basename(path) in TORCH_SCRIPTS:
        pytest.importorskip("torch")
    mod = _load(path)
    assert callable(getattr(mod, "main", None))


def test_bench_encode_smoke(capsys):
    """A tiny run of the encoder benchmark: it runs and both encoders give the same codes."""
    mod = _load("bench_encode.py", "bench_bench_encode_smoke")
    assert mod.main(["--blocks", "48", "--rates", "2.0", "--reps", "1", "--stats"]) == 0
    out = capsys.readouterr().out
    assert out.count("| yes |") == 4 and "| NO |" not in out
    assert "cosets visited" in out and out.count("%") == 4  # one row per source and quantizer


def test_bench_generate_smoke(tmp_path, capsys):
    """A tiny run of the end-to-end generation benchmark (the float arm and one method run
    from its codes, each in its own process): a table row per arm, and the JSON says
    what each holds; a second run uses the quantized file of the first."""
    pytest.importorskip("torch")
    import json

    mod = _load("bench_generate.py", "bench_bench_generate_smoke")
    out_json = tmp_path / "gen.json"
    assert mod.main(["--small", "--methods", "rtn", "--arms", "codes", "--tokens", "4", "--warmup", "1",
                     "--work-dir", str(tmp_path / "work"), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "184,320 weights in nn.Linear layers" in out and "no claim on quality" in out
    assert "| float " in out and "| rtn codes " in out and "| rtn cache " not in out
    res = json.loads(out_json.read_text())
    rows = {r["arm"]: r for r in res["rows"]}
    assert rows["float"]["linear_bits_per_weight"] == 32.0
    assert rows["rtn codes"]["linear_bits_per_weight"] < 3.0  # codes and scales only
    assert all(r["tok_s"]["1"] > 0 and r["load_s"] > 0 for r in rows.values())
    args = mod.parse_args(["--small", "--methods", "rtn", "--work-dir", str(tmp_path / "work")])
    assert mod.prepare(args, res["config"])[1]["rtn"]["path"] == rows["rtn codes"]["path"]
    assert "quantizing" not in capsys.readouterr().out  # the files of the first run are used


def test_quantize_models_tables_and_doc_blocks(tmp_path):
    """The results tables of ``quantize_models.py``: loss models (LILA, GPT-2) show the
    change against the float model, MiniLM its cosine; ``--update-doc`` rewrites only
    the marked blocks."""
    mod = _load("quantize_models.py", "bench_quantize_models_tables")
    cell = {"bits_per_weight": 2.0625, "seconds": 3.0, "layers": 16, "kept": None}
    res = {"gpt2": {"desc": "A GPT-2.", "float": {"score": 2.5},
                    "rtn-2 plain": {**cell, "score": 2.6},
                    "rtn-2 +both": {**cell, "score": 2.55, "kept": 15}},
           "minilm": {"desc": "MiniLM.", "float": {"score": 1.0},
                      "rtn-2 plain": {**cell, "score": 0.5371}}}
    md = mod.md_table(res, "gpt2")
    assert "Δ bits/token" in md and "+0.1000" in md and "+0.0500 (15/16)" in md
    assert "| rtn-3 | — | — |" in md  # not measured
    assert "0.5371" in mod.md_table(res, "minilm") and "mean cosine" in mod.md_table(res, "minilm")
    doc = tmp_path / "doc.rst"
    doc.write_text("Intro\n\n.. models-gpt2-begin\n\nold\n\n.. models-gpt2-end\n\nOutro\n")
    assert mod.update_doc(doc, res) == ["gpt2"]
    text = doc.read_text()
    assert "old" not in text and text.startswith("Intro") and text.rstrip().endswith("Outro")
    assert "Float model: 2.5000 bits/token." in text and "     - +0.1000" in text


def test_vq_autoencoder_arms():
    """Every arm of the VQ autoencoder benchmark that this checkout supports: right
    shapes, one int64 index per 24-number block, finite values and gradients, and the
    nominal rate (bits per latent number) within 4 %; FSQ's 2-level mid-rise grid is
    the sign; the E8 ball's local search agrees with a brute-force search."""
    torch = pytest.importorskip("torch")
    mod = _load("vq_autoencoder.py", "bench_vq_autoencoder_arms")
    torch.manual_seed(0)
    z = torch.randn(64, 48, requires_grad=True)
    for key, _label, rate, make in mod.ARMS:
        q = make(2).train()
        out, idx, aux = q(z)
        assert out.shape == z.shape and idx.shape == (64, 2) and idx.dtype == torch.int64, key
        assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(aux)), key
        (out.sum() + aux).backward()
        assert bool(torch.isfinite(z.grad).all()), key
        z.grad = None
        if rate:
            assert abs(q.bits / 24 / rate - 1) < 0.04, (key, q.bits)
    out, _, _ = mod.FSQ([2] * 24, 2, midrise=True)(z)
    assert torch.equal(out.detach(), torch.where(z > 0, 1.0, -1.0))
    assert all(v == 1.0 for v in mod.check_e8(n=400).values())
    from torch_ext import LeechVQ  # the benchmark's own E8 ball is LeechVQ's codebook="e8"

    s = mod._e8_scale(10)
    x = torch.randn(500, 24) * 1.3
    lib = LeechVQ(24, codebook="e8", bits=2, scale=s).eval()
    assert torch.allclose(lib(x)[0], mod.E8Ball(1, 10, s).eval()(x)[0], atol=1e-5)


def test_vq_autoencoder_smoke(capsys):
    """A tiny run on the digits (when scikit-learn is installed): tables and verdict."""
    pytest.importorskip("torch")
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("the digits ship with scikit-learn (the examples extra)")
    mod = _load("vq_autoencoder.py", "bench_vq_autoencoder_arms")
    assert mod.main(["--quick", "--datasets", "digits", "--arms", "fsq-2,leech-ball-2",
                     "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "| FSQ [4]*24 " in out and "| LeechVQ ball M=26 " in out and "**digits, 2 bits/dim**, against FSQ" in out


def test_vq_autoencoder_estimator_costs():
    """The estimator cost table: one row per estimator of the 2-bit ball, the reference
    (straight-through) first at ratio 1, every time positive."""
    pytest.importorskip("torch")
    mod = _load("vq_autoencoder.py", "bench_vq_autoencoder_arms")
    rows = mod.estimator_rows(64, 1)
    assert [r[0].split("=")[-1] for r in rows] == ["'ste'", "'rotation'", "'noise'", "'soft'"]
    assert rows[0][2] == 1.0 and all(r[1] > 0 for r in rows)
