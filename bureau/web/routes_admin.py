"""Admin pages: enrol, revoke and rotate factory keys, manage accounts, read the audit.

Every admin action is written to the audit table in the same transaction as the change, so
there is no change without its row. Pages are for admins only (403 for an evaluator, itself
audited as `denied`); every form carries the session's CSRF token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from agent.protocol.envelope import EnvelopeError, strict_loads
from bureau.accounts import ROLES, AccountError
from bureau.registry import EnrolledKey, KeyRegistry, RegistryError
from bureau.web.auth import Principal, Refused, admin, check_csrf, portal_of

router = APIRouter()


def _done(page: str, message: str) -> Response:
    return RedirectResponse(f"{page}?done={quote(message, safe='')}", status_code=303)


def _keys_page(request: Request, who: Principal, done: str = "", error: str = "",
               status: int = 200) -> Response:
    portal = portal_of(request)
    keys = KeyRegistry(portal.store().db).enrolled()
    return portal.render(request, "admin_keys.html", who.user, who.csrf, keys=keys, done=done,
                         error=error, status_code=status)


@router.get("/admin/keys", response_class=HTMLResponse, include_in_schema=False)
def keys_page(request: Request, done: str = "", who: Principal = Depends(admin)) -> Response:
    return _keys_page(request, who, done)


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = strict_loads(text.encode("utf-8"))
    except EnvelopeError as error:
        raise RegistryError(f"The {what} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise RegistryError(f"The {what} is not a JSON object.")
    return value


def enrol_key(request: Request, who: Principal, factory_id: str, jwk: dict[str, Any]) -> str:
    """Enrol `jwk` for `factory_id` and audit it; returns the kid."""
    if not factory_id.strip():
        raise RegistryError("Give the factory id.")
    return _key_change(request, who, "keys.enrol",
                       lambda keys: keys.enroll(factory_id.strip(), jwk)).kid


def _key_change(request: Request, who: Principal, action: str,
                change: Callable[[KeyRegistry], EnrolledKey]) -> EnrolledKey:
    """Apply `change` to the key registry and audit it in one transaction (raises
    RegistryError)."""
    store = portal_of(request).store()
    with store.transaction():
        key = change(KeyRegistry(store.db))
        portal_of(request).accounts().audit(who.user.username, action,
                                            f"{key.factory_id} {key.kid}")
    return key


@router.post("/admin/keys/enrol", include_in_schema=False)
def enrol_form(
    request: Request, factory_id: str = Form(""), jwk: str = Form(""),
    csrf_token: str = Form(""), who: Principal = Depends(admin),
) -> Response:
    check_csrf(who, csrf_token)
    try:
        kid = enrol_key(request, who, factory_id, _json_object(jwk, "JWK"))
    except RegistryError as error:
        return _keys_page(request, who, error=str(error), status=400)
    return _done("/admin/keys", f"enrolled {kid}")


@router.post("/api/keys", tags=["admin"], status_code=201)
def enrol_api(
    request: Request, factory_id: str = Body(...), jwk: dict[str, Any] = Body(...),
    who: Principal = Depends(admin),
) -> dict[str, str]:
    """Enrol a factory's public Ed25519 JWK (admins; API token or session with CSRF)."""
    if who.via == "session":
        check_csrf(who, request.headers.get("x-csrf-token", ""))
    try:
        return {"kid": enrol_key(request, who, factory_id, jwk), "factory_id": factory_id}
    except RegistryError as error:
        raise Refused(400, str(error)) from None


@router.post("/admin/keys/revoke", include_in_schema=False)
def revoke_form(
    request: Request, kid: str = Form(""), csrf_token: str = Form(""),
    who: Principal = Depends(admin),
) -> Response:
    check_csrf(who, csrf_token)
    try:
        _key_change(request, who, "keys.revoke", lambda keys: keys.revoke(kid))
    except RegistryError as error:
        return _keys_page(request, who, error=str(error), status=400)
    return _done("/admin/keys", f"revoked {kid}")


@router.post("/admin/keys/rotate", include_in_schema=False)
def rotate_form(
    request: Request, statement: str = Form(""), csrf_token: str = Form(""),
    who: Principal = Depends(admin),
) -> Response:
    check_csrf(who, csrf_token)
    try:
        rotation = _json_object(statement, "statement")
        key = _key_change(request, who, "keys.rotate",
                          lambda keys: keys.apply_rotation(rotation))
    except RegistryError as error:
        return _keys_page(request, who, error=str(error), status=400)
    return _done("/admin/keys", f"rotated to {key.kid}")


def _accounts_page(request: Request, who: Principal, done: str = "", error: str = "",
                   status: int = 200) -> Response:
    portal = portal_of(request)
    return portal.render(request, "admin_accounts.html", who.user, who.csrf,
                         users=portal.accounts().users(), roles=ROLES, done=done, error=error,
                         status_code=status)


@router.get("/admin/accounts", response_class=HTMLResponse, include_in_schema=False)
def accounts_page(request: Request, done: str = "", who: Principal = Depends(admin)) -> Response:
    return _accounts_page(request, who, done)


@router.post("/admin/accounts", include_in_schema=False)
def add_account(
    request: Request, username: str = Form(""), role: str = Form("evaluator"),
    password: str = Form(""), csrf_token: str = Form(""), who: Principal = Depends(admin),
) -> Response:
    check_csrf(who, csrf_token)
    portal = portal_of(request)
    try:
        with portal.store().transaction():
            user = portal.accounts().add_user(username, role, password)
            portal.accounts().audit(who.user.username, "accounts.add",
                                    f"{user.username} {user.role}")
    except AccountError as error:
        return _accounts_page(request, who, error=str(error), status=400)
    return _done("/admin/accounts", f"added {user.username}")


@router.post("/admin/accounts/disable", include_in_schema=False)
def disable_account(
    request: Request, username: str = Form(""), csrf_token: str = Form(""),
    who: Principal = Depends(admin),
) -> Response:
    check_csrf(who, csrf_token)
    portal = portal_of(request)
    try:
        with portal.store().transaction():
            portal.accounts().disable(username)
            portal.accounts().audit(who.user.username, "accounts.disable", username)
    except AccountError as error:
        return _accounts_page(request, who, error=str(error), status=400)
    return _done("/admin/accounts", f"disabled {username}")


@router.get("/audit", response_class=HTMLResponse, include_in_schema=False)
def audit_page(
    request: Request, action: str | None = None, who: Principal = Depends(admin)
) -> Response:
    portal = portal_of(request)
    rows = portal.accounts().audit_rows(action=action or None)
    return portal.render(request, "audit.html", who.user, who.csrf, rows=rows,
                         action=action or "")


@router.get("/api/audit", tags=["admin"])
def audit_api(
    request: Request, action: str | None = None, limit: int = 500,
    who: Principal = Depends(admin),
) -> list[dict[str, Any]]:
    """The audit table, newest first (admins)."""
    rows = portal_of(request).accounts().audit_rows(min(max(limit, 1), 10_000), action)
    return [dataclasses.asdict(row) for row in rows]
