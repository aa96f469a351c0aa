"""Fixtures shared by every test folder; the helpers behind them live in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Broker
from tests.support.postgres import PostgresServer


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A real Mosquitto for this test, on a free loopback port."""
    with Broker(tmp_path) as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session (tests/support/postgres.py), started on first
    use, stopped by PID at the end."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def bureau_database(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a test's bureau store lives: a new SQLite file, or a new database on the
    session's PostgreSQL; tests taking this fixture run once on each."""
    if request.param == "sqlite":
        return tmp_path / "bureau.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()
