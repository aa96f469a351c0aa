"""Who is asking: a browser session (cookie) or a script (API token), and what they may do.

- Anonymous: a page request (a browser asking for HTML) is sent to /login; anything else
  (the /api/ paths, downloads asked for by scripts) gets 401 with `WWW-Authenticate: Bearer`.
- Every POST from a browser session carries the session's CSRF token in a form field,
  checked here against the server's copy; a request with an API token has no ambient
  cookie to abuse, so it needs none.
- Admin-only actions answer 403 to an evaluator, and the refusal is audited.
- Login itself is protected against login CSRF by a double-submit token (a cookie and a
  form field that must match).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from bureau.accounts import User
from bureau.web.i18n import LANGUAGES
from bureau.web.portal import LANG_COOKIE, Portal

SESSION_COOKIE = "tieragent_session"
LOGIN_CSRF_COOKIE = "tieragent_login_csrf"


class NotAuthenticated(Exception):
    """No valid session or token: redirect a browser to /login, answer 401 otherwise."""


class Refused(Exception):
    """A request the portal refuses, with the status and the i18n key (or text) of why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Principal:
    user: User
    csrf: str | None  # the session's CSRF token; None for an API token
    via: str  # "session" or "token"


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def wants_html(request: Request) -> bool:
    """A browser navigating (HTML accepted, no token, not an /api/ path)."""
    return (
        not request.url.path.startswith("/api/")
        and "authorization" not in request.headers
        and "text/html" in request.headers.get("accept", "")
    )


def principal(request: Request) -> Principal:
    """The authenticated user of the request, or NotAuthenticated."""
    accounts = portal_of(request).accounts()
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        user = accounts.token_user(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise NotAuthenticated()
        return Principal(user, None, "token")
    cookie = request.cookies.get(SESSION_COOKIE)
    session = accounts.session(cookie) if cookie else None
    if session is None:
        raise NotAuthenticated()
    return Principal(session.user, session.csrf_token, "session")


def admin(request: Request, who: Principal = Depends(principal)) -> Principal:
    """The principal when an admin; else the refusal is audited and answered 403."""
    if not who.user.is_admin:
        portal_of(request).accounts().audit(
            who.user.username, "denied", f"{request.method} {request.url.path}"
        )
        raise Refused(403, "forbidden")
    return who


def check_csrf(who: Principal, token: str) -> None:
    """A session's POST must carry its CSRF token (API tokens need none)."""
    if who.via == "token":
        return
    if who.csrf is None or not hmac.compare_digest(who.csrf.encode(), token.encode()):
        raise Refused(403, "csrf_failed")


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def unauthenticated(request: Request) -> Response:
    if wants_html(request):
        return login_redirect(request)
    return JSONResponse(
        {"detail": "Authentication required: log in, or send Authorization: Bearer <token>."},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _safe_next(target: str) -> str:
    """Only a path of this site (no scheme, no //host) is followed after login."""
    plain = all(c.isprintable() and not c.isspace() for c in target)
    if plain and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/factories"


router = APIRouter()


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str = "/factories", failed: bool = False) -> Response:
    portal = portal_of(request)
    token = secrets.token_urlsafe(24)
    response = portal.render(request, "login.html", None, None, next=_safe_next(next),
                             login_csrf=token, failed=failed,
                             status_code=401 if failed else 200)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="lax",
                        secure=portal.settings.secure_cookies, path="/login")
    return response


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    login_csrf: str = Form(""),
    next: str = Form("/factories"),
) -> Response:
    portal = portal_of(request)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), login_csrf.encode()):
        raise Refused(403, "csrf_failed")
    accounts = portal.accounts()
    user = accounts.authenticate(username, password)
    if user is None:
        return RedirectResponse(
            f"/login?failed=1&next={quote(_safe_next(next), safe='')}", status_code=303
        )
    token, _ = accounts.open_session(user, portal.settings.session_ttl_s)
    accounts.audit(user.username, "login", "session")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="lax",
        secure=portal.settings.secure_cookies, max_age=int(portal.settings.session_ttl_s),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout", include_in_schema=False)
def logout(
    request: Request, csrf_token: str = Form(""), who: Principal = Depends(principal)
) -> Response:
    check_csrf(who, csrf_token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        portal_of(request).accounts().close_session(cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/lang/{code}", include_in_schema=False)
def set_language(request: Request, code: str, next: str = "/factories") -> Response:
    """Switch the portal's language (a cookie) and go back to the page."""
    if code not in LANGUAGES:
        raise Refused(404, "not_found")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(LANG_COOKIE, code, samesite="lax", max_age=365 * 86400,
                        secure=portal_of(request).settings.secure_cookies)
    return response
