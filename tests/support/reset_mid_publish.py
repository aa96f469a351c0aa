"""T5 of docs/reliability.md §c: the connection is reset (RST) after k bytes of a report's
PUBLISH, for many k; the agent must resend, the bureau must never store a cut report.

One run: an agent publisher behind a FaultProxy in front of a real Mosquitto, a bureau
receiver on the broker directly. For each k, with the link up and the outbox drained, the
proxy is armed to reset the open connection after k more agent->broker bytes, one report is
committed, and the run waits for the reset and then for the drain. Keepalive is 10 s, not
the profile's 2 s, so that no PINGREQ lands between arming and the PUBLISH: k counts bytes of
the PUBLISH alone. Shared by tests/delivery/test_delivery_chaos.py (a few dozen k, fixed
seed) and bench/soak.py (500).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from joserfc.jwk import OKPKey

from agent.outbox import Outbox
from agent.protocol.mqtt import report_topic
from agent.publisher import Publisher, PublisherSettings
from tests.support.bureau_receiver import Bureau, start_bureau
from tests.support.fault_proxy import FaultProxy
from tests.support.invariants import check_invariants
from tests.support.mosquitto import Broker
from tests.support.reports import FACTORY, commit_nth_day
from tests.support.waiting import wait_until


def _varint_len(n: int) -> int:
    length = 1
    while n >= 128:
        n //= 128
        length += 1
    return length


def publish_length(topic: str, payload_len: int) -> tuple[int, int]:
    """(bytes of an MQTT 5 QoS 1 PUBLISH without properties, offset of its payload)."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + payload_len  # topic, packet id, props len
    header = 1 + _varint_len(remaining)
    return header + remaining, header + remaining - payload_len


Cut = int | float  # k >= 1: from the start; k <= -1: from the end; 0 <= f < 1: payload share


def cut_points(payload_at: int, count: int, seed: int) -> list[Cut]:
    """`count` places to cut a PUBLISH: every byte of the fixed header, topic, packet id and
    properties and the payload's first 3 bytes, the last 3 bytes, the rest at payload
    shares drawn with `seed`. Places, not byte counts: reports differ by a few bytes."""
    fixed: list[Cut] = [*range(1, payload_at + 4), -3, -2, -1]
    rng = random.Random(seed)
    return fixed[:count] + [rng.random() for _ in range(max(0, count - len(fixed)))]


def byte_count(cut: Cut, length: int, payload_at: int) -> int:
    """k for a PUBLISH of `length` bytes whose payload starts at `payload_at`."""
    if isinstance(cut, float):
        return payload_at + 3 + int(cut * (length - payload_at - 6))
    return cut if cut > 0 else length + cut


@dataclass
class ResetFigures:
    cuts: int  # values of k tried
    resets: int  # resets the proxy made (each in the middle of a PUBLISH)
    stored: int
    rejected: int  # reports the bureau refused (a cut report would land here)
    duplicates: int  # resends the bureau de-duplicated
    seconds: float


def run_resets(tmp_path: Path, broker: Broker, count: int, seed: int = 5) -> ResetFigures:
    """Run T5 with `count` values of k; assert I1-I8 at the end; return the figures."""
    key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(tmp_path / "bureau.db", broker.url, {FACTORY: key})
    outbox = Outbox(tmp_path / "outbox.db")
    started = time.monotonic()
    try:
        with FaultProxy("127.0.0.1", broker.port) as proxy:
            publisher = Publisher(_settings(f"mqtt://127.0.0.1:{proxy.port}", bureau), outbox)
            publisher.start()
            try:
                _reset_each(publisher, outbox, proxy, key, count, seed)
            finally:
                publisher.stop()
        check_invariants(outbox, bureau)
        rejected = len(bureau.receiver.store.rejections(FACTORY))
        return ResetFigures(count, proxy.resets_done, len(outbox.items(FACTORY)), rejected,
                            bureau.receiver.metrics["duplicates_total"],
                            time.monotonic() - started)
    finally:
        bureau.receiver.stop()


def _reset_each(
    publisher: Publisher, outbox: Outbox, proxy: FaultProxy, key: OKPKey, count: int, seed: int
) -> None:
    topic = report_topic(FACTORY)
    first = commit_nth_day(outbox, key, 0)
    assert publisher.drain(20), outbox.counts()
    payload_at = publish_length(topic, len(first.jws))[1]  # the same for every report
    for n, cut in enumerate(cut_points(payload_at, count, seed), start=1):
        assert wait_until(lambda: publisher.ready, 20, pause=publisher.step), f"{cut}: no link"
        # Committed before arming: the publisher sends only from `step`, in this thread.
        item = commit_nth_day(outbox, key, n)
        length = publish_length(topic, len(item.jws))[0]
        k = byte_count(cut, length, payload_at)
        assert 1 <= k < length
        proxy.reset_in(k, "upstream")
        assert wait_until(partial(_resets_reach, proxy, n), 10, pause=publisher.step), (
            f"k={k}: the PUBLISH was not cut"
        )
        assert publisher.drain(30), f"k={k}: {outbox.counts()}"


def _resets_reach(proxy: FaultProxy, count: int) -> bool:
    return proxy.resets_done >= count


def _settings(url: str, bureau: Bureau) -> PublisherSettings:
    return PublisherSettings(
        broker_url=url,
        factory_id=FACTORY,
        bureau_keys=(bureau.public,),
        protocol="5",
        keepalive_s=10,
        reconnect_min_s=0.1,
        reconnect_max_s=2.0,
        receipt_timeout_s=3.0,
        resend_cap_s=6.0,
        window=4,
    )
