"""The layering of the code base, read from the source with `ast` (nothing is imported):

    autograd                      imports nothing of tinygen
    tinygen.models.*              import the engine, tinygen.nn, optim, io, data, text, diffusion and
                                  other models only; never evaluate, train or the CLI, which sit above
    the tinygen modules           no import cycle, counting imports inside functions too (a lazy import
                                  hides a cycle from Python, not from a reader)
    models                        registered in one place: the MODULES table of tinygen/models/registry.py
"""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("autograd", "tinygen")

# What a file under tinygen/models/ may import from the project (a module or anything below it).
MODEL_MAY_IMPORT = ("autograd", "tinygen.nn", "tinygen.optim", "tinygen.io", "tinygen.data", "tinygen.text",
                    "tinygen.diffusion", "tinygen.models")

# Known breaks of the rules, as (file, imported module or rule): files being rewritten elsewhere. Delete an
# entry when its file keeps the rule; an entry that no longer matches anything fails the test.
KNOWN_EXCEPTIONS = set()  # (file, import) pairs that break a rule on purpose, each with its reason


def module_name(path):
    """tinygen/models/vae.py -> tinygen.models.vae;  tinygen/nn/__init__.py -> tinygen.nn."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_files():
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


MODULES = {module_name(p): p for p in source_files()}


def _resolve(name):
    """The project module an imported name stands for: the longest known prefix (a.b.c -> a.b when c is
    an attribute of a.b); None outside the project."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in MODULES:
            return candidate
    return None


def imports_of(path):
    """[(imported project module, line, at module level?)] of one file, relative imports resolved."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    # an import nested in an if / try at module level still runs at import time
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            # `from X import y`: y is a module when X.y is one, else an attribute of X
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in dict.fromkeys(names):  # `from X import a, b` is one import of X
            target = _resolve(name)
            if target is not None and target != me:
                found.append((target, node.lineno, id(node) in top_level))
    return found


def rel(path):
    return str(path.relative_to(ROOT))


def _within(module, prefixes):
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def breaks():
    """Every break of the import rules: (file, imported module, message)."""
    found = []
    for name, path in MODULES.items():
        for target, line, _ in imports_of(path):
            where = f"{rel(path)}:{line}"
            if _within(name, ("autograd",)) and target.startswith("tinygen"):
                found.append((rel(path), target, f"{where}: autograd imports {target}; the engine imports "
                                                  f"nothing of tinygen"))
            if _within(name, ("tinygen.models",)) and not _within(target, MODEL_MAY_IMPORT):
                found.append((rel(path), target, f"{where}: a model imports {target}; models import only "
                                                  f"{', '.join(MODEL_MAY_IMPORT)}"))
    return found


def register_decorators():
    """(file, "@register", message) for every class under tinygen/models/ decorated with register(...)."""
    found = []
    for path in sorted((ROOT / "tinygen" / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for d in node.decorator_list:
                    f = d.func if isinstance(d, ast.Call) else d
                    if getattr(f, "id", getattr(f, "attr", None)) == "register":
                        found.append((rel(path), "@register",
                                      f"{rel(path)}:{node.lineno}: class {node.name} registers itself with "
                                      f"@register; models are registered in tinygen/models/registry.py MODULES only"))
    return found


def test_the_import_rules_hold():
    problems = [msg for file, target, msg in breaks() if (file, target) not in KNOWN_EXCEPTIONS]
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_models_are_registered_in_one_place():
    problems = [msg for file, what, msg in register_decorators() if (file, what) not in KNOWN_EXCEPTIONS]
    assert not problems, "\n".join(problems)


def test_known_exceptions_are_still_needed():
    """An exception whose file now keeps the rule must leave the list."""
    seen = {(file, what) for file, what, _ in breaks() + register_decorators()}
    stale = sorted(KNOWN_EXCEPTIONS - seen)
    assert not stale, f"these KNOWN_EXCEPTIONS no longer occur; delete them from tests/test_layering.py: {stale}"


def _find_cycle(graph):
    """One cycle in a directed graph {node: {successors}} as a list of nodes, or None (iterative DFS)."""
    state = {}  # node -> 1 on the current path, 2 done
    for root in sorted(graph):
        if root in state:
            continue
        stack, path = [(root, iter(sorted(graph[root])))], [root]
        state[root] = 1
        while stack:
            node, successors = stack[-1]
            nxt = next(successors, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
                path.append(nxt)
    return None


def _with_parents(module):
    """Importing a.b.c runs a/__init__ and a/b/__init__ first: the edges to those parents count."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def test_no_import_cycle():
    graph, lines = {}, {}
    for name, path in MODULES.items():
        if not _within(name, ("tinygen",)):
            continue
        graph.setdefault(name, set())
        for target, line, _ in imports_of(path):
            if _within(target, ("tinygen",)):
                for t in _with_parents(target):
                    # a package's own __init__ running is not an edge back from its submodules
                    if t != name and not name.startswith(t + "."):
                        graph[name].add(t)
                        lines.setdefault((name, t), line)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} ({rel(MODULES[a])}:{lines[(a, b)]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


# ---------------------------------------------------------------------- the checker checks
def test_the_parser_sees_relative_lazy_and_aliased_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "tinygen" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "tinygen" / "__init__.py").write_text("")
    (tmp_path / "tinygen" / "evaluate.py").write_text("")
    (tmp_path / "tinygen" / "nn.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text("from .. import nn\nimport tinygen.evaluate as ev\n"
                              "def f():\n    from ..evaluate import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {module_name(p): p for p in tmp_path.rglob("*.py")})
    assert imports_of(pkg / "m.py") == [("tinygen.nn", 1, True), ("tinygen.evaluate", 2, True),
                                        ("tinygen.evaluate", 4, False)]
    messages = [m for _, _, m in breaks()]
    assert len(messages) == 2 and all("tinygen/models/m.py" in m and "tinygen.evaluate" in m for m in messages)
    assert "tinygen/models/m.py:4" in messages[1]


def test_the_cycle_finder():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
