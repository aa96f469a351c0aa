"""An in-process substitute for the MQTT network between one agent Publisher and a bureau
Receiver, for the state-machine and receipt fuzz tests (docs/reliability.md §c Z1, Z2).

It is NOT a broker and says so: `LoopbackBroker.make_client` takes the place of
`agent.protocol.mqtt.make_client` (patched in the publisher's module only), and hands the
real `Publisher` a `LoopbackClient` whose callbacks are paho's (VERSION2 signatures), called
by the test when it decides that a CONNACK, SUBACK, PUBACK or receipt arrives. Every
message the agent publishes waits in `to_bureau` until the test delivers it to the real
`Receiver.handle` (the code path of its `on_message`), drops it, or lets it linger; every
receipt waits in `to_agent`. So a test chooses the order of every network event, which a
real broker on a socket cannot give it, and everything on both sides of the network is the
product's own code: the outbox on SQLite, the publisher's state machine, the receipt check
and the transparency-log monitor, the bureau's verifier, store and receipt signing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.protocol.mqtt import BrokerSettings, receipt_topic


def _code(packet: int, identifier: int) -> ReasonCode:
    return ReasonCode(packet, identifier=identifier)


@dataclass
class PublishInfo:
    """What paho's `publish` returns, as far as the Publisher reads it."""

    rc: int
    mid: int

    def wait_for_publish(self, timeout: float | None = None) -> None:
        return None


@dataclass
class LoopbackClient:
    """The agent's end: what the Publisher calls on a paho client, recording into the broker."""

    broker: LoopbackBroker
    client_id: str
    on_connect: Callable[..., None] | None = None
    on_connect_fail: Callable[..., None] | None = None
    on_disconnect: Callable[..., None] | None = None
    on_subscribe: Callable[..., None] | None = None
    on_publish: Callable[..., None] | None = None
    on_message: Callable[..., None] | None = None
    on_log: Callable[..., None] | None = None
    connected: bool = False
    next_mid: int = 1

    def _mid(self) -> int:
        mid, self.next_mid = self.next_mid, self.next_mid % 65535 + 1
        return mid

    def subscribe(self, topic: str, qos: int = 0) -> tuple[int, int]:
        mid = self._mid()
        self.broker.subacks.append((self, mid))
        return mqtt.MQTT_ERR_SUCCESS, mid

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> PublishInfo:
        mid = self._mid()
        if not self.connected:  # paho queues it for the next connection; the test drops it
            return PublishInfo(mqtt.MQTT_ERR_NO_CONN, mid)
        if topic.endswith("/report"):
            self.broker.to_bureau.append((topic, bytes(payload)))
        self.broker.pubacks.append((self, mid))
        return PublishInfo(mqtt.MQTT_ERR_SUCCESS, mid)

    def reconnect_delay_set(self, min_delay: float, max_delay: float) -> None:
        return None

    def disconnect(self) -> None:
        self.connected = False

    def loop_start(self) -> None:
        return None

    def loop_stop(self) -> None:
        return None


@dataclass
class LoopbackBroker:
    """Messages in transit, each list in arrival order; the test moves them."""

    factory_id: str
    client: LoopbackClient | None = None
    to_bureau: list[tuple[str, bytes]] = field(default_factory=list)
    to_agent: list[bytes] = field(default_factory=list)
    pubacks: list[tuple[LoopbackClient, int]] = field(default_factory=list)
    subacks: list[tuple[LoopbackClient, int]] = field(default_factory=list)
    receipts_seen: list[bytes] = field(default_factory=list)

    def make_client(
        self,
        settings: BrokerSettings,
        client_id: str,
        *,
        inflight: int = 4,
        will: tuple[str, bytes] | None = None,
    ) -> tuple[Any, Callable[[], None]]:
        """Stands in for `agent.protocol.mqtt.make_client`: a new client, not yet connected
        (the test connects it with `link_up`)."""
        if self.client is not None:
            self.client.connected = False
        self.client = LoopbackClient(self, client_id)
        return self.client, lambda: None

    # ---- link events -------------------------------------------------------------------

    def link_up(self) -> None:
        """CONNACK (success) then SUBACK for the receipt subscription."""
        client = self.client
        if client is None or client.connected:
            return
        client.connected = True
        assert client.on_connect is not None and client.on_subscribe is not None
        client.on_connect(client, None, {}, _code(PacketTypes.CONNACK, 0), None)
        for mid in [mid for subscriber, mid in self.subacks if subscriber is client]:
            client.on_subscribe(client, None, mid, [_code(PacketTypes.SUBACK, 1)], None)
        self.subacks.clear()

    def link_down(self) -> None:
        """The connection breaks: un-acknowledged PUBACKs and undelivered receipts are lost
        (no broker session is relied on, docs/reliability.md T2)."""
        client = self.client
        self.pubacks.clear()
        self.to_agent.clear()
        if client is None or not client.connected:
            return
        client.connected = False
        assert client.on_disconnect is not None
        client.on_disconnect(client, None, {}, _code(PacketTypes.DISCONNECT, 0x80), None)

    def forget_client(self) -> None:
        """The agent process died: its connection and everything in flight to it is gone."""
        self.pubacks.clear()
        self.to_agent.clear()
        self.subacks.clear()
        self.client = None

    # ---- message events ----------------------------------------------------------------

    def puback(self, index: int, reason: int = 0) -> None:
        if not self.pubacks:
            return
        client, mid = self.pubacks.pop(index % len(self.pubacks))
        if client is self.client and client.connected and client.on_publish is not None:
            client.on_publish(client, None, mid, _code(PacketTypes.PUBACK, reason), None)

    def take_report(self, index: int) -> tuple[str, bytes] | None:
        if not self.to_bureau:
            return None
        return self.to_bureau.pop(index % len(self.to_bureau))

    def queue_receipt(self, receipt: bytes) -> None:
        """The bureau published a receipt; it reaches the agent only while it is connected."""
        if self.client is not None and self.client.connected:
            self.to_agent.append(receipt)

    def deliver_receipt(self, receipt: bytes, topic: str | None = None) -> None:
        """Hand one receipt (or anything) to the agent's on_message, as paho would."""
        client = self.client
        if client is None or not client.connected or client.on_message is None:
            return
        message = mqtt.MQTTMessage(topic=(topic or receipt_topic(self.factory_id)).encode())
        message.payload = receipt
        client.on_message(client, None, message)
        self.receipts_seen.append(receipt)
