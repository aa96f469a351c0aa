"""The environment of the agent's own child processes (`python -m agent.…`)."""

from __future__ import annotations

import os
from pathlib import Path


def child_env() -> dict[str, str]:
    """This environment, with the directory this `agent` package was imported from first on
    the path: a child runs the same code as its parent."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env
