"""The documentation builds without warnings."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    res = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(tmp_path / "doctrees"), "docs", str(tmp_path / "html")],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def _api_entries():
    """Names listed in docs/api.rst autosummary blocks, per ``currentmodule``."""
    entries: dict[str, set[str]] = {}
    module = None
    with open(os.path.join(ROOT, "docs", "api.rst")) as f:
        for line in f:
            if line.startswith(".. currentmodule::"):
                module = line.split("::")[1].strip()
            elif line.startswith("   ") and not line.strip().startswith(":") and module:
                entries.setdefault(module, set()).add(line.strip())
    return entries


def test_api_reference_lists_every_public_name():
    import leechlib

    entries = _api_entries()
    missing = [n for n in leechlib.__all__ if n != "__version__" and n not in entries["leechlib"]]
    try:
        import torch_ext
    except ImportError:  # pragma: no cover - torch is part of the test extras
        torch_ext = None
    if torch_ext is not None:
        missing += [f"torch_ext.{n}" for n in torch_ext.__all__ if n not in entries["torch_ext"]]
    assert not missing, f"public names missing from docs/api.rst: {missing}"
