"""The portal's shared state: settings, database connections, templates, page rendering.

A store's connection (bureau.database.Database) is not thread-safe: FastAPI runs plain `def`
handlers in a thread pool, so each worker thread opens its own store (once) on the bureau
database, SQLite in WAL mode or PostgreSQL, beside the receivers. All are closed when the
app stops.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from bureau.accounts import Accounts, User
from bureau.annual import indicator_unit
from bureau.html_report import format_value
from bureau.store import SqlReportStore
from bureau.web import i18n
from bureau.web.settings import WebSettings

LANG_COOKIE = "lang"
SHOWN_ZONE = ZoneInfo("Asia/Shanghai")


class Portal:
    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._opened: list[SqlReportStore] = []
        self._lock = threading.Lock()
        self._generation = 0  # bumped by close(): threads then open their stores again
        self.templates = Jinja2Templates(env=_environment())
        self.store()  # a database that cannot be opened fails at start, not at the first page

    def store(self) -> SqlReportStore:
        store: SqlReportStore | None = getattr(self._local, "store", None)
        if store is None or self._local.generation != self._generation:
            store = SqlReportStore(self.settings.db)
            self._local.store = store
            self._local.accounts = Accounts(store.db)
            with self._lock:
                self._opened.append(store)
                self._local.generation = self._generation
        return store

    def accounts(self) -> Accounts:
        self.store()
        accounts: Accounts = self._local.accounts
        return accounts

    def close(self) -> None:
        with self._lock:
            for store in self._opened:
                store.close()
            self._opened.clear()
            self._generation += 1

    def render(
        self, request: Request, name: str, user: User | None, csrf: str | None,
        status_code: int = 200, **context: Any,
    ) -> HTMLResponse:
        lang = language(request)
        values = {
            "t": i18n.translator(lang), "lang": lang, "user": user, "csrf": csrf,
            "path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "tier_label": lambda tier: i18n.tier_label(tier, lang),
            "status_label": lambda status: i18n.status_label(status, lang),
            "source_label": lambda source: i18n.source_label(source, lang),
            "indicator_label": lambda key: i18n.indicator_label(key, lang),
            "unit_of": lambda key: indicator_unit(key) if key else "",
            **context,
        }
        return self.templates.TemplateResponse(request, name, values, status_code=status_code)


def language(request: Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, i18n.DEFAULT_LANGUAGE)
    return lang if lang in i18n.LANGUAGES else i18n.DEFAULT_LANGUAGE


def shown_time(epoch_s: float | None) -> str:
    """Epoch seconds as Beijing time (the bureau's), e.g. 2025-02-03 08:15:02."""
    if epoch_s is None:
        return "—"
    return datetime.fromtimestamp(epoch_s, SHOWN_ZONE).strftime("%Y-%m-%d %H:%M:%S")


def shown_iso(text: str | None) -> str:
    """An ISO UTC timestamp from a payload as Beijing time."""
    if not text:
        return "—"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(SHOWN_ZONE).strftime("%Y-%m-%d %H:%M:%S")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("bureau.web", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["value"] = lambda value, unit="": format_value(value, unit)
    env.filters["time"] = shown_time
    env.filters["iso"] = shown_iso
    return env
