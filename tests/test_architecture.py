"""The package's shape, read from its source: the layers its docstring draws, and the rules that keep them.

Every import between two of ``celeba_gender``'s sub-packages must go down the layers written in the package
docstring (an import within one sub-package is free); nothing outside ``cli/`` imports ``cli/`` (it is the top
layer); no module imports itself back through others (no cycles, lazy imports included); the converter and the
synthetic CelebA never import TensorFlow or Keras at module level, however indirectly; and the top of the
package holds few modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import celeba_gender

SRC = Path(celeba_gender.__file__).parent
PACKAGE = "celeba_gender"
HEAVY = ("tensorflow", "keras")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The package module an imported dotted name refers to (a module, or a name inside one)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str, top_level_only: bool = False) -> set[str]:
    """Modules of this package and outside packages (their top name) that ``module`` imports. ``top_level_only``:
    only imports that run when the module is imported (not inside functions or ``if TYPE_CHECKING``)."""
    tree = ast.parse(MODULES[module].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # module-level statements, including those nested in try/with blocks at module level
        nodes = [n for stmt in tree.body if not (isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test))
                 for n in ast.walk(stmt) if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        nodes += [n for stmt in tree.body if isinstance(stmt, ast.ClassDef) for n in stmt.body
                  if isinstance(n, (ast.Import, ast.ImportFrom))]
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == PACKAGE:
                resolved = _resolve(name)
                if resolved and resolved != module:
                    out.add(resolved)
            else:
                out.add(name.split(".")[0])
    # `from celeba_gender.x import y` names the package x and its module x.y: keep the most specific.
    return {m for m in out if not any(o.startswith(m + ".") and m.startswith(PACKAGE) for o in out)}


def layers() -> dict[str, int]:
    """{sub-package: layer} from the package docstring's table of layers."""
    table = celeba_gender.__doc__.split("Layers", 1)[1]
    found = {}
    for line in table.splitlines():
        match = re.match(r"\s+(\d+)\s+((?:[a-z_]+/\s*)+)", line)
        if match:
            for package in re.findall(r"([a-z_]+)/", match.group(2)):
                found[package] = int(match.group(1))
    return found


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (SRC / parts[1]).is_dir()) else None


def test_the_docstring_places_every_sub_package_in_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert set(layers()) == packages


def upward_imports(graph: dict[str, set[str]], rank: dict[str, int]) -> list[str]:
    """The imports of ``graph`` (module -> modules it imports) that do not go down ``rank``'s layers."""
    upward = []
    for module, targets in graph.items():
        source = _package(module)
        for target in sorted(t for t in targets if t.startswith(PACKAGE)):
            destination = _package(target)
            if destination is None and target != PACKAGE:
                upward.append(f"{module} -> {target} (a top-level module)")
            elif source and destination and source != destination and rank[destination] >= rank[source]:
                upward.append(f"{module} -> {target}")
    return upward


def test_imports_go_down_the_layers():
    upward = upward_imports({m: imports(m) for m in MODULES}, layers())
    assert not upward, "imports that do not go down the layers:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_back():
    graph = {m: {t for t in imports(m) if t.startswith(PACKAGE)} for m in MODULES}
    assert _cycles(graph) == []


def heavy_at_import(package: str, graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """{module of ``package``: the modules through which importing it imports TensorFlow or Keras}, following
    ``graph`` (module -> what it imports when imported)."""
    heavy = {}
    for module in (m for m in graph if _package(m) == package):
        seen, todo = set(), [module]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            for target in graph.get(current, ()):
                if target in HEAVY:
                    heavy.setdefault(module, []).append(current)
                elif target.startswith(PACKAGE):
                    todo.append(target)
    return heavy


@pytest.mark.parametrize("package", ["core", "shards", "convert", "synthetic"])
def test_the_converter_side_never_imports_tensorflow(package):
    """What these import when imported, followed through the package's own modules, holds no TensorFlow."""
    assert heavy_at_import(package, {m: imports(m, top_level_only=True) for m in MODULES}) == {}


def test_the_top_of_the_package_holds_few_modules():
    top = [p.name for p in SRC.glob("*.py")]
    assert len(top) <= 10, top


MAX_LINES, MAX_PARAMETERS = 60, 7


def oversized(source: str) -> list[str]:
    """The functions of ``source`` over MAX_LINES lines or MAX_PARAMETERS parameters (``self`` and ``cls``
    count), and the calls that pass more than MAX_PARAMETERS values by position (named ones read as a record)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES or count > MAX_PARAMETERS:
                found.append(f"{node.name} (line {node.lineno}): {lines} lines, {count} parameters")
        elif isinstance(node, ast.Call) and len(node.args) > MAX_PARAMETERS and ast.unparse(node.func) != "zip":
            found.append(f"a call at line {node.lineno}: {len(node.args)} positional arguments")
    return found


def test_no_function_is_long_or_takes_many_parameters():
    found = [f"{module}: {f}" for module, path in MODULES.items() for f in oversized(path.read_text())]
    assert not found, "\n".join(found)


def test_the_kind_of_labels_is_decided_in_few_modules():
    """Whether the labels are one softmax class or several attributes is the task's business (tasks/): outside it,
    the old flag that decided it everywhere (``multi_label``, read where records of earlier versions are) and the
    task's ``kind`` are named by at most four modules."""
    deciding = sorted(m for m, p in MODULES.items() if _package(m) != "tasks"
                      and re.search(r"multi_label|\.kind\b", p.read_text()))
    assert len(deciding) <= 4, deciding


def test_the_checks_catch_what_they_are_for():
    """Each rule finds what it is for in a made-up package: an upward import, an import of cli/ from below, a
    module at the top, a cycle, TensorFlow reached through another module."""
    rank = {"core": 0, "train": 6, "cli": 8}
    made_up = {"celeba_gender.core.options": {"celeba_gender.train.trainer"},
               "celeba_gender.train.trainer": {"celeba_gender.cli.train", "celeba_gender.core.options", "numpy"},
               "celeba_gender.cli.train": {"celeba_gender.train.trainer"}}
    assert upward_imports(made_up, rank) == ["celeba_gender.core.options -> celeba_gender.train.trainer",
                                             "celeba_gender.train.trainer -> celeba_gender.cli.train"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    reached = {"celeba_gender.core.fileio": {"celeba_gender.core.options"},
               "celeba_gender.core.options": {"celeba_gender.train.step"}, "celeba_gender.train.step": {"keras"}}
    assert heavy_at_import("core", reached) == {"celeba_gender.core.fileio": ["celeba_gender.train.step"],
                                                "celeba_gender.core.options": ["celeba_gender.train.step"]}
    long = "def f(a, b, c, d, e, f, g, h):\n" + "    x = 1\n" * 60 + "g(1, 2, 3, 4, 5, 6, 7, 8)\n"
    assert oversized(long) == ["f (line 1): 61 lines, 8 parameters", "a call at line 62: 8 positional arguments"]
    assert oversized("def f(self, a, b, c, d, e, f):\n    return g(1, 2, 3, 4, 5, 6, 7, x=8)\n") == []
