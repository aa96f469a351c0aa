"""The simulator's OPC UA address space: NodeIds, served types and AddNodes items.

Signals live at Objects/Factory/<line>/<device>/<signal> as string NodeIds
`ns=2;s=Factory/<line>/<device>/<signal>` in namespace `urn:tieragent:simulator`
(registered first, so its index is 2); synthetic load-test tags live under
Factory/Synthetic. The OPC UA face (`simulator.opcua_face`) builds its nodes from these.
"""

from __future__ import annotations

from collections.abc import Sequence

from asyncua import Server, ua

from simulator.api import SignalSpec

NAMESPACE_URI = "urn:tieragent:simulator"
NAMESPACE_INDEX = 2
SYNTHETIC_LINE = "Synthetic"
SYNTHETIC_GROUP = 100  # tags per folder: asyncua adds a child in O(siblings)


def string_node(path: str) -> ua.NodeId:
    """`ns=2;s=<path>`. (asyncua types its constructors with NewTypes, hence the wraps.)"""
    return ua.NodeId(ua.String(path), ua.Int16(NAMESPACE_INDEX))


def standard_node(identifier: int) -> ua.NodeId:
    return ua.NodeId(ua.Int32(identifier))


def variant_type_of(spec: SignalSpec) -> ua.VariantType:
    """The OPC UA built-in type a signal is served as.

    Counters are unsigned with the width of their wrap (`counter_bits`), the way PLC
    counters are usually exposed; other integers (state codes) are Int32.
    """
    if spec.value_type == "bool":
        return ua.VariantType.Boolean
    if spec.value_type == "float":
        return ua.VariantType.Double
    if spec.value_type == "str":
        return ua.VariantType.String
    return {16: ua.VariantType.UInt16, 32: ua.VariantType.UInt32, 64: ua.VariantType.UInt64}.get(
        spec.counter_bits or 0, ua.VariantType.Int32
    )


def synthetic_path(index: int) -> str:
    """Path of synthetic tag `index`: Factory/Synthetic/G000/Tag00000 (100 per folder)."""
    return f"Factory/{SYNTHETIC_LINE}/G{index // SYNTHETIC_GROUP:03d}/Tag{index:05d}"


def opcua_path_of(spec: SignalSpec) -> str:
    return spec.opcua_path or f"Factory/{spec.line}/{spec.device_id}/{spec.signal_id}"


def coerce_value(
    value: bool | int | float | str, variant_type: ua.VariantType
) -> bool | int | float | str:
    """`value` as the Python type asyncua encodes as `variant_type`."""
    if variant_type == ua.VariantType.Boolean:
        return bool(value)
    if variant_type == ua.VariantType.Double:
        return float(value)
    if variant_type == ua.VariantType.String:
        return str(value)
    # Out-of-range integers wrap as they would in a PLC register instead of failing the
    # whole tick's encoding.
    bits = {ua.VariantType.UInt16: 16, ua.VariantType.UInt32: 32, ua.VariantType.UInt64: 64}
    if variant_type in bits:
        return int(value) % (1 << bits[variant_type])
    wrapped = int(value) % (1 << 32)
    return wrapped - (1 << 32) if wrapped >= 1 << 31 else wrapped


def object_item(path: str, parent: str | None) -> ua.AddNodesItem:
    """A folder at `path` under the folder `parent` (None = the Objects folder)."""
    name = path.rsplit("/", 1)[-1]
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = string_node(path)
    item.BrowseName = ua.QualifiedName(name, NAMESPACE_INDEX)
    item.NodeClass = ua.NodeClass.Object
    item.ParentNodeId = (
        standard_node(ua.ObjectIds.ObjectsFolder) if parent is None else string_node(parent)
    )
    item.ReferenceTypeId = standard_node(ua.ObjectIds.Organizes)
    item.TypeDefinition = standard_node(ua.ObjectIds.FolderType)
    attrs = ua.ObjectAttributes()
    attrs.EventNotifier = 0
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.Description = ua.LocalizedText(name)
    item.NodeAttributes = attrs
    return item


def variable_item(
    nodeid: ua.NodeId, name: str, parent_path: str, variant_type: ua.VariantType
) -> ua.AddNodesItem:
    """A read-only scalar variable, created without a value (the face writes it)."""
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = ua.QualifiedName(name, NAMESPACE_INDEX)
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = string_node(parent_path)
    item.ReferenceTypeId = standard_node(ua.ObjectIds.HasComponent)
    item.TypeDefinition = standard_node(ua.ObjectIds.BaseDataVariableType)
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.Description = ua.LocalizedText(name)
    attrs.DataType = standard_node(variant_type.value)
    attrs.ValueRank = ua.ValueRank.Scalar
    attrs.Value = ua.Variant(None, ua.VariantType.Null)
    attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
    attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
    attrs.Historizing = False
    item.NodeAttributes = attrs
    return item


async def add_enum_strings(server: Server, nodeid: ua.NodeId, names: Sequence[str]) -> None:
    """The standard EnumStrings property of `nodeid` (0:EnumStrings, LocalizedText[], index =
    code), as enumeration-typed PLC variables and companion specifications publish it."""
    prop = ua.NodeId(ua.String(str(nodeid.Identifier) + "/EnumStrings"), nodeid.NamespaceIndex)
    await server.get_node(nodeid).add_property(
        prop, ua.QualifiedName("EnumStrings", 0), [ua.LocalizedText(n) for n in names],
        varianttype=ua.VariantType.LocalizedText,
    )
