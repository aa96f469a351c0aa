"""Fixtures and helpers of the portal tests (conftest.py re-exports the fixtures; test
modules import this module by its unique name).

The bureau is the annual tests' (tests/annual/annual_scenario.py: Jan-Feb 2025 of real
signed daily reports of the simulated demo factory, one rejected, one chain gap), copied so
the portal's accounts and audit do not touch it: into a new SQLite file, or into a new
database on the session's PostgreSQL (`bureau_database`, tests/conftest.py), so every portal
test runs on both back ends."""

from __future__ import annotations

import re
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "annual"))

from annual_scenario import BUREAU_KEY, Scenario, scenario
from simdata import BENCHMARKS, DECLARATIONS, FACTORY, POLICY

from agent.protocol.keys import save_private_key
from bureau.accounts import Accounts
from bureau.store import SqlReportStore
from bureau.web import WebSettings, create_app
from tests.support.postgres import copy_sqlite_bureau

__all__ = ["BUREAU_KEY", "FACTORY", "Portal", "client", "log_in", "portal", "scenario"]
EVALUATOR, ADMIN = "eva", "root-admin"
PASSWORD = "correct horse battery"


@dataclass
class Portal:
    db: Path | str  # a SQLite file or a postgresql:// URL
    key: Path
    settings: WebSettings


def copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a WAL database (SQLite's backup API)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


@pytest.fixture
def portal(scenario: Scenario, bureau_database: Path | str, tmp_path: Path) -> Portal:
    db = bureau_database
    assert isinstance(scenario.db, Path)
    if isinstance(db, Path):
        copy_db(scenario.db, db)
    else:
        copy_sqlite_bureau(scenario.db, db)
    key = tmp_path / "bureau-key.pem"
    save_private_key(key, BUREAU_KEY, None)
    store = SqlReportStore(db)
    accounts = Accounts(store.db)
    accounts.add_user(EVALUATOR, "evaluator", PASSWORD)
    accounts.add_user(ADMIN, "admin", PASSWORD)
    store.close()
    declarations = tmp_path / "declarations"
    declarations.mkdir()
    shutil.copyfile(DECLARATIONS, declarations / f"{FACTORY}.yaml")
    settings = WebSettings(db=db, bureau_key=key, policy=POLICY, benchmarks=BENCHMARKS,
                           declarations_dir=declarations)
    return Portal(db, key, settings)


@pytest.fixture
def client(portal: Portal) -> Iterator[TestClient]:
    with TestClient(create_app(portal.settings), follow_redirects=False) as test_client:
        yield test_client


def log_in(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the form (with its login CSRF token); returns the session's CSRF
    token, read from a page as a browser would."""
    page = client.get("/login", headers={"Accept": "text/html"})
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert token is not None, page.text
    answer = client.post("/login", data={"username": username, "password": password,
                                         "login_csrf": token.group(1), "next": "/factories"})
    assert answer.status_code == 303 and answer.headers["location"] == "/factories", answer.text
    return csrf_of(client.get("/factories", headers={"Accept": "text/html"}).text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)
