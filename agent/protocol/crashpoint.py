"""Named crash points for fault tests (docs/reliability.md §c P1, T7).

`crash_point("after_commit")` kills the process with SIGKILL when the environment variable
TIERAGENT_CRASH_AT names that point, so tests can crash deterministically between two steps
of a protocol. With the variable unset it does nothing.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "TIERAGENT_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
