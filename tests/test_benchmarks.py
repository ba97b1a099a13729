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


@pytest.mark.parametrize("path", SCRIPTS, ids=os.path.basename)
def test_benchmark_script_imports(path):
    if os.path.basename(path) in TORCH_SCRIPTS:
        pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("bench_" + os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert callable(getattr(mod, "main", None))


def test_bench_encode_smoke(capsys):
    """A tiny run of the encoder benchmark: it runs and both encoders give the same codes."""
    path = os.path.join(ROOT, "benchmarks", "bench_encode.py")
    spec = importlib.util.spec_from_file_location("bench_bench_encode_smoke", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
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

    path = os.path.join(ROOT, "benchmarks", "bench_generate.py")
    spec = importlib.util.spec_from_file_location("bench_bench_generate_smoke", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
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
    path = os.path.join(ROOT, "benchmarks", "quantize_models.py")
    spec = importlib.util.spec_from_file_location("bench_quantize_models_tables", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
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
