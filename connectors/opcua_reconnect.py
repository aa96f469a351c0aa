"""Between two sessions of the OPC UA connector: its reconnect policy (docs/reliability.md b.4).

`ReconnectPolicy` names what ended a session, whatever asyncua raised, and whether it was
refused (a cause only an operator can fix); draws the next delay from the connection's
`ReconnectSchedule`; logs each cause once per outage (a refusal once until a success or a
change); and waits. After a refusal the wait ends early when the certificate, trust list or
password it depends on changes, so an operator's fix is tried at once.

Its records go to the connector's logger, `connectors.opcua`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from asyncua import ua
from asyncua.common.utils import ServiceError

from connectors.backoff import ReconnectSchedule
from connectors.config import OpcUaConnection
from connectors.errors import ConnectorError, ConnectorRefused
from connectors.opcua_session import describe, refusal_inputs

# The connector's logger: OPC UA collection logs under one name.
log = logging.getLogger("connectors.opcua")

# While a refusal waits, the certificate, trust list and password are checked this often:
# an operator's fix is tried at once instead of after minutes.
_CHANGE_CHECK_S = 1.0


class ReconnectPolicy:
    """The reconnect loop's decisions for one connection.

    `schedule` gives the delays and `delays` keeps the latest ones (the connector exposes
    them as `reconnect` and `retry_delays`). `monotonic` and `sleep` are injectable for
    tests.
    """

    def __init__(
        self,
        name: str,
        connection: OpcUaConnection,
        *,
        monotonic: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.name = name
        self._conn = connection
        self.schedule = ReconnectSchedule(
            min_s=connection.reconnect_min_s,
            fast_s=connection.reconnect_fast_s,
            fast_window_s=connection.reconnect_fast_window_s,
            max_s=connection.reconnect_max_s,
            refused_max_s=connection.reconnect_refused_max_s,
            clock=monotonic,
            on_recovered=self._recovered,
        )
        self.delays: deque[float] = deque(maxlen=64)
        self._monotonic = monotonic
        self._sleep = sleep
        self._logged: set[str] = set()  # causes already logged in this outage / refusal streak

    def reason(self, exc: BaseException) -> tuple[str, bool]:
        """What ended a session (one sentence) and whether it was refused.

        A CancelledError that is a request to stop this task is the caller's to re-raise;
        one that reaches here is a cancellation asyncua let out of its own futures.
        """
        if isinstance(exc, ConnectorRefused):
            return str(exc), True
        if isinstance(exc, ConnectorError):
            return str(exc), False
        failed = f"The OPC UA link to {self._conn.endpoint} failed:"
        if isinstance(exc, (OSError, TimeoutError, ua.UaError, ServiceError)):
            return f"{failed} {describe(exc)}.", False
        if isinstance(exc, asyncio.CancelledError):
            # Not a request to stop: before, it ended the connector's task, and the
            # runtime's supervisor with it.
            reason = f"{failed} an internal request was cancelled."
            log.error("OPC UA %s: %s", self.name, reason, exc_info=exc)
            return reason, False
        # asyncua internals (e.g. #288, #561): a link failure.
        if type(exc).__name__ not in self._logged:
            self._logged.add(type(exc).__name__)
            log.error("OPC UA %s: unexpected error; reconnecting.", self.name, exc_info=exc)
        return f"{failed} {describe(exc)}.", False

    def failed(self, reason: str, refused: bool) -> float:
        """Record a failed attempt or a lost session and log it; return the seconds to wait."""
        delay = self.schedule.failed(refused)
        self.delays.append(delay)
        self._log_failure(reason, refused, delay)
        return delay

    def _log_failure(self, reason: str, refused: bool, delay: float) -> None:
        """Each cause once per outage (refusals: once until a success or a change)."""
        if reason in self._logged:
            log.debug("OPC UA %s: %s (again; attempt %d, next in %.1f s)", self.name, reason,
                      self.schedule.attempts, delay)
            return
        self._logged.add(reason)
        if refused:
            log.warning(
                "OPC UA %s: %s Retrying in %.0f s, then less often (up to every %.0f s); "
                "a change of the certificate, trust list or password is tried at once. "
                "Not logged again until that or a success.",
                self.name, reason, delay, self.schedule.refused_max_s,
            )
        else:
            log.warning("OPC UA %s: %s Retrying in %.1f s.", self.name, reason, delay)

    def _recovered(self, outage_s: float, attempts: int, refusals: int) -> None:
        self._logged.clear()
        # Debug: the runtime logs the one "Connection recovered." line of every connection.
        log.debug(
            "OPC UA %s: collecting again after %.1f s (%d failed attempts, %d refused).",
            self.name, outage_s, attempts, refusals,
        )

    async def pause(self, delay: float, refused_inputs: str | None) -> None:
        """Wait `delay`; after a refusal, end early if what it depends on changed."""
        if refused_inputs is None:
            await self._sleep(delay)
            return
        deadline = self._monotonic() + delay
        while (left := deadline - self._monotonic()) > 0:
            await self._sleep(min(left, _CHANGE_CHECK_S))
            if refusal_inputs(self._conn) != refused_inputs:
                log.info("OPC UA %s: the security settings changed; trying again now.",
                         self.name)
                self.schedule.changed()
                self._logged.clear()
                return
