"""MQTT transport both sides share: topics, broker and TLS settings, the paho client factory.

The agent's publisher and the bureau's receiver configure their clients here, so TLS,
credentials and protocol version are handled one way (docs/reliability.md §d).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import ssl
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.protocol.errors import ProtocolError

TOPIC_ROOT = "tieragent/v1"
REPORT_FILTER = f"{TOPIC_ROOT}/+/report"
ROTATE_FILTER = f"{TOPIC_ROOT}/+/keyrotate"
# A factory id in a topic: what the bureau accepts, so "+", "#" and ".." never name a factory.
_REPORT_TOPIC = re.compile(r"^tieragent/v1/([A-Za-z0-9][A-Za-z0-9_.\-]{0,63})/report$")


def report_topic(factory_id: str) -> str:
    return f"{TOPIC_ROOT}/{factory_id}/report"


def rotation_topic(factory_id: str) -> str:
    return f"{TOPIC_ROOT}/{factory_id}/keyrotate"


def report_topic_factory(topic: str) -> str | None:
    """The factory id of a report topic, or None when the topic is not one."""
    match = _REPORT_TOPIC.match(topic)
    return match.group(1) if match else None


def receipt_topic(factory_id: str) -> str:
    return f"{TOPIC_ROOT}/{factory_id}/receipt"


def status_topic(factory_id: str) -> str:
    return f"{TOPIC_ROOT}/{factory_id}/status"


class BrokerError(ProtocolError):
    """Broker settings that cannot work (URL, TLS files, password file); str() is one sentence."""


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    """How to reach the broker: URL, MQTT version, timers, TLS files and credentials."""

    broker_url: str  # mqtt://host:port or mqtts://host:port
    # auto: MQTT 5, and 3.1.1 from the first time a broker refuses 5 (see `falls_back`)
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    session_expiry_s: int = 86_400
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str = "TIERAGENT_MQTT_PASSWORD"


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) from mqtt://host[:1883] or mqtts://host[:8883]."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise BrokerError(f"Broker URL {url!r} is not mqtt://host:port or mqtts://host:port.")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise BrokerError(f"Broker URL {url!r} has an invalid port.") from None
    return parts.hostname, port, tls


def make_client(
    settings: BrokerSettings,
    client_id: str,
    *,
    inflight: int = 4,
    will: tuple[str, bytes] | None = None,
) -> tuple[mqtt.Client, Callable[[], None]]:
    """A configured paho client (TLS, credentials, will) and a function that connects it async.

    Shared with the bureau receiver so both ends configure transport the same way.
    """
    host, port, tls = parse_broker_url(settings.broker_url)
    tls_files = [f for f in (settings.ca_file, settings.cert_file, settings.key_file) if f]
    if tls_files and not tls:
        # TLS files with an mqtt:// URL would silently connect in plaintext.
        raise BrokerError(
            f"TLS files are set but the broker URL {settings.broker_url!r} is not mqtts://; "
            "use mqtts://host:port."
        )
    v5 = settings.protocol != "3.1.1"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
    )
    if tls:
        try:
            client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.cert_file) if settings.cert_file else None,
                keyfile=str(settings.key_file) if settings.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except OSError as error:  # missing/unreadable file, or a key that is not the cert's
            files = ", ".join(str(f) for f in tls_files)
            raise BrokerError(f"Cannot load the MQTT TLS files ({files}): {error}.") from None
        client.tls_insecure_set(False)
    password = _password(settings)
    if settings.username or password:
        client.username_pw_set(settings.username, password)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    # Small messages both ways (a report, its PUBACK, a receipt): without TCP_NODELAY,
    # Nagle's algorithm and delayed ACKs hold each one up to 40 ms per hop.
    client.on_socket_open = no_delay
    # `inflight` is the caller's own window of reports. paho's in-flight slots also hold the
    # status message of each connection and the messages whose PUBACK a lossy link lost
    # (paho resends them after a reconnect): with exactly `inflight` slots, those filled
    # them and a new report waited in paho's queue, never sent, until PUBACKs came back
    # (seen in T6 under load). Hence the headroom, in flight and in the queue.
    client.max_inflight_messages_set(max(1, inflight) * 2 + 4)
    client.max_queued_messages_set(max(16, inflight * 4))
    client.reconnect_delay_set(
        max(1, int(settings.reconnect_min_s)), max(1, int(settings.reconnect_max_s))
    )

    def connect() -> None:
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = settings.session_expiry_s
            client.connect_async(
                host, port, settings.keepalive_s, clean_start=False, properties=props
            )
        else:
            client.connect_async(host, port, settings.keepalive_s)

    return client, connect


def no_delay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket (websockets)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_error() -> str:
    """The cause of a failed connection attempt; call it only inside `on_connect_fail`.

    paho calls `on_connect_fail` from its `except OSError` block without passing the
    exception, so the exception being handled is the cause (a refused port, a broker
    certificate that does not verify, ...). Without it an operator sees no reason at all.
    """
    error = sys.exc_info()[1]
    return f"{type(error).__name__}: {error}" if error is not None else "unknown cause"


def refuses_mqtt5(cause: str) -> bool:
    """Whether a failed connection attempt says the broker does not speak MQTT 5: a CONNACK
    "Unsupported protocol version" (NATS's MQTT face), or the connection closed before any
    CONNACK, which paho reports as "Unspecified error" (RabbitMQ's)."""
    return "protocol version" in cause.lower() or "Unspecified error" in cause


class ProtocolChoice:
    """The MQTT version to use now: the setting, or for `auto` MQTT 5 until a broker refuses
    it, then 3.1.1 for the rest of the process (said once, as a warning)."""

    def __init__(self, setting: str, logger: logging.Logger) -> None:
        self.setting = setting
        self.current: Literal["5", "3.1.1"] = "3.1.1" if setting == "3.1.1" else "5"
        self._logger = logger

    def falls_back(self, cause: str) -> bool:
        """True when this failure switches `auto` from MQTT 5 to 3.1.1 (reconnect then)."""
        if self.setting != "auto" or self.current != "5" or not refuses_mqtt5(cause):
            return False
        self.current = "3.1.1"
        self._logger.warning(
            "The MQTT broker refused MQTT 5 (%s); using MQTT 3.1.1 from now on (protocol: auto; "
            "set protocol 3.1.1 to start with it).", cause, extra={"fields": {"cause": cause}})
        return True


class ConnectFailures:
    """Why connection attempts fail, kept the same way by the publisher and the bureau
    receiver: the cause is remembered (`last`), counted, and logged once per cause, not on
    every retry. paho reports why a socket died (a TLS alert such as "certificate
    required", a reset) only as an error log line, so `on_log` keeps that line for the
    disconnect that follows; on_disconnect itself just gets "Unspecified error"."""

    def __init__(self, metrics: Counter[str], logger: logging.Logger, message: str,
                 protocol: str = "5") -> None:
        self.last: str | None = None
        self._socket_error: str | None = None  # paho's last error line (network thread)
        self._metrics, self._logger, self._message = metrics, logger, message
        self._protocol = protocol

    def on_log(self, _c: mqtt.Client, _u: Any, level: int, buf: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self._socket_error = buf

    def disconnect_reason(self, rc: Any) -> str:
        """The reason code, with paho's error line if one came just before."""
        cause, self._socket_error = self._socket_error, None
        return str(rc) if cause is None else f"{rc}: {cause}"

    def failed(self, cause: str) -> None:
        self._metrics["connect_failures_total"] += 1
        if self._protocol == "5" and refuses_mqtt5(cause):
            # A broker that speaks only MQTT 3.1.1 (NATS's and RabbitMQ's MQTT faces) closes
            # an MQTT 5 connection before CONNACK, which paho reports as nothing more.
            cause += (" (MQTT 5: the broker refused it or closed the connection before "
                      "answering; if it speaks only MQTT 3.1.1, set protocol 3.1.1 or auto: "
                      "delivery.protocol, --protocol)")
        if cause != self.last:
            self._logger.error(self._message, cause)
        self.last = cause


def _password(settings: BrokerSettings) -> str | None:
    if settings.password_file is not None:
        try:
            return settings.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise BrokerError(
                f"{settings.password_file}: cannot read the MQTT password ({error.strerror})."
            ) from None
    return os.environ.get(settings.password_env) or None
