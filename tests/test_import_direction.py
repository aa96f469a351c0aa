"""Package layering: pure and independent layers never import the ones above them.

- indicators/ is pure computation: it imports nothing of ours.
- simulator/ is the ground truth: it must not see the agent, connectors, indicators or bureau.
- connectors/ only turn protocols into samples: no agent, indicators, simulator or bureau.

Checked on the source with `ast`, so an import inside a function or under TYPE_CHECKING
counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = frozenset({"agent", "bureau", "connectors", "indicators", "simulator"})
FORBIDDEN: dict[str, frozenset[str]] = {
    "indicators": frozenset({"agent", "bureau", "connectors", "simulator"}),
    "simulator": frozenset({"agent", "bureau", "connectors", "indicators"}),
    "connectors": frozenset({"agent", "bureau", "indicators", "simulator"}),
}


def imported_packages(source: Path) -> set[tuple[str, int]]:
    """Top-level packages of ours that `source` imports, with the line of each import."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue  # relative imports stay inside their own package
        for name in names:
            top = name.split(".")[0]
            if top in OURS:
                found.add((top, node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_forbidden_layers(package: str) -> None:
    sources = sorted((ROOT / package).rglob("*.py"))
    assert sources, f"{package}/ has no Python files"
    violations = [
        f"{source.relative_to(ROOT)}:{line} imports {top}"
        for source in sources
        for top, line in sorted(imported_packages(source))
        if top in FORBIDDEN[package]
    ]
    assert not violations, "\n".join(violations)


def test_the_checker_sees_imports_in_functions(tmp_path: Path) -> None:
    """If a module imports a forbidden package lazily, the checker still finds it."""
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from agent.config import load_config\n    import os\n")
    assert imported_packages(module) == {("agent", 2)}
