"""Who may act: pages are read-only; cancel and retest need the ``[web] token`` of lab.toml.

A browser logs in once with the token and gets a session cookie (HttpOnly, SameSite=Strict) made
of a random nonce and its HMAC under the token; each form then carries a CSRF value, another HMAC
of the nonce, and the request's Origin (when sent) must be this site. A program sends the token
itself as ``Authorization: Bearer <token>``, which a browser never adds across sites.

Sessions live in the server: a cookie only counts while its nonce is among the live sessions, for
at most ``SESSION_TTL_S`` after login; logging out ends it at once, and a restart (the only way
to change the token) ends them all. The HMAC keeps a cookie made under another token from ever
matching.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

from starlette.requests import Request

SESSION_COOKIE = "labgate_session"
SESSION_TTL_S = 12 * 3600.0


def _mac(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


class Access:
    """The lab's token (None: the dashboard is read-only for everyone) and the live sessions of
    the browsers logged in with it. ``clock`` gives the time in seconds (tests move it)."""

    def __init__(
        self,
        token: str | None,
        *,
        ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.ttl_s = ttl_s
        self.clock = clock
        self._expiry: dict[str, float] = {}  # live session nonce -> when it ends
        self._lock = threading.Lock()  # sync pages run in threads

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def check_token(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def new_session(self) -> str:
        """A new session's cookie value."""
        assert self.token is not None
        nonce = secrets.token_hex(16)
        now = self.clock()
        with self._lock:
            for old in [n for n, end in self._expiry.items() if end <= now]:
                del self._expiry[old]
            self._expiry[nonce] = now + self.ttl_s
        return f"{nonce}.{_mac(self.token, 'session:' + nonce)}"

    def end_session(self, request: Request) -> None:
        """Log the request's session out: its cookie no longer counts, wherever it was copied."""
        nonce = self.session_nonce(request)
        if nonce is not None:
            with self._lock:
                self._expiry.pop(nonce, None)

    def session_nonce(self, request: Request) -> str | None:
        """The nonce of the request's live session, if any."""
        if self.token is None:
            return None
        cookie = request.cookies.get(SESSION_COOKIE, "")
        nonce, _, mac = cookie.partition(".")
        if not nonce or not hmac.compare_digest(mac, _mac(self.token, "session:" + nonce)):
            return None
        with self._lock:
            end = self._expiry.get(nonce)
            if end is None:
                return None
            if end <= self.clock():
                del self._expiry[nonce]
                return None
        return nonce

    def csrf_for(self, request: Request) -> str | None:
        """The CSRF value the request's forms carry, None when not logged in."""
        nonce = self.session_nonce(request)
        if nonce is None or self.token is None:
            return None
        return _mac(self.token, "csrf:" + nonce)

    def bearer(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.check_token(given.strip())

    def may_act(self, request: Request, form_csrf: str | None) -> bool:
        """True for a bearer token, or a logged-in browser's same-origin form with its CSRF."""
        if self.bearer(request):
            return True
        expected = self.csrf_for(request)
        if expected is None or form_csrf is None or not same_origin(request):
            return False
        return hmac.compare_digest(form_csrf, expected)


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:  # an old browser: the SameSite cookie and the CSRF value still hold
        return True
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return origin == own
