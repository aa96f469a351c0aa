"""The asyncua server underneath the OPC UA face, made to behave like a real one.

asyncua's own server neither enforces operation limits nor refuses sessions over an
unsecured channel, and knows no username passwords; the subclasses here add that, and
`advertise_operation_limits` publishes the limits they enforce. `simulator.opcua_face`
builds its server from `SimInternalServer`.

The functions at the end do, through asyncua's private API, what the face's restarts and
fault hooks need from a running server: abort client connections, close client sessions
as a restart does, close and reopen the listener (a fast restart), stop quietly, and stop
or resume the subscriptions' publishing loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.binary_server_asyncio import BinaryServer
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.user_managers import UserManager

from simulator.opcua_nodes import standard_node

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OperationLimits:
    """Per-request limits, advertised in Server/ServerCapabilities/OperationLimits.

    0 means unlimited (the OPC UA convention). A larger request is refused as a whole
    with BadTooManyOperations, as real servers do.
    """

    max_nodes_per_read: int = 0
    max_monitored_items_per_call: int = 0
    max_nodes_per_browse: int = 0


class _UserManager(UserManager):
    """Accepts anonymous/certificate tokens (already filtered by the offered token types)
    and username tokens whose password matches."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None:
            return User(role=UserRole.User)
        expected = self._users.get(username)
        if expected is None or not hmac.compare_digest(
            expected.encode(), (password or "").encode()
        ):
            return None
        return User(role=UserRole.User, name=username)


class _LimitedSession(InternalSession):
    """A client session that enforces the operation limits and, in strict mode, refuses
    activation over an unsecured channel (asyncua otherwise lets a NoSecurity channel
    through for discovery and then for sessions too)."""

    sim_limits: OperationLimits = OperationLimits()
    refuse_unsecured: bool = False

    @staticmethod
    def _check(count: int, limit: int) -> None:
        if limit and count > limit:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)

    async def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
        self._check(len(params.NodesToRead), self.sim_limits.max_nodes_per_read)
        return await super().read(params)

    async def browse(self, params: ua.BrowseParameters) -> list[ua.BrowseResult]:
        self._check(len(params.NodesToBrowse), self.sim_limits.max_nodes_per_browse)
        return await super().browse(params)

    async def create_monitored_items(
        self, params: ua.CreateMonitoredItemsParameters
    ) -> list[ua.MonitoredItemCreateResult]:
        self._check(len(params.ItemsToCreate), self.sim_limits.max_monitored_items_per_call)
        return await super().create_monitored_items(params)

    def activate_session(
        self, params: ua.ActivateSessionParameters, peer_certificate: bytes | None
    ) -> ua.ActivateSessionResult:
        if self.refuse_unsecured and not peer_certificate:
            raise ServiceError(ua.StatusCodes.BadSecurityModeRejected)
        return super().activate_session(params, peer_certificate)


class SimInternalServer(InternalServer):
    def __init__(self, limits: OperationLimits, refuse_unsecured: bool, users: Mapping[str, str]):
        super().__init__(user_manager=_UserManager(users))
        self._sim_limits = limits
        self._refuse_unsecured = refuse_unsecured

    def create_session(
        self, name: str, user: User = User(role=UserRole.Anonymous), external: bool = False
    ) -> InternalSession:
        session = _LimitedSession(
            self, self.aspace, self.subscription_service, name, user=user, external=external
        )
        session.sim_limits = self._sim_limits
        session.refuse_unsecured = self._refuse_unsecured
        return session

    async def stop(self) -> None:
        # asyncua waits for its 1 s clock loop to wake up; cancelling it makes a restart
        # fault (and every test teardown) a second shorter.
        if self.time_task is not None:
            self.time_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.time_task
            self.time_task = None
        await super().stop()


async def advertise_operation_limits(server: Server, limits: OperationLimits) -> None:
    """Publish `limits` in Server/ServerCapabilities/OperationLimits."""
    ids = ua.ObjectIds
    for node, value in (
        (
            ids.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
            limits.max_nodes_per_read,
        ),
        (
            ids.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
            limits.max_nodes_per_browse,
        ),
        (
            ids.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
            limits.max_monitored_items_per_call,
        ),
    ):
        await server.write_attribute_value(
            standard_node(node), ua.DataValue(ua.Variant(value, ua.VariantType.UInt32))
        )


# --- a running server's network side and publishing loops (private asyncua API) -------


def abort_clients(server: Server) -> int:
    """Abort every client TCP connection (the listener stays up). Returns how many."""
    if server.bserver is None:
        return 0
    clients = list(server.bserver.clients)
    for protocol in clients:
        if protocol.transport is not None:
            protocol.transport.abort()
    return len(clients)


async def close_client_sessions(server: Server) -> None:
    """Close every client session with its subscriptions, as a server restart does.

    asyncua keeps a session that has subscriptions after its connection is lost (so a
    client may reactivate it, Part 4 §6.7) and `Server.stop` does not close them: their
    publish and timeout loops would outlive the stopped server. Private asyncua API.
    """
    iserver = server.iserver
    for session in list(iserver._external_sessions.values()):
        try:
            await session.close_session(delete_subs=True)
        except Exception:
            _log.debug("Closing a client session raised; ignored.", exc_info=True)
    iserver._external_sessions.clear()


async def quietly_stop(server: Server) -> None:
    # Stopping a server that failed half-way through start must not mask the real error.
    try:
        await server.stop()
    except Exception:
        _log.debug("OPC UA server stop raised; ignored during shutdown.", exc_info=True)


async def close_listener(server: Server) -> None:
    """A process restart as a client sees it: abort every connection, close every session
    and subscription, and close the listener. The address space is kept."""
    abort_clients(server)
    await close_client_sessions(server)
    if server.bserver is not None:
        await server.bserver.stop()
        server.bserver = None


async def reopen_listener(server: Server, host: str, port: int) -> None:
    """Accept connections again after `close_listener`, on `host:port`."""
    # Private asyncua API: what `Server.start` does for the network side.
    listener = BinaryServer(server.iserver, host, port, server.limits)
    listener.set_policies(server._policies)
    await listener.start()
    server.bserver = listener


async def stop_publishing(server: Server, stopped: set[int]) -> None:
    """Stop every client subscription's publishing loop; sessions and monitored items stay.

    Adds the id of each subscription stopped to `stopped`.
    """
    for sub_id, sub in list(server.iserver.subscription_service.subscriptions.items()):
        task = sub._task
        if task is None or sub.pub_request_callback is None:
            continue  # server-internal subscriptions have no client to starve
        sub._task = None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stopped.add(int(sub_id))


def resume_publishing(server: Server, sub_ids: Iterable[int]) -> None:
    """Restart the publishing loops `stop_publishing` stopped (of those still open)."""
    subscriptions = server.iserver.subscription_service.subscriptions
    for sub_id in list(sub_ids):
        sub = subscriptions.get(sub_id)
        if sub is not None and sub._task is None:
            # Private asyncua API: restart the loop that `InternalSubscription.start`
            # would create, keeping the monitored items (stop() would delete them).
            sub._closing = False
            sub._task = asyncio.create_task(sub._subscription_loop())
