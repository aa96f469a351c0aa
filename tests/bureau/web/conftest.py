"""Fixtures of the portal tests: the annual tests' bureau (Jan-Feb 2025 of real signed daily
reports of the simulated demo factory, one rejected, one chain gap: tests/annual/
annual_scenario.py), copied so the portal's accounts and audit do not touch it."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "annual"))

from annual_scenario import BUREAU_KEY, Scenario, scenario  # noqa: E402
from simdata import BENCHMARKS, FACTORY, POLICY  # noqa: E402

from bureau.accounts import Accounts  # noqa: E402
from agent.protocol.keys import save_private_key  # noqa: E402
from bureau.store import SqliteReportStore  # noqa: E402
from bureau.web import WebSettings, create_app  # noqa: E402

__all__ = ["FACTORY", "Portal", "portal", "scenario"]
EVALUATOR, ADMIN = "eva", "root-admin"
PASSWORD = "correct horse battery"


@dataclass
class Portal:
    db: Path
    key: Path
    settings: WebSettings


def copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a WAL database (SQLite's backup API)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


@pytest.fixture
def portal(scenario: Scenario, tmp_path: Path) -> Portal:
    db = tmp_path / "bureau.db"
    copy_db(scenario.db, db)
    key = tmp_path / "bureau-key.pem"
    save_private_key(key, BUREAU_KEY, None)
    store = SqliteReportStore(db)
    accounts = Accounts(store.db)
    accounts.add_user(EVALUATOR, "evaluator", PASSWORD)
    accounts.add_user(ADMIN, "admin", PASSWORD)
    store.close()
    settings = WebSettings(db=db, bureau_key=key, policy=POLICY, benchmarks=BENCHMARKS)
    return Portal(db, key, settings)


@pytest.fixture
def client(portal: Portal) -> Iterator[TestClient]:
    with TestClient(create_app(portal.settings), follow_redirects=False) as test_client:
        yield test_client
