"""Fixtures shared by the bureau's hostile-input tests: one factory's agent key, and a
receiver (no broker) with that key enrolled, on SQLite and then on PostgreSQL
(`bureau_database`, tests/conftest.py). A module may override `bureau` with its settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey

from tests.support.bureau_receiver import Bureau, start_bureau
from tests.support.reports import FACTORY


@pytest.fixture
def agent_key() -> OKPKey:
    return OKPKey.generate_key("Ed25519")


@pytest.fixture
def bureau(bureau_database: Path | str, agent_key: OKPKey) -> Iterator[Bureau]:
    bureau = start_bureau(bureau_database, None, {FACTORY: agent_key})
    yield bureau
    bureau.receiver.stop()
