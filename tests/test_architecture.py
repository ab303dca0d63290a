"""The package layout rules DESIGN.md fixes, checked on the source: no import cycle, and the sister
packages (edge, lambda, training) use only strato's public names.

The import graph counts every import statement, at module level, inside functions and under
`TYPE_CHECKING` alike: a cycle through a lazy import is still two modules that cannot be understood
(or moved) one without the other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "strato": ROOT / "sdk" / "strato",
    "strato_edge": ROOT / "edge" / "strato_edge",
    "strato_training": ROOT / "training" / "strato_training",
    "strato_lambda": ROOT / "lambda" / "strato_lambda",
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """Every first-party module `module` imports, with the line it does it on."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _resolve(alias.name, known, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" for alias in node.names]
            submodules = [name for name in names if name in known]
            if submodules:
                for name in submodules:
                    yield name, node.lineno
                if len(submodules) < len(names):
                    yield from _resolve(base, known, node.lineno)
            else:
                yield from _resolve(base, known, node.lineno)


def _resolve(name: str, known: dict[str, Path], line: int) -> Iterator[tuple[str, int]]:
    while name and name not in known:
        name = name.rpartition(".")[0]
    if name:
        yield name, line


def _graph() -> dict[str, set[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = {target for target, _ in _imports(module, path, known) if target != module}
        # A module importing its own package's __init__ for a re-exported name is the same
        # package talking to itself, not a cycle between two modules.
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_sees_first_party_imports() -> None:
    graph = _graph()
    # Guards the parser itself: a graph with no edges would make the cycle test vacuous.
    assert "strato._errors" in graph["strato"]
    assert any(target.startswith("strato") for target in graph["strato_edge.server"])


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_sister_packages_use_only_public_strato_names() -> None:
    known = _modules()
    offenders = []
    for module, path in known.items():
        if module.split(".")[0] == "strato":
            continue
        for target, line in _imports(module, path, known):
            private = [part for part in target.split(".")[1:] if part.startswith("_")]
            if target.startswith("strato.") and private:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert offenders == [], "\n".join(offenders)


def test_ruff_bans_every_private_strato_module_outside_sdk() -> None:
    """The same rule as above, enforced at lint time (TID251): a new private module of
    sdk/strato must be added to pyproject.toml's banned-api (and training/ruff.toml)."""
    import re

    def banned_in(path: Path) -> set[str]:  # `"strato._x".msg = ...` lines (no tomllib on 3.10)
        text = path.read_text(encoding="utf-8")
        return set(re.findall(r'^"([\w.]+)"\.msg\s*=', text, flags=re.M))

    private = {
        f"strato.{path.stem if path.is_file() else path.name}"
        for path in PACKAGES["strato"].iterdir()
        if path.name.startswith("_")
        and not path.name.startswith("__")
        and (path.suffix == ".py" or path.is_dir())
    }
    banned = banned_in(ROOT / "pyproject.toml")
    assert "torch" in banned
    assert private - banned == set()
    assert private - banned_in(ROOT / "training" / "ruff.toml") == set()
