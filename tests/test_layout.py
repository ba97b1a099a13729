"""The shape of the library code, checked by parsing it (nothing is imported)."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules(package):
    """{dotted module name: path} of the Python files of ``package``."""
    out = {}
    base = os.path.join(ROOT, package)
    for folder, _, files in os.walk(base):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def _tree(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def test_no_exec_or_eval_in_library_code():
    found = []
    for package in ("leechlib", "torch_ext"):
        for name, path in _modules(package).items():
            for node in ast.walk(_tree(path)):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in ("exec", "eval")):
                    found.append(f"{name}:{node.lineno} {node.func.id}")
    assert not found, found
