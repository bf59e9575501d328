"""The package's modules import one another without a cycle: the data flow is a layering.

Every import statement counts, wherever it stands: at the top of a module, inside a function (a
lazy import), or under `if TYPE_CHECKING:`. A lazy import only hides a cycle until the function
runs, and a type-only import is still a dependency a reader must follow, so neither makes a cycle
acceptable. `from package import name` depends on the submodule `package.name` where there is one,
else on the package itself. That a submodule's package `__init__` runs first is not counted: a
package that re-exports its submodules is the usual shape, not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "cifarlab"

# Cycles still tolerated, each an unordered pair of modules that import each other: none.
ALLOWED: set[frozenset[str]] = set()


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that module `name` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    wanted = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            wanted |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y, from .. import z
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            wanted |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names}
    found = set()
    for target in wanted:
        while target and target not in modules:   # `import a.b.c` of a function or class: its module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    inside = set(component)
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & inside))}" for m in component)


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    found = [c for c in cycles(graph) if frozenset(c) not in ALLOWED]
    assert not found, "import cycles (each module -> the ones it imports in the cycle):\n" + "\n".join(
        describe(c, graph) for c in found)
    present = {frozenset(c) for c in cycles(graph)}
    stale = [sorted(pair) for pair in ALLOWED if pair not in present]
    assert not stale, f"these allowed cycles are gone: delete their ALLOWED entries: {stale}"


def test_the_walk_sees_every_kind_of_import(tmp_path):
    """The graph the test above checks: lazy, type-only, relative and `from package import module`
    imports are edges; an import of a name resolves to its module."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import b  # a package re-exporting its module\n")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub.b import thing\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import c\n")
    (pkg / "c.py").write_text("import pkg.a\nimport os\n")
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.sub.b"}, "pkg.c": {"pkg.a"}, "pkg.sub": {"pkg.sub.b"},
                     "pkg.sub.b": {"pkg.c"}}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert cycles({"x": {"y"}, "y": set()}) == []


def test_the_layering_the_layout_shows():
    """Keys below registries below config; the training loop above the methods it calls."""
    graph = import_graph()
    assert graph["cifarlab.schema"] <= {"cifarlab.errors"}           # the keys import no registry
    assert "cifarlab.config" not in set().union(*(graph[m] for m in (
        "cifarlab.models", "cifarlab.models.net", "cifarlab.models.layers", "cifarlab.losses", "cifarlab.optim",
        "cifarlab.augment.pipeline", "cifarlab.methods", "cifarlab.data.datasets")))
    assert {"cifarlab.methods", "cifarlab.session"} <= graph["cifarlab.train"]
    assert "cifarlab.train" not in graph["cifarlab.methods"]
