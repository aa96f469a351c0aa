"""Browse an OPC UA server and draft the `signals:` list of a device configuration.

`discover` walks the hierarchy under Objects (skipping namespace 0, the server's own
diagnostics), batched to the server's MaxNodesPerBrowse / MaxNodesPerRead, and returns
one entry per variable. `render_signal_map` turns that into YAML to paste under a
device's `signals:`; every role is only a guess from the variable's name, to be checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml
from asyncua import ua

from connectors.config import OpcUaConnection, OpcUaSecurity
from connectors.opcua_session import (
    BatchedSession,
    close_client,
    open_client,
    read_operation_limits,
)

# Role guesses, checked in this order (so "GoodCount" is good_count, not total_count, and
# "EnergyTotal" is energy_kwh): (role, fragments found anywhere, words that must stand alone).
_ROLE_RULES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("good_count", ("good",), ()),
    ("reject_count", ("reject", "scrap"), ("ng",)),
    ("energy_kwh", ("energy", "kwh"), ()),
    ("total_count", ("total", "count"), ()),
    ("alarm", ("alarm",), ()),
    ("auto_mode", ("auto",), ()),
    ("state", ("state", "status"), ()),
)
_ID = re.compile(r"[^A-Za-z0-9_.\-]+")


def _words(name: str) -> list[str]:
    """Lower-case words of a CamelCase / snake_case name ("NGCount" -> ["ng", "count"])."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    return re.sub(r"[^A-Za-z0-9]+", " ", spaced).lower().split()


def guess_role(name: str) -> str:
    """The signal role suggested by a variable's name; `process` when nothing matches.

    "NG" counts as a reject only as a word of its own ("NGCount", "count_ng"), never inside
    another word ("Running").
    """
    words = _words(name)
    lowered = name.lower()
    for role, fragments, whole_words in _ROLE_RULES:
        if any(f in lowered for f in fragments) or any(w in words for w in whole_words):
            return role
    return "process"


async def discover(
    url: str,
    security: OpcUaSecurity | None = None,
    *,
    timeout_s: float = 10.0,
    max_depth: int = 12,
    max_variables: int = 50_000,
) -> list[dict[str, str]]:
    """Variables under Objects, each as {node, browse_path, data_type, role, name}.

    `node` is the "ns=<i>;s=..." id usable in the config; `browse_path` joins browse names
    with "/" from below Objects. Bounded by `max_depth` levels and `max_variables`.
    Raises ConnectorUnavailable / ConnectorRefused (see `open_client`) or ValueError for
    a malformed URL.
    """
    connection = OpcUaConnection(
        endpoint=url, security=security or OpcUaSecurity(), request_timeout_s=timeout_s
    )
    client = await open_client(connection)
    try:
        session = BatchedSession(client, await read_operation_limits(client))
        found = await _walk(session, max_depth, max_variables)
        types = await _data_type_names(session, [ua.NodeId.from_string(f["node"]) for f in found])
        for entry, type_name in zip(found, types, strict=True):
            entry["data_type"] = type_name
        return found
    finally:
        await close_client(client, timeout_s)


def _browse_description(node_id: ua.NodeId) -> ua.BrowseDescription:
    description = ua.BrowseDescription()
    description.NodeId = node_id
    description.BrowseDirection = ua.BrowseDirection.Forward
    description.ReferenceTypeId = ua.NodeId(ua.Int32(ua.ObjectIds.HierarchicalReferences))
    description.IncludeSubtypes = True
    description.NodeClassMask = ua.NodeClass.Object | ua.NodeClass.Variable
    description.ResultMask = ua.BrowseResultMask.All
    return description


async def _walk(
    session: BatchedSession, max_depth: int, max_variables: int
) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
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
                    found.append(
                        {
                            "node": text,
                            "browse_path": child_path,
                            "name": name,
                            "role": guess_role(name),
                        }
                    )
                else:
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


def render_signal_map(found: Sequence[dict[str, str]]) -> str:
    """YAML for a device's `signals:` list, one entry per discovered variable.

    Ids are made unique and config-safe from the variable names. A `state` signal gets
    `state_map: plain` as a placeholder to replace with the device's preset. Each entry is
    preceded by a comment with its browse path and data type.
    """
    lines = [
        f"# {len(found)} variables discovered. Roles are guesses from the names: check each",
        "# one, keep only what the device really has, and set state_map for state signals.",
    ]
    used: set[str] = set()
    for entry in found:
        base = _ID.sub("_", entry["name"]).strip("_.-") or "signal"
        signal_id, n = base[:60], 2
        while signal_id in used:
            signal_id, n = f"{base[:56]}_{n}", n + 1
        used.add(signal_id)
        signal: dict[str, Any] = {"id": signal_id, "role": entry["role"]}
        if entry["role"] == "state":
            signal["state_map"] = "plain"
        signal["opcua"] = {"node": entry["node"]}
        lines.append(f"# {entry['browse_path']} ({entry.get('data_type', 'Unknown')})")
        dumped = yaml.safe_dump([signal], sort_keys=False, allow_unicode=True, width=1000)
        lines.extend(dumped.rstrip("\n").splitlines())
    return "\n".join(lines) + "\n"
