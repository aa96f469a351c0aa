"""Where the repository is, and how a child Python process imports the test helpers.

pytest puts the repository root on `sys.path` (`pythonpath` in pyproject.toml), so tests
import these helpers as `tests.support.…`; that setting does not reach a process a test
starts, which gets the root through PYTHONPATH instead (`python_env`).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def python_env(**extra: str) -> dict[str, str]:
    """`os.environ` plus `extra`, with the repository root first on PYTHONPATH."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, **extra, "PYTHONPATH": os.pathsep.join(paths)}
