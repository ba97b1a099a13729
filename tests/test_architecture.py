"""The walls between the project's packages, checked on the source (``ast``; nothing is imported).

* no import cycles among the modules of ``leechlib`` and ``torch_ext``: neither among
  the imports that run when a module is imported (module level), nor counting the
  lazy imports inside functions;
* ``leechlib`` imports nothing from ``torch_ext``, except ``leechlib/cli.py``, whose
  dispatch to the ``lila`` commands is lazy (inside a function, so ``import
  leechlib.cli`` needs no torch) and uses public ``torch_ext`` names only;
* ``torch_ext`` imports no private module or name of ``leechlib`` (``leechlib._…``,
  ``from leechlib.x import _y``) and reads no private attribute that only leechlib
  defines: it goes through the public API and the seam :mod:`leechlib.kernels`;
* torch_ext stands in three wings by layer: :mod:`torch_ext.ops` imports nothing of
  torch_ext above it; the model pieces, :mod:`torch_ext.quantize` and
  :mod:`torch_ext.vq` never import :mod:`torch_ext.lila`; the general quantizer knows no
  model class; every torch_ext module belongs to a wing (or the small base);
* inside torch_ext no project module is imported inside a function (torch is loaded
  already, so a lazy import could only hide an arrow);
* no ``exec``/``eval`` in library code;
* a library file over 900 lines is on a review list that says why it is one concept.

Checks that the code does not satisfy yet are marked ``xfail(strict=True)`` with the
offenders in the reason; an unexpected pass fails, so that the mark is removed as soon
as the work lands.
"""

from __future__ import annotations

import ast
import functools
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("leechlib", "torch_ext")
#: above this many lines a library file needs an entry in REVIEWED (one concept, said why)
REVIEW_LINES = 900
#: the one module of leechlib allowed to import torch_ext (its ``lila`` dispatch)
DISPATCH = "leechlib.cli"


# ---------------------------------------------------------------------------
# the source model: modules, their imports, calls and attribute reads
# ---------------------------------------------------------------------------


@functools.cache
def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the packages."""
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@functools.cache
def _tree(module: str) -> ast.Module:
    path = _modules()[module]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _known(name: str) -> str | None:
    """The longest prefix of ``name`` that is a project module (None outside the project)."""
    mods = _modules()
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in mods:
            return cand
        parts.pop()
    return None


class _Import:
    """One imported project module: ``target``, the names taken from it, where, and how."""

    def __init__(self, module, target, names, lineno, lazy, guarded):
        self.module, self.target, self.names = module, target, names
        self.lineno, self.lazy, self.guarded = lineno, lazy, guarded

    def where(self) -> str:
        return f"{_rel(_modules()[self.module])}:{self.lineno}"


def _never_on_import(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if __name__ == "__main__":``."""
    if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
        return True
    if isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING":
        return True
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _walk(node, lazy=False, guarded=False):
    """Yield ``(node, lazy, guarded)`` for every node below ``node``.

    ``lazy``: inside a function body (runs when called, not on import);
    ``guarded``: under ``if TYPE_CHECKING:`` or ``if __name__ == "__main__":`` (never
    runs when the module is imported).
    """
    for child in ast.iter_child_nodes(node):
        c_lazy = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        c_guarded = guarded or (
            isinstance(node, ast.If) and _never_on_import(node.test) and child in node.body
        )
        yield child, c_lazy, c_guarded
        yield from _walk(child, c_lazy, c_guarded)


@functools.cache
def _imports(module: str) -> tuple[_Import, ...]:
    """The project modules ``module`` imports (relative imports resolved)."""
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node, lazy, guarded in _walk(_tree(module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name)
                if target:
                    out.append(_Import(module, target, (), node.lineno, lazy, guarded))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if _known(src) is None:
                continue
            for alias in node.names:
                sub = f"{src}.{alias.name}"
                if sub in _modules():  # ``from pkg import module``
                    out.append(_Import(module, sub, (), node.lineno, lazy, guarded))
                else:
                    out.append(_Import(module, _known(src), (alias.name,), node.lineno, lazy,
                                       guarded))
    return tuple(out)


def _graph(include_lazy: bool) -> dict[str, dict[str, _Import]]:
    """module -> {imported module: first such import}, without self-imports."""
    graph: dict[str, dict[str, _Import]] = {m: {} for m in _modules()}
    for m in _modules():
        for imp in _imports(m):
            if imp.guarded or (imp.lazy and not include_lazy) or imp.target == m:
                continue
            graph[m].setdefault(imp.target, imp)
    return graph


def _cycles(graph: dict[str, dict[str, _Import]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in comps:  # a shortest cycle through the component's first module (BFS)
        start = min(comp)
        prev, frontier, found = {start: None}, [start], None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start:
                        found = v
                        break
                    if w in comp and w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [found]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append(path[::-1] + [start])
    return sorted(cycles)


def _describe(cycle: list[str], graph) -> str:
    steps = [f"{a} -> {b} ({graph[a][b].where()})" for a, b in itertools.pairwise(cycle)]
    return "; ".join(steps)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@functools.cache
def _private_definitions(package: str) -> frozenset[str]:
    """Private names a package defines: functions, classes, methods, module and class
    attributes, and attributes set on ``self``."""
    names = set()
    for m in _modules():
        if m.split(".")[0] != package:
            continue
        for node, _, _ in _walk(_tree(m)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for sub in ast.walk(t):
                        if isinstance(sub, ast.Name):
                            names.add(sub.id)
                        elif isinstance(sub, ast.Attribute):
                            names.add(sub.attr)
    return frozenset(n for n in names if _is_private(n))


def _calls_exec_or_eval(node) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Name) and f.id in ("exec", "eval")) or (
        isinstance(f, ast.Attribute) and f.attr in ("exec", "eval")
        and isinstance(f.value, ast.Name) and f.value.id == "builtins"
    )


def _package(module: str) -> str:
    return module.split(".")[0]


# ---------------------------------------------------------------------------
# not yet satisfied on main: remove a mark (or an entry) when the work lands;
# strict=True turns the unexpected pass into a failure that says so
# ---------------------------------------------------------------------------

#: library files over REVIEW_LINES lines, each with why it is one concept
REVIEWED: dict[str, str] = {}


# ---------------------------------------------------------------------------
# the checker itself can fail
# ---------------------------------------------------------------------------


def test_cycle_finder_reports_the_cycle():
    def imp(a, b):
        return _Import(a, b, (), 1, False, False)

    graph = {"a": {}, "b": {}, "c": {}, "d": {}}
    for a, b in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]:
        graph[a][b] = imp(a, b)
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    del graph["c"]["a"]
    assert _cycles(graph) == []


def test_lazy_and_guarded_imports_are_told_apart():
    tree = ast.parse(
        "import a\n"
        "if __name__ == '__main__':\n    import b\n"
        "if TYPE_CHECKING:\n    import c\n"
        "def f():\n    import d\n"
        "if x:\n    import e\n"
    )
    flags = {n.names[0].name: (lazy, guarded) for n, lazy, guarded in _walk(tree)
             if isinstance(n, ast.Import)}
    assert flags == {"a": (False, False), "b": (False, True), "c": (False, True),
                     "d": (True, False), "e": (False, False)}


def test_the_model_sees_the_project():
    mods = _modules()
    assert {"leechlib", "leechlib.decode", "leechlib.kernels", "torch_ext", "torch_ext.ops",
            "torch_ext.ops._backends"} <= set(mods)
    targets = {i.target for i in _imports("torch_ext.ops._backends")}
    assert {"leechlib", "leechlib.kernels", "torch_ext.ops._decoder"} <= targets
    assert any(i.lazy for i in _imports("leechlib.cli") if _package(i.target) == "torch_ext")
    assert "_NUMBA_CUDA_FAILED" in _private_definitions("torch_ext")
    assert "_decode_table" in _private_definitions("leechlib")


# ---------------------------------------------------------------------------
# import cycles
# ---------------------------------------------------------------------------


def test_no_import_cycles_at_module_level():
    graph = _graph(include_lazy=False)
    cycles = [_describe(c, graph) for c in _cycles(graph)]
    assert not cycles, "import cycles (module level): " + " | ".join(cycles)


def test_no_import_cycles_counting_lazy_imports():
    graph = _graph(include_lazy=True)
    cycles = [_describe(c, graph) for c in _cycles(graph)]
    assert not cycles, "import cycles (with the imports inside functions): " + " | ".join(cycles)


# ---------------------------------------------------------------------------
# walls between leechlib and torch_ext
# ---------------------------------------------------------------------------


def _cross_imports(src: str, dst: str):
    return [i for m in _modules() if _package(m) == src
            for i in _imports(m) if _package(i.target) == dst]


def test_mog_tables_are_a_leaf():
    """leechlib._mog (the MOG tables) imports nothing of the project, not even lazily,
    so every decoder can use it."""
    targets = {i.target for i in _imports("leechlib._mog")}
    assert not targets, targets
    graph = _graph(include_lazy=True)
    assert "leechlib.decode" not in graph["leechlib.golay"]
    assert "leechlib.golay" not in graph["leechlib.decode"]


def test_kernel_modules_import_only_the_jit_policy_and_each_other():
    """The modules of leechlib._kernels import, of the project, only leechlib._jit, the
    constants (leechlib._constants) and each other; the CUDA launcher also the MOG
    tables, the numpy references also the public modules of leechlib."""
    bad = []
    for m in _modules():
        if not m.startswith("leechlib._kernels."):
            continue
        for imp in _imports(m):
            t = imp.target
            ok = t in ("leechlib._jit", "leechlib._constants") or t.startswith("leechlib._kernels.")
            ok |= m == "leechlib._kernels.cuda" and t == "leechlib._mog"
            ok |= m == "leechlib._kernels.reference" and not any(map(_is_private, t.split(".")))
            if not ok:
                bad.append(f"{imp.where()} imports {t}")
    assert not bad, "kernel modules reach beyond _jit, _constants and each other: " + "; ".join(bad)


def test_leechlib_imports_torch_ext_only_in_its_lazy_cli_dispatch():
    bad = [f"{i.where()} imports {i.target}" for i in _cross_imports("leechlib", "torch_ext")
           if i.module != DISPATCH or not i.lazy]
    assert not bad, "leechlib must not import torch_ext (outside a function of leechlib/cli.py): " \
        + "; ".join(bad)


def test_cli_dispatch_uses_public_torch_ext_names():
    bad = [f"{i.where()} imports {i.target} {i.names}"
           for i in _cross_imports("leechlib", "torch_ext")
           if any(map(_is_private, i.target.split(".") + list(i.names)))]
    assert not bad, "leechlib's dispatch reaches torch_ext privates: " + "; ".join(bad)


def test_torch_ext_imports_no_private_leechlib_module():
    bad = [f"{i.where()} imports {i.target}" for i in _cross_imports("torch_ext", "leechlib")
           if any(map(_is_private, i.target.split(".")))]
    assert not bad, "torch_ext imports private leechlib modules (use leechlib.kernels): " \
        + "; ".join(bad)


def test_torch_ext_imports_no_private_leechlib_name():
    bad = [f"{i.where()} imports {i.target}.{n}" for i in _cross_imports("torch_ext", "leechlib")
           for n in i.names if _is_private(n)]
    assert not bad, "torch_ext imports private leechlib names (use leechlib.kernels): " \
        + "; ".join(bad)


def test_torch_ext_reads_no_private_leechlib_attribute():
    """A private attribute that leechlib defines and torch_ext does not, read on anything
    but ``self``/``cls``: a reach into a leechlib object's internals."""
    theirs = _private_definitions("leechlib") - _private_definitions("torch_ext")
    bad = []
    for m in _modules():
        if _package(m) != "torch_ext":
            continue
        for node, _, _ in _walk(_tree(m)):
            if (isinstance(node, ast.Attribute) and node.attr in theirs
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                bad.append(f"{_rel(_modules()[m])}:{node.lineno} {ast.unparse(node)}")
    assert not bad, "torch_ext reads private attributes of leechlib objects: " + "; ".join(bad)


# ---------------------------------------------------------------------------
# torch_ext's three wings
# ---------------------------------------------------------------------------

#: torch_ext modules below every wing: they import no other torch_ext module
BASE = {"torch_ext._validation", "torch_ext._safetensors", "torch_ext._signals"}
#: the package's wiring: re-exports, the deprecated-path finder
WIRING = {"torch_ext", "torch_ext._moved"}
#: the middle wing's model pieces
MODEL_PIECES = {"torch_ext.kernel", "torch_ext.attention", "torch_ext.losses", "torch_ext.model"}


def _wing(module: str) -> str | None:
    if module in BASE:
        return "base"
    if module in WIRING:
        return "wiring"
    if module in MODEL_PIECES:
        return "model"
    for wing in ("ops", "quantize", "vq", "lila"):
        if module == f"torch_ext.{wing}" or module.startswith(f"torch_ext.{wing}."):
            return wing
    return None


def _wing_imports(src_wings: set[str]):
    """Every import (module level or lazy) from a module of ``src_wings`` to a torch_ext module."""
    for m in _modules():
        if _package(m) == "torch_ext" and _wing(m) in src_wings:
            for i in _imports(m):
                if _package(i.target) == "torch_ext" and not i.guarded:
                    yield i


def test_every_torch_ext_module_is_in_a_wing():
    loose = [m for m in _modules() if _package(m) == "torch_ext" and _wing(m) is None]
    assert not loose, "torch_ext modules outside ops/, the model pieces, quantize/, vq/, lila/: " \
        + ", ".join(loose)


def test_base_imports_nothing_of_torch_ext():
    bad = [f"{i.where()} imports {i.target}" for i in _wing_imports({"base"})]
    assert not bad, "; ".join(bad)


def test_ops_imports_nothing_above_it():
    bad = [f"{i.where()} imports {i.target}" for i in _wing_imports({"ops"})
           if _wing(i.target) not in ("ops", "base")]
    assert not bad, "torch_ext.ops must not import the model pieces, quantize, vq or lila: " + "; ".join(bad)


def test_middle_wing_never_imports_lila():
    bad = [f"{i.where()} imports {i.target}" for i in _wing_imports({"model", "quantize", "vq"})
           if _wing(i.target) == "lila"]
    assert not bad, "the model pieces, quantize and vq must not import torch_ext.lila: " + "; ".join(bad)


def test_general_quantizer_knows_no_model_class():
    bad = [f"{i.where()} imports {i.target}" for i in _wing_imports({"quantize", "vq"})
           if _wing(i.target) in ("model", "lila")]
    assert not bad, "quantize and vq must not import the model pieces: " + "; ".join(bad)


def test_no_lazy_import_of_torch_ext_modules_inside_torch_ext():
    bad = [f"{i.where()} imports {i.target}" for m in _modules() if _package(m) == "torch_ext"
           for i in _imports(m) if i.lazy and _package(i.target) == "torch_ext"]
    assert not bad, "lazy imports inside torch_ext (import at module level): " + "; ".join(bad)


def test_wing_checks_can_fail():
    assert _wing("torch_ext.ops.nearest") == "ops" and _wing("torch_ext.lila.cli") == "lila"
    assert _wing("torch_ext.quantize.io") == "quantize" and _wing("torch_ext.model") == "model"
    assert _wing("torch_ext.somewhere") is None
    assert any(_wing(i.target) == "lila" for i in _wing_imports({"wiring"}))  # the re-exports


# ---------------------------------------------------------------------------
# library code: no exec/eval; long files reviewed
# ---------------------------------------------------------------------------


def test_no_exec_or_eval_in_library_code():
    bad = [f"{_rel(_modules()[m])}:{node.lineno}" for m in _modules()
           for node, _, _ in _walk(_tree(m)) if _calls_exec_or_eval(node)]
    assert not bad, "exec/eval in library code: " + "; ".join(bad)


def test_long_library_files_are_reviewed():
    long = {_rel(p): len(p.read_text(encoding="utf-8").splitlines()) for p in set(_modules().values())}
    unreviewed = [f"{rel} ({n} lines)" for rel, n in sorted(long.items()) if n > REVIEW_LINES and rel not in REVIEWED]
    assert not unreviewed, (f"files over {REVIEW_LINES} lines: split by concept, or add to REVIEWED with why "
                            "they are one concept: " + ", ".join(unreviewed))
    stale = [rel for rel in REVIEWED if long.get(rel, 0) <= REVIEW_LINES]
    assert not stale, "REVIEWED entries no longer over the limit: " + ", ".join(stale)


# ---------------------------------------------------------------------------
# one definition of each shared constant and check
# ---------------------------------------------------------------------------

#: name -> the modules allowed to define it (constrained.MAX_ABS is the constrained
#: search's own, smaller bound, 2**30)
ONE_HOME = {
    "SQRT8": {"leechlib._constants"},
    "MAX_ABS": {"leechlib._constants", "leechlib.constrained"},
    "check_int": {"leechlib._validation"},
    "subsample": {"leechlib._validation"},
}


def _definitions(name: str) -> list[str]:
    out = []
    for m in _modules():
        for node, _, _ in _walk(_tree(m)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                out.append(m)
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                      for t in node.targets):
                out.append(m)
    return out


@pytest.mark.parametrize("name", sorted(ONE_HOME))
def test_shared_names_are_defined_once(name):
    where = _definitions(name)
    assert where and set(where) <= ONE_HOME[name], f"{name} defined in {where}; import it from {ONE_HOME[name]}"
