"""The OPC UA face, seen by an independent asyncua Client over real TCP on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import (
    SecurityPolicyAes256Sha256RsaPss,
    SecurityPolicyBasic256Sha256,
)

from simulator.certs import CLIENT_APPLICATION_URI
from simulator.opcua_face import OpcUaFace, OpcUaFaceConfig
from simulator.opcua_nodes import NAMESPACE_URI, standard_node, synthetic_path
from simulator.opcua_server import OperationLimits


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None) if value.tzinfo else value


@pytest.fixture
async def face(opcua_source: Any) -> AsyncIterator[OpcUaFace]:
    async with OpcUaFace(opcua_source, OpcUaFaceConfig(tick_s=0.05)) as running:
        yield running


class DataChanges:
    """Collects subscription notifications (only enqueues, per docs/reliability.md §d asyncua 3)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, ua.DataValue]] = asyncio.Queue()

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.queue.put_nowait((node.nodeid.to_string(), data.monitored_item.Value))

    async def next_for(self, nodeid: str, timeout: float = 3.0) -> ua.DataValue:
        async with asyncio.timeout(timeout):
            while True:
                got, value = await self.queue.get()
                if got == nodeid:
                    return value


async def test_values_types_and_source_timestamps_match_the_source(
    face: OpcUaFace, opcua_source: Any
) -> None:
    """If a client reads every signal, then it gets the source's value, the right built-in
    type and SourceTimestamp = the moment the value changed."""
    expected_types = {
        "state": ua.VariantType.Int32,
        "good_count": ua.VariantType.UInt32,
        "short_count": ua.VariantType.UInt16,
        "spindle_temp": ua.VariantType.Double,
        "auto": ua.VariantType.Boolean,
        "program": ua.VariantType.String,
    }
    truth = opcua_source.values_at(0)
    async with Client(face.endpoint_url, timeout=5) as client:
        assert (await client.get_namespace_array()).index(NAMESPACE_URI) == 2
        for (device, signal), expected in truth.items():
            node = client.get_node(f"ns=2;s=Factory/L1/{device}/{signal}")
            data: Any = await node.read_data_value()
            assert data.StatusCode.is_good()
            assert data.Value.Value == expected.value
            assert _naive(data.SourceTimestamp) == _ts(expected.changed_at)
            if device == "CNC-01":
                assert data.Value.VariantType == expected_types[signal]
                assert (await node.read_data_type()) == standard_node(expected_types[signal].value)


async def test_address_space_is_browsable_by_path(face: OpcUaFace) -> None:
    """If a client browses Objects/Factory/L1/CNC-01, then it finds the signal variables."""
    async with Client(face.endpoint_url, timeout=5) as client:
        device = await client.nodes.objects.get_child(["2:Factory", "2:L1", "2:CNC-01"])
        names = {(await child.read_browse_name()).Name for child in await device.get_children()}
    assert names == {"state", "good_count", "short_count", "spindle_temp", "auto", "program"}


async def test_changes_reach_a_subscription_and_unchanged_values_are_not_rewritten(
    face: OpcUaFace, opcua_source: Any
) -> None:
    """If the source changes one value, then a subscriber gets it with its change time;
    if nothing changes, then the face writes nothing."""
    nodeid = face.node_id("CNC-01", "good_count")
    async with Client(face.endpoint_url, timeout=5) as client:
        handler = DataChanges()
        sub = await client.create_subscription(50, handler)
        await sub.subscribe_data_change(client.get_node(nodeid))
        await handler.next_for(nodeid)  # the initial notification
        writes_before = face.stats.writes
        await asyncio.sleep(0.3)
        assert face.stats.writes == writes_before
        opcua_source.set("CNC-01", "good_count", 4_000_000_005, changed_at=1_780_000_100.5)
        value: Any = await handler.next_for(nodeid)
    assert value.Value.Value == 4_000_000_005
    assert _naive(value.SourceTimestamp) == _ts(1_780_000_100.5)
    assert face.stats.writes == writes_before + 1


async def test_operation_limits_are_advertised_and_enforced(opcua_source: Any) -> None:
    """If a client sends a read, browse or CreateMonitoredItems larger than the advertised
    limit, then it gets BadTooManyOperations; requests within the limit succeed."""
    limits = OperationLimits(
        max_nodes_per_read=3, max_monitored_items_per_call=2, max_nodes_per_browse=2
    )
    async with (
        OpcUaFace(opcua_source, OpcUaFaceConfig(limits=limits)) as face,
        Client(face.endpoint_url, timeout=5) as client,
    ):
        caps = "0:ServerCapabilities/0:OperationLimits/0:"
        server = client.nodes.server
        assert await (await server.get_child(caps + "MaxNodesPerRead")).read_value() == 3
        assert await (await server.get_child(caps + "MaxNodesPerBrowse")).read_value() == 2
        assert await (await server.get_child(caps + "MaxMonitoredItemsPerCall")).read_value() == 2

        nodes = [
            client.get_node(face.node_id("CNC-01", s))
            for s in ("state", "good_count", "auto", "program")
        ]
        assert len(await client.read_values(nodes[:3])) == 3
        with pytest.raises(ua.uaerrors.BadTooManyOperations):
            await client.read_values(nodes)

        browse = ua.BrowseParameters()
        browse.NodesToBrowse = [ua.BrowseDescription(NodeId=n.nodeid) for n in nodes[:3]]
        with pytest.raises(ua.uaerrors.BadTooManyOperations):
            await client.uaclient.browse(browse)
        browse.NodesToBrowse = browse.NodesToBrowse[:2]
        assert len(await client.uaclient.browse(browse)) == 2

        sub = await client.create_subscription(100, DataChanges())
        with pytest.raises(ua.uaerrors.BadTooManyOperations):
            await sub.subscribe_data_change(nodes[:3])
        assert len(await sub.subscribe_data_change(nodes[:2])) == 2


def _secure_config(certs: dict[str, Any], **overrides: Any) -> OpcUaFaceConfig:
    values: dict[str, Any] = {
        "endpoints": ("None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"),
        "certificate": certs["server"].certificate,
        "private_key": certs["server"].private_key,
    }
    values.update(overrides)
    return OpcUaFaceConfig(**values)


async def _secure_client(
    url: str, certs: dict[str, Any], policy: Any, mode: ua.MessageSecurityMode
) -> Client:
    client = Client(url, timeout=5)
    client.application_uri = CLIENT_APPLICATION_URI
    await client.set_security(
        policy, str(certs["client"].certificate), str(certs["client"].private_key), mode=mode
    )
    return client


@pytest.mark.parametrize(
    "mode", [ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt]
)
async def test_basic256sha256_connects_with_generated_certificates(
    opcua_source: Any, server_certs: dict[str, Any], mode: ua.MessageSecurityMode
) -> None:
    """If a client uses Basic256Sha256 with the generated client certificate, then it
    connects and reads over a Sign / SignAndEncrypt channel."""
    async with OpcUaFace(opcua_source, _secure_config(server_certs)) as face:
        client = await _secure_client(
            face.endpoint_url, server_certs, SecurityPolicyBasic256Sha256, mode
        )
        async with client:
            value = await client.get_node(face.node_id("CNC-01", "state")).read_value()
            assert client.security_policy.Mode == mode
    assert value == 3


async def test_S4_strict_mode_offers_exactly_the_configured_endpoints_and_tokens(
    opcua_source: Any, server_certs: dict[str, Any]
) -> None:
    """If the face runs strict with SignAndEncrypt + username, then GetEndpoints lists only
    that, an unsecured or anonymous client is refused and the right user gets in."""
    config = _secure_config(
        server_certs,
        endpoints=("Basic256Sha256_SignAndEncrypt", "Aes256_Sha256_RsaPss_SignAndEncrypt"),
        identity_tokens=("username",),
        users={"agent": "s3cret"},
        strict=True,
    )
    async with OpcUaFace(opcua_source, config) as face:
        endpoints = await Client(face.endpoint_url, timeout=5).connect_and_get_server_endpoints()
        offered = {(e.SecurityPolicyUri.rsplit("#", 1)[1], e.SecurityMode.name) for e in endpoints}
        assert offered == {
            ("Basic256Sha256", "SignAndEncrypt"),
            ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
        }
        tokens = {t.TokenType for e in endpoints for t in e.UserIdentityTokens}
        assert tokens == {ua.UserTokenType.UserName}

        with pytest.raises((ua.UaError, OSError, TimeoutError)):
            async with Client(face.endpoint_url, timeout=3) as plain:
                plain.set_user("agent")
                plain.set_password("s3cret")
        encrypt = ua.MessageSecurityMode.SignAndEncrypt
        anonymous = await _secure_client(
            face.endpoint_url, server_certs, SecurityPolicyBasic256Sha256, encrypt
        )
        with pytest.raises(ua.UaError):
            async with anonymous:
                pass
        wrong = await _secure_client(
            face.endpoint_url, server_certs, SecurityPolicyBasic256Sha256, encrypt
        )
        wrong.set_user("agent")
        wrong.set_password("nope")
        with pytest.raises(ua.UaError):
            async with wrong:
                pass
        right = await _secure_client(
            face.endpoint_url, server_certs, SecurityPolicyAes256Sha256RsaPss, encrypt
        )
        right.set_user("agent")
        right.set_password("s3cret")
        async with right:
            assert await right.get_node(face.node_id("CNC-01", "program")).read_value() == "O1234"


def test_config_problems_are_reported_before_starting(opcua_source: Any) -> None:
    """If the configuration is inconsistent, then the face refuses it with every problem."""
    bad = OpcUaFaceConfig(
        endpoints=("None", "Basic128Rsa15"), identity_tokens=("anonymous",), strict=True
    )
    with pytest.raises(ValueError) as caught:
        OpcUaFace(opcua_source, bad)
    message = str(caught.value)
    assert "Basic128Rsa15" in message
    assert "strict mode forbids the None endpoint" in message
    assert "strict mode forbids anonymous" in message


async def test_scale_tags_change_once_per_second(opcua_source: Any) -> None:
    """If the face serves synthetic tags, then each one changes about once per second."""
    async with OpcUaFace(opcua_source, OpcUaFaceConfig(tick_s=0.1, scale_tags=200)) as face:
        async with Client(face.endpoint_url, timeout=5) as client:
            nodes = [client.get_node(f"ns=2;s={synthetic_path(i)}") for i in (0, 7, 199)]
            first = await client.read_values(nodes)
            writes = face.stats.writes
            await asyncio.sleep(1.25)
            second = await client.read_values(nodes)
        rate = (face.stats.writes - writes) / 1.25
    assert all(a != b for a, b in zip(first, second, strict=True))
    assert 120 <= rate <= 260  # 200 tags at 1 Hz, with tick jitter


async def test_demo_factory_values_match_the_live_model(demo_live: Any) -> None:
    """If the demo factory is served and every device frozen, then a client reads exactly
    the model's value and change time for every OPC UA signal; unfrozen, counters move."""
    async with OpcUaFace(demo_live, OpcUaFaceConfig(tick_s=0.05)) as face:
        specs = face.specs
        assert len(specs) > 50
        devices = sorted({s.device_id for s in specs})
        for device in devices:
            demo_live.freeze(device)
        await asyncio.sleep(0.2)
        truth = demo_live.values_at(time.time())
        async with Client(face.endpoint_url, timeout=5) as client:
            nodes = [client.get_node(face.node_id(s.device_id, s.signal_id)) for s in specs]
            read: list[Any] = await client.uaclient.read(_read_params([n.nodeid for n in nodes]))
            for spec, data in zip(specs, read, strict=True):
                expected = truth[(spec.device_id, spec.signal_id)]
                assert data.StatusCode.is_good(), spec
                assert data.Value.Value == expected.value, spec
                assert _naive(data.SourceTimestamp) == _ts(expected.changed_at), spec
            # Any counter: in the compressed profile a device's simulated night (a planned
            # stop) lasts 40 s, so one chosen device may well not produce within 15 s.
            counters = [client.get_node(face.node_id(s.device_id, s.signal_id))
                        for s in specs if s.role == "good_count"]
            frozen_values = [await node.read_value() for node in counters]
            for device in devices:
                demo_live.freeze(device, False)
            deadline = time.monotonic() + 15
            while [await node.read_value() for node in counters] == frozen_values:
                assert time.monotonic() < deadline, "no counter moved after unfreezing"
                await asyncio.sleep(0.2)


def _read_params(nodeids: list[ua.NodeId]) -> ua.ReadParameters:
    params = ua.ReadParameters()
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    params.NodesToRead = [
        ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value) for n in nodeids
    ]
    return params
