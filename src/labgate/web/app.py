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
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labgate.config import Lab
from labgate.model import Outcome
from labgate.review.drivers import review_routes
from labgate.store import FlightNotFound, Store, StoreError
from labgate.store.users import Users
from labgate.web import api, pages, perf
from labgate.web.access import routes as access_routes
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


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_names(lab: Lab) -> frozenset[str]:
    """The names the dashboard answers to: loopback, ``[web] hosts``, and the host of each
    ``[[review]] web_url`` (the public name votes link to) and of ``[web] url``."""
    urls = [r.web_url for r in lab.reviews if r.web_url] + [lab.web_url or ""]
    public = [urlsplit(url).hostname for url in urls if url]
    names = [*LOOPBACK_NAMES, *lab.web_hosts, *(name for name in public if name)]
    return frozenset(name.lower() for name in names)


def request_host(header: str) -> str:
    """The host name of a ``Host`` header (without its port; an IPv6 address unbracketed)."""
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    return header.rpartition(":")[0].lower() if ":" in header else header.lower()


class HostCheck:
    """ASGI middleware: a request whose ``Host`` is not one of ``names`` is refused (400) before
    any page sees it, so a DNS-rebinding page (its own name resolving to this server) cannot
    read the dashboard."""

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host", "")
        if request_host(header) not in self.names:
            message = (
                f"Host {header!r} is not a name of this dashboard; "
                "its names are set by [web] hosts in lab.toml"
            )
            await PlainTextResponse(message, status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _internal_error(scope: Scope) -> Response:
    message = "internal error: the server's log says what went wrong"
    if str(scope["path"]).startswith("/api/"):
        return JSONResponse({"error": message}, status_code=500)
    return PlainTextResponse(message, status_code=500)


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

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Starlette's own 500 page is sent outside this middleware, without the headers
            if not started:
                await _internal_error(scope)(scope, receive, send_with_headers)
            raise
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


def duration(seconds: float | None, *, whole: bool = False) -> str:
    """``0.42s``, ``12.3s``, ``4m05s``, ``2h03m``; ``-`` for none. ``whole``: a time measured in
    whole seconds (a flight's, from its stored start and end) is shown so (``3s``), without
    digits it does not have."""
    if seconds is None:
        return "-"
    if whole and seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def ago(seconds: float) -> str:
    """How long ago (positive ``seconds``) or ahead (negative) a moment is, in words a reader
    takes in at once: ``just now``, ``40 s ago``, ``3 min ago``, ``5 h ago``, ``12 days ago``,
    ``in 2 h``."""
    span = abs(seconds)
    if span < 5:
        return "just now"
    if span < 60:
        amount = f"{span:.0f} s"
    elif span < 3600:
        amount = f"{span // 60:.0f} min"
    elif span < 2 * 86400:
        amount = f"{span // 3600:.0f} h"
    else:
        amount = f"{span // 86400:.0f} days"
    return f"{amount} ago" if seconds >= 0 else f"in {amount}"


def when(moment: str | datetime | None, now: datetime | None = None) -> Markup:
    """A stored time as pages show it: relative to now, in a ``<time>`` element that carries the
    exact time (machine form in ``datetime``, UTC in its ``title``, shown on hover); ``-`` for
    none. Rendered here, so the page is right without a script."""
    if moment is None or moment == "":
        return Markup("-")
    at = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    if at.tzinfo is None:  # the store keeps UTC
        at = at.replace(tzinfo=UTC)
    at = at.astimezone(UTC)
    words = ago(((now or datetime.now(UTC)) - at).total_seconds())
    exact = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(at.isoformat(), exact, words)


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
    env.filters["when"] = when
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


def create_app(
    lab: Lab,
    store: Store,
    *,
    token: str | None = None,
    hosts: Sequence[str] = (),
    review_options: Mapping[str, Any] | None = None,
) -> Starlette:
    """The dashboard of ``lab`` over ``store``. ``token`` overrides lab.toml's ``[web] token``;
    ``hosts`` are names it answers to besides those of :func:`host_names`; ``review_options``
    go to the review drivers' webhook routes (``deliver``: the running review loop's)."""
    access = Access(token if token is not None else lab.web_token, Users(store.engine))
    web = pages.Web(lab, store, access, templates())
    routes: list[Any] = [
        *pages.routes(web),
        *api.routes(web),
        *review_routes(lab, store, **(review_options or {})),
        *perf.routes(web),
        *access_routes(web),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers: dict[Any, Callable[..., Any]] = {
        HTTPException: _http_error,
        FlightNotFound: _not_found,
        StoreError: _not_found,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.web = web
    app.add_middleware(HostCheck, names=host_names(lab) | {h.lower() for h in hosts})
    app.add_middleware(RequestLog)
    return app


__all__ = ["Route", "create_app"]
