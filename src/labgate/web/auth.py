"""Who may act: pages are read-only; cancel and retest need the ``[web] token`` of lab.toml.

A browser logs in once with the token and gets a session cookie (HttpOnly, SameSite=Strict) made
of a random nonce and its HMAC under the token; each form then carries a CSRF value, another HMAC
of the nonce, and the request's Origin (when sent) must be this site. A program sends the token
itself as ``Authorization: Bearer <token>``, which a browser never adds across sites.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request

SESSION_COOKIE = "labgate_session"


def _mac(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Access:
    """The lab's token (None: the dashboard is read-only for everyone)."""

    token: str | None

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def check_token(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def new_session(self) -> str:
        assert self.token is not None
        nonce = secrets.token_hex(16)
        return f"{nonce}.{_mac(self.token, 'session:' + nonce)}"

    def session_nonce(self, request: Request) -> str | None:
        """The nonce of the request's valid session cookie, if any."""
        if self.token is None:
            return None
        cookie = request.cookies.get(SESSION_COOKIE, "")
        nonce, _, mac = cookie.partition(".")
        if not nonce or not hmac.compare_digest(mac, _mac(self.token, "session:" + nonce)):
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
