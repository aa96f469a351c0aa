"""One `tieragent run` per data directory: an exclusive lock on `<data-dir>/agent.lock`.

The lock is `fcntl.flock` on an open file that holds the holder's pid. The kernel releases it
when the process ends, however it ends, so a stale file left by a crash never blocks a
restart; the pid in it only names the holder for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from agent.errors import AgentError

LOCK_NAME = "agent.lock"


class InstanceLocked(AgentError):
    """Another process holds the data directory's lock (exit 2)."""


class InstanceLock:
    """`with InstanceLock(data_dir):` holds the data directory's lock for the block."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise InstanceLocked(
                f"{self.path.parent} is in use by another `tieragent run` (pid {holder}, lock "
                f"{self.path}): stop that one first, or give this one another --data-dir."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no pid of a process that no longer holds it
            os.close(self._fd)  # closing the file releases the lock
            self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
