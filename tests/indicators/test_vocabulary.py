"""The shared vocabulary stays consistent with the connectors' own enum and with itself."""

from __future__ import annotations

from typing import get_args

from connectors.sample import Quality
from indicators.vocabulary import (
    INTERVAL_STATES,
    QUALITY_CODES,
    QUALITY_NAMES,
    SOURCES,
    STATUSES,
    TIER_ORDER,
    TIERS,
    Source,
    State,
    Status,
    TierId,
)


def test_every_connector_quality_has_a_stored_code() -> None:
    assert set(QUALITY_CODES) == {q.value for q in Quality}
    assert QUALITY_NAMES == {0: "good", 1: "uncertain", 2: "bad"}


def test_interval_states_are_the_canonical_states_then_unknown() -> None:
    assert (*(s.value for s in State), "unknown") == INTERVAL_STATES


def test_every_tier_status_and_source_has_a_label() -> None:
    assert tuple(TIERS) == TIER_ORDER == get_args(TierId)
    assert tuple(STATUSES) == get_args(Status)
    assert tuple(SOURCES) == get_args(Source)
