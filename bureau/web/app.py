"""The bureau portal as a FastAPI application: `create_app(settings)`.

Server-rendered pages (Jinja2 templates shipped in the package), static assets served from
the package (ECharts among them: the pages load nothing from the network), JSON twins of the
pages under /api/, OpenAPI at /openapi.json. Served by uvicorn from `tieragent bureau web`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from bureau.web import auth, routes_admin, routes_downloads, routes_factories
from bureau.web.auth import NotAuthenticated, Refused, portal_of, unauthenticated, wants_html
from bureau.web.i18n import STRINGS, translator
from bureau.web.portal import Portal, language
from bureau.web.settings import WebSettings

# Pages send no referrer off-site, may not be framed, and run only the portal's own scripts
# (inline styles stay allowed: ECharts styles the elements it draws).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
        "form-action 'self'"
    ),
}


def create_app(settings: WebSettings) -> FastAPI:
    portal = Portal(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        portal.close()

    app = FastAPI(
        title="tieragent bureau portal",
        description="Factories' signed reports, annual evaluations and evidence, for "
        "evaluators (read) and admins (keys, accounts, audit). Scripts authenticate with "
        "`Authorization: Bearer <token>` (`tieragent bureau users token`).",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # the Swagger page would load its assets from a CDN
        redoc_url=None,
    )
    app.state.portal = portal
    app.mount("/static", StaticFiles(packages=[("bureau.web", "static")]), name="static")
    app.include_router(auth.router)
    app.include_router(routes_factories.router)
    app.include_router(routes_downloads.router)
    app.include_router(routes_admin.router)

    @app.exception_handler(NotAuthenticated)
    async def _unauthenticated(request: Request, _: NotAuthenticated) -> Response:
        return unauthenticated(request)

    @app.exception_handler(Refused)
    async def _refused(request: Request, error: Refused) -> Response:
        return refusal(request, error.status, error.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        if wants_html(request):
            details = "; ".join(str(e.get("msg", "")) for e in error.errors())
            return refusal(request, 400, details or "invalid request")
        return JSONResponse({"detail": error.errors()}, status_code=422)

    @app.middleware("http")
    async def _headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app


def refusal(request: Request, status: int, message: str) -> Response:
    """The refusal as a page for a browser, as JSON otherwise; `message` is an i18n key
    or a sentence."""
    lang = language(request)
    text = translator(lang)(message) if message in STRINGS else message
    if wants_html(request):
        return portal_of(request).render(
            request, "error.html", None, None, status_code=status, message=text
        )
    return JSONResponse({"detail": text}, status_code=status)
