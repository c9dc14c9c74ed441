"""The shape of the house, read from the source: no import circles, arrows that point down only.

Layers, lowest first: ``core`` (image I/O, geometry, transforms, quality, files) <- ``models`` <-
``attacks`` <- ``study`` / ``app``. Every import of a fr_shield module is at the top of its
module (a late import could hide a circle), and nothing below ``app`` imports ``app``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fr_shield"
LAYERS = {"core": 0, "models": 1, "attacks": 2, "study": 3, "app": 4}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(imported fr_shield module, at the module's top level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fr_shield"):
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                     for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("fr_shield")]
        found += [(name, id(node) in top) for name in names if name in MODULES]
    return found


GRAPH = {name: sorted({target for target, _ in imports_of(path)} - {name}) for name, path in MODULES.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_fr_shield_import_is_at_the_top_of_its_module():
    late = [(name, target) for name, path in MODULES.items() for target, at_top in imports_of(path) if not at_top]
    assert not late, f"imports inside functions or blocks: {late}"


def test_the_import_graph_has_no_circle():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in GRAPH.get(node, []):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in GRAPH:
        if node not in state:
            visit(node)


def test_arrows_point_down_only():
    upward = []
    for source, targets in GRAPH.items():
        for target in targets:
            low, high = layer(source), layer(target)
            if low is not None and high is not None and high > low:
                upward.append(f"{source} -> {target}")
    assert not upward, upward


def test_the_graph_is_read_for_real():
    """The checks above are not vacuous: the graph holds the package's known arrows."""
    assert "fr_shield.attacks.protector" in MODULES and "fr_shield.core.regions" in GRAPH["fr_shield.attacks.protector"]
    assert "fr_shield.attacks.protector" in GRAPH["fr_shield.app.protect"]
    assert layer("fr_shield.app.protect") == 4 and layer("fr_shield.core.align") == 0
