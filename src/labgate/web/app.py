"""The dashboard's ASGI app: server-rendered pages (Jinja2) and the JSON API, on one Starlette app.

``create_app(lab, store)`` assembles it; ``labgate serve`` runs it under uvicorn. Every page only
reads the store, except the two actions (cancel a flight, retest a job) which need the lab's token
(see ``auth``). Outside text (commit subjects, names, logs) only reaches a page through Jinja's
autoescaping or as JSON data that the page's script inserts as text.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labgate.config import Lab
from labgate.model import Outcome
from labgate.review.drivers import review_routes
from labgate.store import FlightNotFound, Store, StoreError
from labgate.web import api, pages
from labgate.web.auth import Access

HERE = Path(__file__).parent
log = logging.getLogger("labgate.web")

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class RequestLog:
    """ASGI middleware: security headers on every response, and one JSON line per request
    (method, path, status, duration) on the ``labgate.web`` logger."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            log.info(
                json.dumps(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                    }
                )
            )


def duration(seconds: float | None) -> str:
    """``0.42s``, ``12.3s``, ``4m05s``, ``2h03m``; ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


KNOWN_STATES = frozenset(
    {str(o) for o in Outcome}
    | {"finished", "found", "undecided", "pushed", "not-fast-forward", "error", "free"}
)
_CLASSES = {value: f"o-{value}" for value in KNOWN_STATES}


def outcome_class(outcome: object) -> str:
    """The CSS class of an outcome (``o-pass``...); unknown values get ``o-other``."""
    return _CLASSES.get(str(outcome) if outcome is not None else "", "o-other")


def templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dur"] = duration
    env.filters["short"] = lambda sha: (sha or "")[:12]
    env.filters["q"] = lambda text: quote(str(text), safe="")
    env.filters["oc"] = outcome_class
    env.filters["pct"] = lambda v: "-" if v is None else f"{100 * v:.1f}%"
    return Jinja2Templates(env=env)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    web: pages.Web = request.app.state.web
    return web.render(
        request, "error.html", {"status": exc.status_code, "message": exc.detail}, exc.status_code
    )


def _not_found(request: Request, exc: Exception) -> Response:
    return _http_error(request, HTTPException(404, str(exc)))


def create_app(lab: Lab, store: Store, *, token: str | None = None) -> Starlette:
    """The dashboard of ``lab`` over ``store``. ``token`` overrides lab.toml's ``[web] token``."""
    access = Access(token if token is not None else lab.web_token)
    web = pages.Web(lab, store, access, templates())
    routes: list[Any] = [
        *pages.routes(web),
        *api.routes(web),
        *review_routes(lab, store),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers: dict[Any, Callable[..., Any]] = {
        HTTPException: _http_error,
        FlightNotFound: _not_found,
        StoreError: _not_found,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.web = web
    app.add_middleware(RequestLog)
    return app


__all__ = ["Route", "create_app"]
