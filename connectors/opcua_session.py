"""One asyncua client session: open it securely, close it boundedly, and send requests
batched to the server's operation limits. Shared by the connector and `discover`.

Limits come from Server/ServerCapabilities/OperationLimits (0 = no limit). A server that
advertises a limit too high, or none, and then answers BadTooManyOperations gets the
batch halved and resent, so thousands of nodes work on any server.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from asyncua import Client, ua

from connectors.config import OpcUaConnection
from connectors.errors import ConnectorRefused, ConnectorUnavailable
from connectors.opcua_security import apply_security

log = logging.getLogger(__name__)

# Batch size when the server sets no limit: keeps each message well below transport limits.
DEFAULT_BATCH = 1000
# A session the agent abandons (crash, lost link) is freed by the server after this long.
SESSION_TIMEOUT_MS = 60_000
APPLICATION_NAME = "tieragent"

_REFUSALS = frozenset(
    {
        ua.StatusCodes.BadUserAccessDenied,
        ua.StatusCodes.BadIdentityTokenInvalid,
        ua.StatusCodes.BadIdentityTokenRejected,
        ua.StatusCodes.BadCertificateUntrusted,
        ua.StatusCodes.BadCertificateInvalid,
        ua.StatusCodes.BadCertificateUriInvalid,
        ua.StatusCodes.BadCertificateTimeInvalid,
        ua.StatusCodes.BadCertificateUseNotAllowed,
        ua.StatusCodes.BadCertificateRevoked,
        ua.StatusCodes.BadSecurityChecksFailed,
        ua.StatusCodes.BadSecurityPolicyRejected,
        ua.StatusCodes.BadSecurityModeRejected,
    }
)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class OperationLimits:
    """Per-call item limits the server advertises; 0 means it sets none."""

    max_nodes_per_read: int = 0
    max_monitored_items_per_call: int = 0
    max_nodes_per_browse: int = 0


LIMIT_NODES = (
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
)


def describe(exc: BaseException) -> str:
    """A short, readable cause for a link failure (used in LinkEvent reasons)."""
    if isinstance(exc, ua.UaStatusCodeError):
        return ua.StatusCode(exc.code).name
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def refusal_inputs(connection: OpcUaConnection) -> str:
    """A digest of what a refusal can depend on and an operator may change while the agent
    runs: the client certificate and key files, the trust list folders and the password's
    current value (environment variable or file). A different digest means "something
    changed": a refused connection is worth trying again at once."""
    security = connection.security
    digest = hashlib.sha256()

    def add(text: str) -> None:
        digest.update(text.encode("utf-8", "surrogateescape") + b"\0")

    def add_path(path: Path) -> None:
        try:
            stat = path.stat()
        except OSError:
            add(f"{path}:missing")
            return
        add(f"{path}:{stat.st_mtime_ns}:{stat.st_size}")

    for path in (security.certificate, security.private_key):
        if path is not None:
            add_path(path)
    if security.certificate is not None or security.pki_dir is not None:
        pki = security.pki_dir or (
            security.certificate.parent / "pki" if security.certificate else None
        )
        if pki is not None:
            for folder in ("trusted", "crl"):
                root = pki / folder  # a missing folder reads as an empty one
                try:
                    entries = sorted(root.iterdir())
                except OSError:
                    entries = []
                for entry in entries[:1000]:  # bounded: a trust list is small
                    add_path(entry)
    add(security.username or "")
    if security.password is not None:
        try:
            add(hashlib.sha256(security.password.resolve().encode()).hexdigest())
        except (LookupError, OSError) as exc:
            add(f"unreadable:{type(exc).__name__}")
    return digest.hexdigest()


async def open_client(
    connection: OpcUaConnection,
    on_lost: Callable[[Exception], Coroutine[Any, Any, None]] | None = None,
) -> Client:
    """A new, connected client (never a reused one: asyncua #1660).

    asyncua's own auto-reconnect stays off; the caller owns reconnection. Raises
    ConnectorUnavailable (unreachable, timeout, server error) or ConnectorRefused
    (security, credentials) with a sentence naming the endpoint.
    """
    client = Client(connection.endpoint, timeout=connection.request_timeout_s)
    client.name = client.description = APPLICATION_NAME
    client.application_uri = f"urn:{APPLICATION_NAME}:client"
    client.product_uri = f"urn:{APPLICATION_NAME}"
    client.session_timeout = SESSION_TIMEOUT_MS
    client.connection_lost_callback = on_lost
    # asyncua's stale-subscription watchdog (on whether or not auto_reconnect is) recreates a
    # silent subscription in place; seen in the F3 test, the new subscription's notifications
    # then arrived as "data for unknown subscription" and were dropped, while the recreations
    # kept our own liveness check (`OpcUaConnector._stream`) from firing. Off: a silent
    # subscription ends the session here, and a new client subscribes from scratch.
    client._stale_check_margin = math.inf  # private: no public switch in asyncua 2.x
    try:
        await asyncio.wait_for(apply_security(client, connection), connection.request_timeout_s * 2)
        await asyncio.wait_for(client.connect(), connection.request_timeout_s * 3)
    except ConnectorRefused:
        await close_client(client, connection.request_timeout_s)
        raise
    except ua.UaStatusCodeError as exc:
        await close_client(client, connection.request_timeout_s)
        where = f"The OPC UA server at {connection.endpoint}"
        if exc.code in _REFUSALS:
            raise ConnectorRefused(f"{where} refused the session: {describe(exc)}.") from None
        raise ConnectorUnavailable(f"{where} failed the connection: {describe(exc)}.") from None
    except (OSError, TimeoutError, ua.UaError) as exc:
        await close_client(client, connection.request_timeout_s)
        raise ConnectorUnavailable(
            f"Cannot reach the OPC UA server at {connection.endpoint}: {describe(exc)}."
        ) from None
    return client


async def close_client(client: Client, timeout_s: float) -> None:
    """Close session, channel and socket within `timeout_s`, whatever state the link is in."""
    try:
        await asyncio.wait_for(client.disconnect(), min(timeout_s, 2.0))
    except asyncio.CancelledError:
        client.disconnect_socket()
        raise
    except Exception as exc:  # a broken link can fail teardown in any way (asyncua #288)
        log.debug("OPC UA teardown ended with %s; closing the socket.", describe(exc))
    client.disconnect_socket()
    reraise_cancellation()


def reraise_cancellation() -> None:
    """Raise CancelledError if the current task was asked to stop.

    asyncua's Client swallows a CancelledError that arrives while it awaits its own
    cancelled tasks (`Client._cancel_task`); the request to stop is still pending on the
    task, so honour it here instead of reconnecting forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def read_operation_limits(client: Client) -> OperationLimits:
    """The server's advertised limits; unreadable ones count as 0 (none advertised)."""
    params = ua.ReadParameters()
    for object_id in LIMIT_NODES:
        item = ua.ReadValueId()
        item.NodeId = ua.NodeId(ua.Int32(object_id))
        item.AttributeId = ua.AttributeIds.Value
        params.NodesToRead.append(item)
    values = await client.uaclient.read(params)
    limits: list[int] = []
    for value in values:
        good = value.StatusCode is None or value.StatusCode.is_good()
        raw = value.Value.Value if good and value.Value is not None else None
        limits.append(int(raw) if isinstance(raw, int) and raw > 0 else 0)
    return OperationLimits(*limits)


class Batcher:
    """Runs item-list requests in chunks no larger than a limit, halving on overload."""

    def __init__(self, limit: int, what: str) -> None:
        self.size = limit if limit > 0 else DEFAULT_BATCH
        self.what = what

    async def run(
        self, items: Sequence[T], call: Callable[[list[T]], Awaitable[list[R]]]
    ) -> list[R]:
        """Results in item order. Raises what `call` raises, except that
        BadTooManyOperations halves the batch size and retries the chunk."""
        results: list[R] = []
        index = 0
        while index < len(items):
            chunk = list(items[index : index + self.size])
            try:
                results.extend(await call(chunk))
            except ua.UaStatusCodeError as exc:
                if exc.code != ua.StatusCodes.BadTooManyOperations or self.size == 1:
                    raise
                self.size = max(1, self.size // 2)
                log.info(
                    "Server refused %d %s per call; now sending %d.",
                    len(chunk),
                    self.what,
                    self.size,
                )
                continue
            index += len(chunk)
        return results


class BatchedSession:
    """Read and browse on one connected client, batched to its operation limits."""

    def __init__(self, client: Client, limits: OperationLimits) -> None:
        self.client = client
        self.limits = limits
        self.reads = Batcher(limits.max_nodes_per_read, "reads")
        self.browses = Batcher(limits.max_nodes_per_browse, "browses")
        self.monitored = Batcher(limits.max_monitored_items_per_call, "monitored items")

    async def read(
        self, node_ids: Sequence[ua.NodeId], attribute: ua.AttributeIds = ua.AttributeIds.Value
    ) -> list[ua.DataValue]:
        """One DataValue per node id (source and server timestamps requested)."""

        async def call(chunk: list[ua.NodeId]) -> list[ua.DataValue]:
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            for node_id in chunk:
                item = ua.ReadValueId()
                item.NodeId = node_id
                item.AttributeId = attribute
                params.NodesToRead.append(item)
            return await self.client.uaclient.read(params)

        return await self.reads.run(node_ids, call)

    async def browse(self, descriptions: Sequence[ua.BrowseDescription]) -> list[ua.BrowseResult]:
        """One BrowseResult per description, continuation points followed to the end."""

        async def call(chunk: list[ua.BrowseDescription]) -> list[ua.BrowseResult]:
            params = ua.BrowseParameters()
            params.NodesToBrowse = chunk
            params.RequestedMaxReferencesPerNode = 0
            results = await self.client.uaclient.browse(params)
            for result in results:
                await self._browse_rest(result)
            return results

        return await self.browses.run(descriptions, call)

    async def _browse_rest(self, result: ua.BrowseResult) -> None:
        for _ in range(10_000):  # bounded: a server could hand out continuation points forever
            if not result.ContinuationPoint:
                return
            params = ua.BrowseNextParameters()
            params.ContinuationPoints = [result.ContinuationPoint]
            (more,) = await self.client.uaclient.browse_next(params)
            result.References.extend(more.References)
            result.ContinuationPoint = more.ContinuationPoint
