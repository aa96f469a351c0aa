"""systemd's notify protocol (sd_notify(3)) without a dependency: READY, WATCHDOG, STOPPING.

Under `Type=notify` systemd sets NOTIFY_SOCKET (a path, or an abstract socket written with a
leading '@') and, with `WatchdogSec=`, WATCHDOG_USEC (and WATCHDOG_PID). Outside systemd
nothing is set and every call here does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Datagrams to the service manager's socket; a no-op when there is none."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> bool:
        """Send one state string (e.g. "READY=1"); False if there is no socket or it fails."""
        if self.address is None:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]  # an abstract socket
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), target)
        except OSError as exc:
            log.warning("Cannot notify systemd.", extra={"fields": {
                "socket": self.address, "message": message, "error": exc.strerror}})
            return False
        return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None without a watchdog."""
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # the watchdog is meant for another process
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


async def supervise(
    notifier: Notifier, healthy: Callable[[], bool], stop: asyncio.Event,
    interval: float | None, *, poll_s: float = 0.1,
) -> None:
    """READY=1 once `healthy()`, then WATCHDOG=1 every `interval` s while healthy, and
    STOPPING=1 as soon as `stop` is set. Without a socket it returns at once."""
    if not notifier.enabled:
        return
    while not healthy():
        if await _stopped(stop, poll_s):
            notifier.send("STOPPING=1")
            return
    notifier.send("READY=1")
    while True:
        if interval is None:
            await stop.wait()
            break
        if await _stopped(stop, interval):
            break
        if healthy():
            notifier.send("WATCHDOG=1")  # withheld while degraded: systemd restarts us
        else:
            log.warning("Agent unhealthy; systemd watchdog not fed.")
    notifier.send("STOPPING=1")


async def _stopped(stop: asyncio.Event, timeout: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout)
    return stop.is_set()
