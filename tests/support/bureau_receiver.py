"""A bureau receiver wired to a broker (or to none, for `receiver.handle` calls), with the
test agents' keys enrolled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from agent.protocol.envelope import public_jwk
from bureau.receiver import Receiver, ReceiverSettings
from tests.support.reports import BUREAU


@dataclass
class Bureau:
    receiver: Receiver
    key: OKPKey

    @property
    def public(self) -> dict[str, str]:
        return public_jwk(self.key)


def start_bureau(
    db: Path | str,
    broker_url: str | None,
    agent_keys: dict[str, OKPKey],
    protocol: str = "5",
    key: OKPKey | None = None,
    **settings: Any,
) -> Bureau:
    """`db`: a SQLite file or a postgresql:// URL; `key`: the bureau's receipt key (a new one
    when None)."""
    key = key or OKPKey.generate_key("Ed25519")
    receiver = Receiver(
        ReceiverSettings(
            db=db,
            broker_url=broker_url or "mqtt://127.0.0.1:1",
            bureau_id=BUREAU,
            protocol=protocol,
            keepalive_s=5,
            **settings,
        ),
        key,
    )
    with receiver.store.transaction():
        for factory, agent_key in agent_keys.items():
            receiver.registry.enroll(factory, public_jwk(agent_key))
    if broker_url is not None:
        receiver.start()
        assert receiver.connected.wait(10), "bureau receiver did not connect"
    return Bureau(receiver, key)
