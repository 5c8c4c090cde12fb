"""Who reads and who may act.

A request's *viewer* (:class:`~labgate.store.users.Viewer`) is who it comes from: the lab admin
(lab.toml's ``[web] token``: sees everything, may cancel and retest), a user (an API token made
with ``labgate token create``: sees public work and the embargoed work of their groups), or
anonymous (public work only, unless ``[web] anonymous = false``).

A program sends a token as ``Authorization: Bearer <token>``, which a browser never adds across
sites. A browser logs in once with a token and gets a session cookie (HttpOnly, SameSite=Strict)
made of a random nonce and its HMAC under a server key; each form then carries a CSRF value,
another HMAC of the nonce, and the request's Origin (when sent) must be this site.

Sessions live in the server: a cookie only counts while its nonce is among the live sessions, for
at most ``SESSION_TTL_S`` after login; logging out ends it at once, and a restart ends them all.
A user's session asks the store for its token on each request, so revoking the token (or leaving
a group) takes effect at once. The HMAC keeps a cookie made under another key from ever matching.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from labgate.store.users import ANONYMOUS, LAB_ADMIN, Users, Viewer

SESSION_COOKIE = "labgate_session"
SESSION_TTL_S = 12 * 3600.0


def _mac(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


class BadToken(Exception):
    """A bearer token that is neither the lab's nor a live user token."""


@dataclass(frozen=True)
class _Session:
    ends: float
    token: str
    """What the browser logged in with: the lab's token or a user's."""


class Access:
    """The lab's token (None: no one may act), the users' tokens in the store (``users``), and
    the live sessions of the browsers logged in. ``clock`` gives the time in seconds (tests move
    it)."""

    def __init__(
        self,
        token: str | None,
        users: Users | None = None,
        *,
        ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.users = users
        self.ttl_s = ttl_s
        self.clock = clock
        # sessions are the server's own: under the lab token when there is one (a new token ends
        # them all), else under a key of this process
        self._key = token if token is not None else secrets.token_hex(32)
        self._sessions: dict[str, _Session] = {}  # live session nonce -> its session
        self._lock = threading.Lock()  # sync pages run in threads

    @property
    def enabled(self) -> bool:
        """True when the lab has a token, so its admin may act (cancel, retest)."""
        return self.token is not None

    def check_token(self, given: str) -> bool:
        """True for the lab's own token."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def viewer_for(self, token: str) -> Viewer | None:
        """Who a token is: the lab admin, a user with a live token, None for anything else."""
        if self.check_token(token):
            return LAB_ADMIN
        return self.users.viewer_for_token(token) if self.users is not None else None

    def viewer(self, request: Request) -> Viewer:
        """Who the request comes from; BadToken for a bearer token that is no one's."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            found = self.viewer_for(given.strip())
            if found is None:
                raise BadToken()
            return found
        session = self._session(request)
        if session is not None:
            return self.viewer_for(session[1].token) or ANONYMOUS
        return ANONYMOUS

    def new_session(self, token: str) -> str:
        """A new session's cookie value, for a browser that gave this (valid) token."""
        nonce = secrets.token_hex(16)
        now = self.clock()
        with self._lock:
            for old in [n for n, s in self._sessions.items() if s.ends <= now]:
                del self._sessions[old]
            self._sessions[nonce] = _Session(now + self.ttl_s, token)
        return f"{nonce}.{_mac(self._key, 'session:' + nonce)}"

    def end_session(self, request: Request) -> None:
        """Log the request's session out: its cookie no longer counts, wherever it was copied."""
        session = self._session(request)
        if session is not None:
            with self._lock:
                self._sessions.pop(session[0], None)

    def _session(self, request: Request) -> tuple[str, _Session] | None:
        """The request's live session (its nonce and itself), if any."""
        cookie = request.cookies.get(SESSION_COOKIE, "")
        nonce, _, mac = cookie.partition(".")
        if not nonce or not hmac.compare_digest(mac, _mac(self._key, "session:" + nonce)):
            return None
        with self._lock:
            session = self._sessions.get(nonce)
            if session is None:
                return None
            if session.ends <= self.clock():
                del self._sessions[nonce]
                return None
        return nonce, session

    def csrf_for(self, request: Request) -> str | None:
        """The CSRF value the request's forms carry, None when not logged in."""
        session = self._session(request)
        if session is None:
            return None
        return _mac(self._key, "csrf:" + session[0])

    def may_act(self, request: Request, form_csrf: str | None) -> bool:
        """True for the lab's token as a bearer, or a same-origin form with its CSRF from a
        browser logged in with it."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return self.check_token(given.strip())
        session = self._session(request)
        if session is None or not self.check_token(session[1].token):
            return False
        expected = _mac(self._key, "csrf:" + session[0])
        if form_csrf is None or not same_origin(request):
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
