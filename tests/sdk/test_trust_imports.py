"""Issue 11: the trust modules form no import cycle (lazy imports inside functions count;
`if TYPE_CHECKING:` blocks do not)."""

from __future__ import annotations

import ast
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "sdk" / "strato"
TRUST = (
    "_bundle", "_manifest", "_registry", "_signing", "_download", "_storage", "_storage_s3", "_files"
)
TRUST += ("_settings", "_names", "_errors", "_tensors")


def _imports(module: str) -> set[str]:
    tree = ast.parse((SDK / f"{module}.py").read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom):
            target = (node.module or "").removeprefix("strato.")
            if node.level == 1 or (node.module or "").startswith("strato._"):
                found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in TRUST and m != module}


def test_no_cycle_among_bundle_registry_signing_and_their_helpers():
    graph = {m: _imports(m) for m in TRUST}
    for start in TRUST:
        stack, seen = list(graph[start]), set()
        while stack:
            module = stack.pop()
            assert module != start, f"import cycle through strato.{start}: {graph}"
            if module not in seen:
                seen.add(module)
                stack.extend(graph[module])
    assert "_bundle" not in graph["_signing"] and "_registry" not in graph["_signing"]
