"""The asyncua server underneath the OPC UA face, made to behave like a real one.

asyncua's own server neither enforces operation limits nor refuses sessions over an
unsecured channel, and knows no username passwords; the subclasses here add that, and
`advertise_operation_limits` publishes the limits they enforce. `simulator.opcua_face`
builds its server from `SimInternalServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.user_managers import UserManager

from simulator.opcua_nodes import standard_node


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
