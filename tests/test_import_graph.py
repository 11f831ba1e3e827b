"""No import cycles in engine/ or tui/: every module's imports form a DAG.

Every import counts, wherever it is (top level, inside a function, under ``TYPE_CHECKING``): a
function-level import only delays a cycle to the first call, and a ``TYPE_CHECKING`` one is a
cycle for every type checker and every reader. An import is mapped to the most specific module
of this repository it names (``from podium.engine.families.cp import vocab`` is
``engine/families/cp/vocab.py``; ``from podium.engine.config import Profile`` is
``engine/config.py``); the implicit import of a parent package's ``__init__`` is not an edge
(a package that imports its own submodules is no cycle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"engine": "podium.engine", "tui": "podium.tui"}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py under engine/ and tui/."""
    found: dict[str, Path] = {}
    for folder, dotted in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((dotted, *parts))] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(module of this repository, line) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if _is_package(path) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names]
            targets = [t if t in known else module for t in targets]
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno


def graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], tuple[Path, int]]]:
    found = modules()
    known = set(found)
    edges: dict[str, set[str]] = {m: set() for m in found}
    where: dict[tuple[str, str], tuple[Path, int]] = {}
    for name, path in found.items():
        for target, line in imported(name, path, known):
            edges[name].add(target)
            where.setdefault((name, target), (path, line))
    return edges, where


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively; components of more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def describe(component: list[str], edges, where) -> str:
    members = set(component)
    lines = [" <-> ".join(component)]
    for source in component:
        for target in sorted(edges[source] & members):
            path, line = where[(source, target)]
            lines.append(f"    {path.relative_to(ROOT)}:{line}: {source} imports {target}")
    return "\n".join(lines)


def test_the_module_map_sees_the_packages():
    found = modules()
    assert "podium.engine.config" in found
    assert "podium.engine.families.cp" in found
    assert found["podium.engine.families.cp"].name == "__init__.py"
    assert "podium.tui.app" in found


def test_imports_are_resolved_to_modules_of_the_repository():
    edges, _ = graph()
    # absolute, "from package import submodule", and a name inside a module
    assert "podium.engine.families.registry" in edges["podium.engine.config"]
    assert "podium.engine.families.cp.config" in edges["podium.engine.families.cp"]
    # imports inside functions count
    assert "podium.engine.families.cp.model" in edges["podium.engine.families.cp"]


def test_the_cycle_finder_finds_cycles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert strongly_connected(edges) == [["a", "b", "c"]]


def test_no_import_cycles():
    edges, where = graph()
    cycles = strongly_connected(edges)
    report = "\n".join(describe(c, edges, where) for c in cycles)
    assert not cycles, f"{len(cycles)} import cycle(s):\n{report}"
