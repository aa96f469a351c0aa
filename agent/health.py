"""What /healthz answers: a pure assessment of the runtime's connections, channel and writer.

Unhealthy ("degraded", HTTP 503) when a connection has been down longer than
`collection.health_connection_down_s`, when samples were dropped within the last
`DROP_WINDOW_S`, when raw samples use 95 % or more of their disk quota
(`agent.store.quota`), when the channel is full (connectors are blocked), or when the store
writer is not running or lags a minute behind. The body always lists every connection with
whether it is up and since when.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.store.quota import CRITICAL, MB, QuotaReading

DROP_WINDOW_S = 60.0
MAX_LAG_S = 60.0


@dataclass
class LinkView:
    """One connection as the runtime sees it: up or down since `since` (wall time)."""

    up: bool
    since: float
    since_mono: float
    ever_up: bool = False


@dataclass
class HealthInputs:
    now_mono: float
    links: Mapping[str, LinkView]
    down_limit_s: float
    writer_alive: bool
    lag_s: float
    queue_depth: int
    channel_full: bool
    dropped_total: int
    last_drop_mono: float | None
    drop_reason: str | None = None  # agent.store.losses: disk_full_or_io_error, raw_quota_full
    raw_quota: QuotaReading | None = None  # the last raw-sample quota check, if any yet


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def writer_keeping_up(writer_alive: bool, lag_s: float) -> bool:
    """The store writer runs and is less than `MAX_LAG_S` behind: the one health condition a
    restart of the agent can fix (the systemd watchdog is fed on it, agent.sd_notify)."""
    return writer_alive and lag_s < MAX_LAG_S


def assess(inputs: HealthInputs) -> dict[str, Any]:
    """The /healthz body: `status` is "ok" exactly when `reasons` is empty."""
    reasons: list[str] = []
    connections: dict[str, dict[str, Any]] = {}
    for name in sorted(inputs.links):
        link = inputs.links[name]
        for_s = max(0.0, inputs.now_mono - link.since_mono)
        connections[name] = {"up": link.up, "since": _iso(link.since),
                             "for_s": round(for_s, 1)}
        if not link.up and for_s > inputs.down_limit_s:
            what = "down" if link.ever_up else "not connected"
            reasons.append(f"connection {name} {what} for {for_s:.0f} s "
                           f"(limit {inputs.down_limit_s:g} s)")
    if inputs.last_drop_mono is not None:
        ago = inputs.now_mono - inputs.last_drop_mono
        if ago <= DROP_WINDOW_S:
            why = ("the raw sample quota is full" if inputs.drop_reason == "raw_quota_full"
                   else "the store cannot commit")
            reasons.append(f"samples dropped {ago:.0f} s ago ({inputs.dropped_total} since "
                           f"start): {why}")
    quota = inputs.raw_quota
    if quota is not None and quota.fraction >= CRITICAL:
        reasons.append(quota.describe())
    if inputs.channel_full:
        reasons.append(f"channel full ({inputs.queue_depth} items): connectors are blocked")
    if not inputs.writer_alive:
        reasons.append("store writer not running")
    elif inputs.lag_s >= MAX_LAG_S:
        reasons.append(f"store writer {inputs.lag_s:.0f} s behind")
    return {"status": "degraded" if reasons else "ok", "reasons": reasons,
            "connections": connections, "queue_depth": inputs.queue_depth,
            "store_lag_s": round(inputs.lag_s, 3), "samples_dropped": inputs.dropped_total,
            "raw_mb": None if quota is None else round(quota.raw_bytes / MB, 3),
            "raw_quota_mb": None if quota is None else round(quota.quota_bytes / MB, 3)}
