"""The layers: every import between Glance's packages points down, never up or sideways.

    app.py, glance (the CLI)  ->  search, indexer  ->  store, models  ->  core

Run `python -m tests.test_layers` to print the import graph between packages.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Lower numbers are lower layers; a module may import its own package and any package of a lower layer.
LAYERS = {"core": 0, "store": 1, "models": 1, "indexer": 2, "search": 2, "server": 2, "app": 3, "glance": 4}


def package_of(path: Path) -> str:
    relative = path.relative_to(REPO)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_packages(path: Path) -> set[str]:
    """The Glance packages a module imports, at module level or inside functions (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & LAYERS.keys()


def import_graph() -> dict[str, set[str]]:
    graph = defaultdict(set)
    for package in LAYERS:
        sources = [REPO / "app.py"] if package == "app" else sorted((REPO / package).rglob("*.py"))
        for source in sources:
            graph[package] |= imported_packages(source) - {package}
    return dict(graph)


def test_every_import_between_packages_points_down():
    wrong = [f"{source} -> {target}" for source, targets in import_graph().items() for target in sorted(targets)
             if LAYERS[target] >= LAYERS[source]]
    assert not wrong, f"imports that point up or sideways: {wrong}"


def test_the_graph_is_real():
    graph = import_graph()
    assert {"store", "models"} <= graph["search"] and {"store", "models"} <= graph["indexer"]
    assert {"indexer", "search"} <= graph["glance"] and "search" in graph["app"]


def test_models_are_resolved_in_one_place():
    """Only the model factory finds model files; the indexer, search, the page and embed all go through it.
    models/hftext.py finds the files an open_clip config names for its text tower, as the factory resolves it."""
    callers = sorted(str(path.relative_to(REPO)) for package in LAYERS if package != "app"
                     for path in (REPO / package).rglob("*.py") if "hub.resolve(" in path.read_text())
    assert callers == ["models/factory.py", "models/hftext.py"] and "hub.resolve(" not in (REPO / "app.py").read_text()


if __name__ == "__main__":
    for source, targets in sorted(import_graph().items(), key=lambda item: -LAYERS[item[0]]):
        print(f"{source:8} -> {', '.join(sorted(targets, key=lambda t: (-LAYERS[t], t))) or '(nothing)'}")
    sys.exit(0)
