"""Package layering: every package imports only the layers below it (docs/architecture.md).

- indicators/, connectors/ and simulator/ import nothing of ours: pure computation, pure
  protocol adapters, and the independent ground truth.
- agent.protocol (the wire contract both sides share) imports only indicators.
- the rest of agent/ imports agent.protocol, connectors and indicators.
- bureau/ imports only agent.protocol and indicators: it knows the agent's wire contract,
  not the agent.
- tieragent/ (the command line and the demo) wires everything; nothing imports it.

Checked on the source with `ast`, so an import inside a function or under TYPE_CHECKING
counts too, and `import agent.protocol.envelope` counts as agent.protocol.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tieragent", "agent", "bureau", "connectors", "indicators", "simulator")
# A layer is a package, or agent.protocol (which is part of agent/ but its own layer).
ALLOWED: dict[str, frozenset[str]] = {
    "indicators": frozenset(),
    "connectors": frozenset(),
    "simulator": frozenset(),
    "agent.protocol": frozenset({"indicators"}),
    "agent": frozenset({"agent.protocol", "connectors", "indicators"}),
    "bureau": frozenset({"agent.protocol", "indicators"}),
    "tieragent": frozenset({"agent", "agent.protocol", "bureau", "connectors", "indicators",
                            "simulator"}),
}


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to, or None if it is not ours."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[:2] == ["agent", "protocol"]:
        return "agent.protocol"
    return parts[0]


def imported_layers(source: Path) -> set[tuple[str, int]]:
    """Layers of ours that `source` imports, with the line of each import."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from agent import protocol` imports agent.protocol, not agent.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue  # relative imports stay inside their own package
        for name in names:
            layer = layer_of(name)
            if layer is not None:
                found.add((layer, node.lineno))
    return found


def violations(root: Path) -> list[str]:
    """Every import in the packages under `root` that breaks a layering rule."""
    found = []
    for package in PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            relative = source.relative_to(root)
            layer = layer_of(".".join(relative.with_suffix("").parts))
            assert layer is not None
            for imported, line in sorted(imported_layers(source)):
                if imported != layer and imported not in ALLOWED[layer]:
                    found.append(f"{relative}:{line}: {layer} imports {imported}")
    return found


def test_every_package_imports_only_the_layers_below_it() -> None:
    for package in PACKAGES:
        assert list((ROOT / package).rglob("*.py")), f"{package}/ has no Python files"
    problems = violations(ROOT)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("package", "module", "statement"),
    [
        ("indicators", "kpi.py", "from agent.config import load_config\n"),
        ("simulator", "model.py", "import connectors.sample\n"),
        ("connectors", "x.py", "from indicators import timemodel\n"),
        ("agent/protocol", "report.py", "from agent.outbox import Outbox\n"),
        ("agent", "runtime.py", "from bureau.store import SqliteReportStore\n"),
        ("agent", "x.py", "from simulator.model import load_factory\n"),
        ("bureau", "receiver.py", "from agent import outbox\n"),
        ("bureau", "x.py", "import agent.publisher\n"),
        ("agent", "y.py", "def later():\n    from tieragent.cli import app\n"),
    ],
)
def test_a_deliberate_violation_is_caught(
    tmp_path: Path, package: str, module: str, statement: str
) -> None:
    for name in PACKAGES:
        (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "agent" / "protocol").mkdir()
    (tmp_path / package / module).write_text(statement)
    assert len(violations(tmp_path)) == 1


def test_allowed_imports_pass(tmp_path: Path) -> None:
    for name in PACKAGES:
        (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "agent" / "protocol").mkdir()
    (tmp_path / "bureau" / "a.py").write_text("from agent.protocol.envelope import Kind\n")
    (tmp_path / "bureau" / "b.py").write_text("from agent.protocol import merkle\n")
    (tmp_path / "agent" / "c.py").write_text("import connectors.sample\nimport indicators.kpi\n")
    (tmp_path / "tieragent" / "d.py").write_text("import bureau.store, simulator.model\n")
    assert violations(tmp_path) == []
