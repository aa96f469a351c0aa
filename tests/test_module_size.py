"""Every source module stays within the project's size limit (500 lines).

A module that grows past it is split by moving a coherent job into its own module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tieragent", "agent", "bureau", "connectors", "indicators", "simulator")
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(
        path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_there_are_modules_to_check() -> None:
    assert len(_modules()) > len(PACKAGES)


@pytest.mark.parametrize(
    "path", _modules(), ids=lambda path: path.relative_to(ROOT).as_posix()
)
def test_module_is_within_the_size_limit(path: Path) -> None:
    lines = _lines(path)
    assert lines <= MAX_LINES, (
        f"{path.relative_to(ROOT).as_posix()} has {lines} lines, over the limit of "
        f"{MAX_LINES}: move a coherent job into its own module."
    )
