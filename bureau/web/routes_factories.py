"""Evaluator pages and their JSON twins: the factory list, a factory, a report."""

from __future__ import annotations

import dataclasses
import time
from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bureau.web.auth import Principal, Refused, portal_of, principal
from bureau.web.factory_view import (
    BUREAU_ZONE,
    default_through,
    default_year,
    factory_view,
)
from bureau.web.factory_view import as_json as factory_json
from bureau.web.queries import FactoryRow, factory_known, factory_rows, rejection_rows
from bureau.web.report_view import as_json as report_json
from bureau.web.report_view import report_view

router = APIRouter()
SORT_KEYS = ("factory", "tier", "last_report", "coverage", "rejections", "gaps")
TIER_ORDER = {None: 0, "basic": 1, "advanced": 2, "excellent": 3, "leading": 4}


def _coverage(row: FactoryRow, now: datetime) -> dict[str, Any] | None:
    """Accepted days of the year of the latest daily report, over its days through
    yesterday (a year still running) or Dec 31."""
    if row.last_day is None:
        return None
    year = int(row.last_day[:4])
    last = default_through(year) or date(year, 12, 31)
    days = (last - date(year, 1, 1)).days + 1
    accepted = row.accepted_days.get(f"{year:04d}", 0)
    return {"year": year, "accepted": accepted, "days": days,
            "share": accepted / days if days > 0 else 0.0}


def _list_item(row: FactoryRow, now: datetime) -> dict[str, Any]:
    age = None
    if row.last_received_at is not None:
        age = (now.timestamp() - row.last_received_at) / 86400.0
    return dataclasses.asdict(row) | {
        "coverage": _coverage(row, now),
        "age_days": age,
        "problems": row.chain_gaps + row.pending_link + row.not_in_log + row.rejections,
    }


def _sort_key(sort: str) -> Any:
    keys = {
        "factory": lambda i: i["factory_id"],
        "tier": lambda i: TIER_ORDER.get(i["tier_reached"], 0),
        "last_report": lambda i: i["last_received_at"] or 0.0,
        "coverage": lambda i: (i["coverage"] or {}).get("share", -1.0),
        "rejections": lambda i: i["rejections"],
        "gaps": lambda i: i["chain_gaps"],
    }
    return keys[sort]


def factory_list(
    request: Request, q: str, tier: str, problems: bool, sort: str, order: str
) -> list[dict[str, Any]]:
    if sort not in SORT_KEYS:
        raise Refused(400, f"sort must be one of {', '.join(SORT_KEYS)}")
    if order not in ("asc", "desc"):
        raise Refused(400, "order must be asc or desc")
    now = datetime.now(BUREAU_ZONE)
    items = [_list_item(r, now) for r in factory_rows(portal_of(request).store().db)]
    if q:
        items = [i for i in items if q.lower() in i["factory_id"].lower()]
    if tier:
        wanted = None if tier == "none" else tier
        items = [i for i in items if i["tier_reached"] == wanted]
    if problems:
        items = [i for i in items if i["problems"] > 0]
    return sorted(items, key=_sort_key(sort), reverse=order == "desc")


_Q = Query("", max_length=100, description="Part of the factory id.")
_TIER = Query("", description="basic, advanced, excellent, leading or none.")
_PROBLEMS = Query(False, description="Only factories with gaps, rejections or log problems.")
_SORT = Query("factory", description="factory, tier, last_report, coverage, rejections, gaps.")
_ORDER = Query("asc", description="asc or desc.")


@router.get("/", include_in_schema=False)
def home() -> Response:
    return RedirectResponse("/factories", status_code=303)


@router.get("/factories", response_class=HTMLResponse, include_in_schema=False)
def factories_page(
    request: Request, q: str = _Q, tier: str = _TIER, problems: bool = _PROBLEMS,
    sort: str = _SORT, order: str = _ORDER, who: Principal = Depends(principal),
) -> Response:
    items = factory_list(request, q, tier, problems, sort, order)
    return portal_of(request).render(
        request, "factories.html", who.user, who.csrf, items=items, q=q, tier=tier,
        problems=problems, sort=sort, order=order, sort_keys=SORT_KEYS,
    )


@router.get("/api/factories", tags=["factories"])
def factories_api(
    request: Request, q: str = _Q, tier: str = _TIER, problems: bool = _PROBLEMS,
    sort: str = _SORT, order: str = _ORDER, who: Principal = Depends(principal),
) -> list[dict[str, Any]]:
    """The factory list: tier the latest daily report states, latest report and its age,
    coverage of its year, chain gaps, pending links, reports missing from the log,
    rejections."""
    return factory_list(request, q, tier, problems, sort, order)


def _year_through(
    request: Request, factory_id: str, year: int | None, through: str | None
) -> tuple[int, date | None]:
    store = portal_of(request).store()
    if not factory_known(store.db, factory_id):
        raise Refused(404, "not_found")
    chosen = year if year is not None else default_year(store, factory_id)
    last = None
    if through:
        try:
            last = date.fromisoformat(through)
        except ValueError:
            raise Refused(400, f"through {through!r} is not a date (YYYY-MM-DD)") from None
        if last.year != chosen:
            raise Refused(400, f"through {through} is not a day of {chosen}")
    return chosen, last


_YEAR = Query(None, ge=2000, le=2100, description="Year evaluated (default: latest report's).")
_THROUGH = Query(None, description="Last day evaluated, YYYY-MM-DD (default: Dec 31 or "
                 "yesterday).")


@router.get("/factories/{factory_id}", response_class=HTMLResponse, include_in_schema=False)
def factory_page(
    request: Request, factory_id: str, year: int | None = _YEAR, through: str | None = _THROUGH,
    who: Principal = Depends(principal),
) -> Response:
    chosen, last = _year_through(request, factory_id, year, through)
    portal = portal_of(request)
    view = factory_view(portal.store(), portal.settings, factory_id, chosen, last)
    return portal.render(
        request, "factory.html", who.user, who.csrf, view=view,
        rejections=rejection_rows(portal.store().db, factory_id),
        query=f"year={chosen}" + (f"&through={view.through}" if view.through else ""),
    )


@router.get("/api/factories/{factory_id}", tags=["factories"])
def factory_api(
    request: Request, factory_id: str, year: int | None = _YEAR, through: str | None = _THROUGH,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """A factory's annual evaluation (every condition), per-device figures and chain."""
    chosen, last = _year_through(request, factory_id, year, through)
    portal = portal_of(request)
    body = factory_json(factory_view(portal.store(), portal.settings, factory_id, chosen, last))
    body["rejections"] = [
        dataclasses.asdict(r) for r in rejection_rows(portal.store().db, factory_id)
    ]
    return body


@router.get("/reports/{report_id}", response_class=HTMLResponse, include_in_schema=False)
def report_page(request: Request, report_id: str, who: Principal = Depends(principal)) -> Response:
    portal = portal_of(request)
    view = report_view(portal.store(), report_id)
    if view is None:
        raise Refused(404, "not_found")
    return portal.render(request, "report.html", who.user, who.csrf, view=view,
                         now=time.time())


@router.get("/api/reports/{report_id}", tags=["reports"])
def report_api(
    request: Request, report_id: str, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """A stored report checked again: signature, key window, schema, chain link,
    indicators, raw-data root, transparency-log inclusion, receipt."""
    view = report_view(portal_of(request).store(), report_id)
    if view is None:
        raise Refused(404, "not_found")
    return report_json(view)
