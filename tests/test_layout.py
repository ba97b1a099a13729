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


def _imports(name, path):
    """Modules of the project that module ``name`` imports, anywhere in its body."""
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            # ``from pkg import sub`` imports the submodule ``pkg.sub``
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _graph(package):
    mods = _modules(package)
    return {name: sorted(m for m in _imports(name, path) if m in mods and m != name)
            for name, path in mods.items()}


def test_no_import_cycles_in_leechlib():
    graph = _graph("leechlib")
    # a module's own package is imported before it anyway: only package -> module
    # arrows of ``__init__`` files count
    for name in graph:
        graph[name] = [m for m in graph[name] if not name.startswith(m + ".")]
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
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
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
    assert "leechlib.decode" not in graph["leechlib.golay"]
    assert "leechlib.golay" not in graph["leechlib.decode"]


def test_mog_tables_module_is_a_leaf():
    mods = _modules("leechlib")
    allowed = {"leechlib._jit", "leechlib._kernels", "leechlib._kernels.minvec"}
    assert _imports("leechlib._mog", mods["leechlib._mog"]) & set(mods) <= allowed


def test_no_long_library_files():
    long = {}
    for name, path in _modules("leechlib").items():
        with open(path, encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n > 600:
            long[name] = n
    assert not long, long
