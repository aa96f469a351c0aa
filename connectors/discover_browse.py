"""Reading an OPC UA server for `tieragent discover` (connectors.discover): the variables
under Objects with their data types, current values, the integer codes seen while
observing, and the names a server gives an integer's codes (its EnumStrings property).

Connects exactly as the connector does (`open_client`: the same security settings and
trust list), batched to the server's MaxNodesPerBrowse / MaxNodesPerRead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from asyncua import Client, ua

from connectors.config import OpcUaConnection, OpcUaPolicy, OpcUaSecurity
from connectors.errors import ConnectorUnavailable
from connectors.opcua_security import SecurityNotOffered, _offered
from connectors.opcua_session import (
    BatchedSession,
    close_client,
    open_client,
    read_operation_limits,
)
from connectors.opcua_values import plain_value

INTEGER_TYPES = frozenset({"SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64",
                           "UInt64"})
# Variables whose children are browsed too (a state machine's CurrentState has Number).
_DESCEND_VARIABLES = frozenset({"currentstate"})


@dataclass
class Variable:
    """One variable found under Objects."""

    node: str  # "ns=<i>;s=..." as the config writes it
    browse_path: str  # browse names joined with "/" from below Objects
    name: str
    data_type: str = "Unknown"
    value: bool | int | float | str | None = None  # the value read once while browsing
    codes: list[int] = field(default_factory=list)  # integer values seen (state guesses)
    history: list[object] = field(default_factory=list)  # every value read, in order
    enum_names: list[str] = field(default_factory=list)  # its EnumStrings, index = code


async def discover(
    url: str,
    security: OpcUaSecurity | None = None,
    *,
    timeout_s: float = 10.0,
    max_depth: int = 12,
    max_variables: int = 50_000,
    observe_s: float = 0.0,
) -> list[Variable]:
    """Variables under Objects with their data types and current values.

    Connects exactly as the connector does (`open_client`, the same security settings and
    trust list). Bounded by `max_depth` levels and `max_variables`. With `observe_s`, the
    integer variables are read again every half second for that long, so a state guess
    sees more than one code. Raises ConnectorUnavailable / ConnectorRefused (see
    `open_client`) or ValueError for a malformed URL.
    """
    connection = OpcUaConnection(
        endpoint=url, security=security or OpcUaSecurity(), request_timeout_s=timeout_s
    )
    try:
        client = await open_client(connection)
    except ConnectorUnavailable:
        if connection.security.policy == OpcUaPolicy.NONE:
            await _refuse_if_secured_only(connection)
        raise
    try:
        session = BatchedSession(client, await read_operation_limits(client))
        found = await _walk(session, max_depth, max_variables)
        nodes = [ua.NodeId.from_string(v.node) for v in found]
        types = await _data_type_names(session, nodes)
        for variable, type_name in zip(found, types, strict=True):
            variable.data_type = type_name
        await _read_values(session, found, nodes)
        integers = [i for i, v in enumerate(found) if v.data_type in INTEGER_TYPES]
        await _read_enum_names(session, [found[i] for i in integers], [nodes[i] for i in integers])
        for _ in range(int(observe_s / 0.5)):
            await asyncio.sleep(0.5)
            await _read_values(session, [found[i] for i in integers], [nodes[i] for i in integers])
        return found
    finally:
        await close_client(client, timeout_s)


async def _refuse_if_secured_only(connection: OpcUaConnection) -> None:
    """Raise SecurityNotOffered naming what the server offers when it has no None endpoint
    (asyncua only says "No matching endpoints"); return if it cannot tell."""
    client = Client(connection.endpoint, timeout=connection.request_timeout_s)
    try:
        endpoints = await asyncio.wait_for(
            client.connect_and_get_server_endpoints(), connection.request_timeout_s * 2
        )
    except Exception:  # unreachable, or not an OPC UA server: the first error says enough
        return
    if endpoints and all(ep.SecurityMode != ua.MessageSecurityMode.None_ for ep in endpoints):
        raise SecurityNotOffered(
            f"The OPC UA server at {connection.endpoint} offers no unsecured endpoint; it "
            f"offers {_offered(endpoints)}. Connect with one of these (a security policy and "
            "mode, with a client certificate)."
        )


async def _read_values(
    session: BatchedSession, variables: Sequence[Variable], nodes: Sequence[ua.NodeId]
) -> None:
    for variable, data in zip(variables, await session.read(nodes), strict=True):
        good = data.StatusCode is None or data.StatusCode.is_good()
        value = plain_value(data.Value.Value) if good and data.Value is not None else None
        if variable.value is None or value is not None:
            variable.value = value
        variable.history.append(value)
        if isinstance(value, int) and not isinstance(value, bool) and value not in variable.codes:
            variable.codes.append(value)


async def _read_enum_names(
    session: BatchedSession, variables: Sequence[Variable], nodes: Sequence[ua.NodeId]
) -> None:
    """Each integer variable's EnumStrings property (the names of its codes), where the
    server publishes one: an enumeration-typed PLC variable, a companion specification."""
    if not nodes:
        return
    results = await session.browse(
        [_browse_description(node, ua.ObjectIds.HasProperty) for node in nodes]
    )
    found: list[tuple[Variable, ua.NodeId]] = []
    for variable, result in zip(variables, results, strict=True):
        for reference in result.References:
            if reference.BrowseName.Name == "EnumStrings":
                found.append((variable, ua.NodeId(reference.NodeId.Identifier,
                                                  reference.NodeId.NamespaceIndex,
                                                  reference.NodeId.NodeIdType)))
    if not found:
        return
    values = await session.read([node for _, node in found])
    for (variable, _), data in zip(found, values, strict=True):
        names = data.Value.Value if data.Value is not None else None
        if isinstance(names, list):
            variable.enum_names = [str(getattr(n, "Text", n) or "") for n in names]


def _browse_description(
    node_id: ua.NodeId, reference_type: int = ua.ObjectIds.HierarchicalReferences
) -> ua.BrowseDescription:
    description = ua.BrowseDescription()
    description.NodeId = node_id
    description.BrowseDirection = ua.BrowseDirection.Forward
    description.ReferenceTypeId = ua.NodeId(ua.Int32(reference_type))
    description.IncludeSubtypes = True
    description.NodeClassMask = ua.NodeClass.Object | ua.NodeClass.Variable
    description.ResultMask = ua.BrowseResultMask.All
    return description


async def _walk(session: BatchedSession, max_depth: int, max_variables: int) -> list[Variable]:
    found: list[Variable] = []
    seen: set[str] = set()
    level: list[tuple[ua.NodeId, str]] = [(ua.NodeId(ua.Int32(ua.ObjectIds.ObjectsFolder)), "")]
    for _depth in range(max_depth):
        if not level or len(found) >= max_variables:
            break
        results = await session.browse([_browse_description(node) for node, _ in level])
        next_level: list[tuple[ua.NodeId, str]] = []
        for (_, path), result in zip(level, results, strict=True):
            for reference in result.References:
                node_id = ua.NodeId(
                    reference.NodeId.Identifier,
                    reference.NodeId.NamespaceIndex,
                    reference.NodeId.NodeIdType,
                )
                text = node_id.to_string()
                if node_id.NamespaceIndex == 0 or text in seen:
                    continue
                seen.add(text)
                name = reference.BrowseName.Name or str(reference.DisplayName.Text)
                child_path = f"{path}/{name}" if path else name
                if reference.NodeClass == ua.NodeClass.Variable:
                    found.append(Variable(text, child_path, name))
                    if name.lower() not in _DESCEND_VARIABLES:
                        continue
                next_level.append((node_id, child_path))
        level = next_level
    return found[:max_variables]


async def _data_type_names(session: BatchedSession, nodes: Sequence[ua.NodeId]) -> list[str]:
    values = await session.read(nodes, ua.AttributeIds.DataType)
    type_ids: list[ua.NodeId | None] = [
        v.Value.Value if v.Value is not None and isinstance(v.Value.Value, ua.NodeId) else None
        for v in values
    ]
    custom = sorted({t.to_string() for t in type_ids if t is not None and t.NamespaceIndex != 0})
    names: dict[str, str] = {}
    if custom:
        custom_ids = [ua.NodeId.from_string(text) for text in custom]
        for text, value in zip(
            custom, await session.read(custom_ids, ua.AttributeIds.BrowseName), strict=True
        ):
            browse_name = value.Value.Value if value.Value is not None else None
            names[text] = browse_name.Name if isinstance(browse_name, ua.QualifiedName) else text
    result = []
    for type_id in type_ids:
        if type_id is None:
            result.append("Unknown")
        elif type_id.NamespaceIndex == 0 and isinstance(type_id.Identifier, int):
            result.append(ua.ObjectIdNames.get(type_id.Identifier, type_id.to_string()))
        else:
            result.append(names.get(type_id.to_string(), type_id.to_string()))
    return result
