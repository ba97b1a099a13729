"""Packaging contracts: a light import, the CLI, the jit policy."""

import json
import os
import subprocess
import sys

import pytest

import leechlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=ROOT, timeout=600
    )


def test_import_is_light():
    code = (
        "import sys, json, leechlib\n"
        "from leechlib import _mog, golay, lattice, cli\n"
        "heavy = [m for m in ('torch', 'numba', 'scipy', 'sympy', 'networkx', 'torch_ext')"
        " if m in sys.modules]\n"
        "caches = [getattr(_mog, n) for n in dir(_mog) if hasattr(getattr(_mog, n), 'cache_info')]\n"
        "assert len(caches) >= 8, caches\n"
        "built = [f.__name__ for f in caches + [golay._decode_table, lattice._code]"
        " if f.cache_info().currsize]\n"
        "print(json.dumps({'heavy': heavy, 'built': built}))\n"
    )
    res = _run(code)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out == {"heavy": [], "built": []}


def test_version_and_public_names():
    assert leechlib.__version__
    for name in leechlib.__all__:
        assert hasattr(leechlib, name), name


def test_cli_info_passes():
    res = subprocess.run(
        [sys.executable, "-m", "leechlib", "info"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FAIL" not in res.stdout
    assert res.stdout.count("PASS") >= 15


def test_cli_demo_small():
    res = subprocess.run(
        [sys.executable, "-m", "leechlib", "demo", "--points", "2000", "--no-lila"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "corrected 3 errors: True" in res.stdout


def test_cli_usage_errors():
    res = subprocess.run(
        [sys.executable, "-m", "leechlib", "nonsense"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 2
    assert "invalid choice" in res.stderr


def test_jit_policy_cache_opt_out():
    res = _run("import leechlib._jit as j; print(j.CACHE)", env={"LEECHLIB_NO_CACHE": "1"})
    assert res.stdout.strip() == "False"


@pytest.mark.parametrize("workers, exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError)])
def test_workers_validation(workers, exc):
    from leechlib._jit import resolve_workers

    with pytest.raises(exc, match="workers"):
        resolve_workers(workers)


def test_readme_examples_run():
    import doctest

    res = doctest.testfile(
        os.path.join(ROOT, "README.md"), module_relative=False, optionflags=doctest.ELLIPSIS
    )
    assert res.attempted >= 2 and res.failed == 0


def test_readme_test_command_is_what_ci_runs():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    cmds = [line for line in readme.splitlines() if line.startswith("python3 -m venv")]
    assert len(cmds) == 2
    assert cmds[1] in ci


def _torch_ext_imports(path):
    """``(function, line)`` of every import of torch_ext in a file (``<module>`` at top level)."""
    import ast

    with open(path) as f:
        tree = ast.parse(f.read())
    found, stack = [], ["<module>"]

    class Visitor(ast.NodeVisitor):
        def visit_FunctionDef(self, node):
            stack.append(node.name)
            self.generic_visit(node)
            stack.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Import(self, node):
            if any(a.name.split(".")[0] == "torch_ext" for a in node.names):
                found.append((stack[-1], node.lineno))

        def visit_ImportFrom(self, node):
            if (node.module or "").split(".")[0] == "torch_ext":
                found.append((stack[-1], node.lineno))

    Visitor().visit(tree)
    return found


def test_leechlib_imports_torch_ext_only_in_the_torch_ext_dispatch():
    found = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "leechlib")):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                for fn, _ in _torch_ext_imports(path):
                    found.setdefault(os.path.relpath(path, ROOT), []).append(fn)
    # the one dispatch function, for `lila`, `quantize` and `eval-ppl`
    assert set(found) == {os.path.join("leechlib", "cli.py")}
    assert set(found[os.path.join("leechlib", "cli.py")]) == {"_torch_ext_cli"}


def test_cli_folder_commands_dispatch_to_torch_ext():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    for cmd in ("quantize", "eval-ppl"):
        res = subprocess.run([sys.executable, "-m", "leechlib", cmd, "--help"], capture_output=True,
                             text=True, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        assert f"usage: leechlib {cmd}" in res.stdout


def test_cli_lila_dispatches_to_torch_ext():
    pytest.importorskip("torch")
    res = subprocess.run(
        [sys.executable, "-m", "leechlib", "lila", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr
    assert "usage: leechlib lila {train,eval,demo,quantize}" in res.stdout
    res = subprocess.run(
        [sys.executable, "-m", "leechlib", "lila", "demo", "--seconds", "0"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert res.returncode == 2 and "--seconds must be positive" in res.stderr


def test_cli_without_torch_ext_says_so():
    block = "import sys; sys.modules['torch_ext'] = None\nfrom leechlib.cli import main\n"
    res = _run(block + "sys.exit(main(['lila', 'train']))")
    assert res.returncode == 2
    assert "leechlib lila needs torch and torch_ext" in res.stderr and "Traceback" not in res.stderr
    res = _run(block + "sys.exit(main(['demo', '--points', '2000']))")
    assert res.returncode == 0, res.stderr
    assert "(LILA section skipped:" in res.stdout and "install the [torch] extra" in res.stdout


_THREADS = r"""
import json, threading
import numpy as np
import numba
import leechlib
from leechlib import BallCodebook, GolayCode, nearest_minimal_vector, nearest_point
from leechlib._jit import layer_is_threadsafe
from leechlib.baselines import E8Quantizer

x = np.random.default_rng(0).standard_normal((3000, 24))
cb = BallCodebook(8, coords="int")
idx = np.arange(0, cb.size, cb.size // 500)
e8 = E8Quantizer(4)
want = {"p": nearest_point(x), "v": nearest_minimal_vector(x[:500]),
        "g": GolayCode().decode_soft(x[:500]), "pts": cb.point(idx), "e8": e8.encode(5 * x[:, :8])}
errors = []

def work(k):
    try:
        for _ in range(6):
            assert (nearest_point(x, workers=None if k % 2 else -1) == want["p"]).all()
            assert (nearest_minimal_vector(x[:500]) == want["v"]).all()
            assert (GolayCode().decode_soft(x[:500], workers=-1) == want["g"]).all()
            assert (cb.index(cb.point(idx)) == idx).all()
            assert (e8.encode(5 * x[:, :8], workers=-1) == want["e8"]).all()
    except Exception as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"layer": numba.threading_layer(), "safe": layer_is_threadsafe(),
                  "errors": errors}))
"""


@pytest.mark.parametrize("layer", ["workqueue", "default"])
def test_concurrent_calls_from_python_threads(layer):
    # Numba's workqueue layer (its fallback without OpenMP or TBB) aborted the process
    # when two Python threads ran parallel kernels at once; leechlib serialises its
    # kernels there and lets thread-safe layers run them side by side
    res = _run(_THREADS, env={"NUMBA_THREADING_LAYER": layer, "NUMBA_NUM_THREADS": "2"})
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["errors"] == []
    if layer == "workqueue":
        assert out == {"layer": "workqueue", "safe": False, "errors": []}
    else:
        assert out["safe"] == (out["layer"] in ("tbb", "omp"))


@pytest.mark.parametrize("argv, match", [
    (["--points", "-5"], "--points must be >= 1, got -5"),
    (["--points", "0"], "--points must be >= 1, got 0"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--seconds", "-1"], "--seconds must be positive and finite, got -1.0"),
    (["--seconds", "0"], "--seconds must be positive and finite, got 0.0"),
    (["--seconds", "nan"], "--seconds must be positive and finite, got nan"),
])
def test_cli_demo_checks_its_arguments_before_any_work(argv, match):
    res = subprocess.run([sys.executable, "-m", "leechlib", "demo", *argv], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert match in res.stderr and "Traceback" not in res.stderr
    assert res.stdout == ""  # the tour has not started


def test_cli_demo_caps_points(capsys):
    import argparse

    from leechlib import cli

    args = argparse.Namespace(points=10**12, seed=0, seconds=60.0)  # would be 175 TiB of points
    assert cli._check_demo_args(args) is None
    assert args.points == cli.DEMO_MAX_POINTS
    assert f"--points 1,000,000,000,000 is more than the demo decodes; using {cli.DEMO_MAX_POINTS:,}" \
        in capsys.readouterr().out
