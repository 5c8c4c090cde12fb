"""How often the lab answers the public and the community: sliding windows of requests per
client (an address, a user) and, optionally, from everyone together.

- The public access form (``/access``, its page and its POST): at most ``per_address``
  requests from one client address and ``total`` from all addresses in any ``window`` seconds
  (lab.toml ``[access] apply_limit``).
- An approved user's submissions (on-demand flights and host reservations, form and API): at
  most ``per_user`` in any ``window`` seconds (``[access] submit_limit``): the quotas bound
  the work accepted, this bounds the attempts (each may fetch a tree).

A request over a limit is refused (HTTP 429) with the seconds until the limit allows one again
(``Retry-After``), and is not counted: a client that waits as told gets in. The counts are the
web process's own (one ``labgate serve`` answers): they start afresh when it restarts. Memory
stays bounded by the windows' limits (with ``total``) or by the lab's users.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from labgate.access.settings import ApplyLimit, SubmitLimit


class Limited(Exception):
    """A request over a limit: the message names the limit (``rule``); retry after
    ``retry_after`` seconds."""

    def __init__(self, rule: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.retry_after = retry_after


@dataclass
class RateLimiter:
    """Sliding windows of ``window`` seconds: at most ``per_client`` requests of one client
    (a ``client``: "address", "user"), and ``total`` of all (None: no such limit); the limit
    is ``setting`` in lab.toml. Thread-safe."""

    setting: str
    client: str
    per_client: int
    window: float
    total: int | None = None
    clock: Callable[[], float] = time.monotonic
    _by_client: dict[str, deque[float]] = field(default_factory=dict)
    _all: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, client: str) -> None:
        """Count a request of ``client``; Limited when it is over a limit (then not
        counted)."""
        with self._lock:
            stamp = self.clock()
            self._forget(stamp - self.window)
            mine = self._by_client.get(client, deque())
            per = f"per {self.window:g} s"
            if len(mine) >= self.per_client:
                raise Limited(
                    f"per_{self.client}",
                    f"too many requests from your {self.client}: {self.setting} allows "
                    f"{self.per_client} from one {self.client} {per}",
                    self._wait(mine[0], stamp),
                )
            if self.total is not None and len(self._all) >= self.total:
                raise Limited(
                    "total",
                    f"too many requests from everyone: {self.setting} allows {self.total} "
                    f"in all {per}",
                    self._wait(self._all[0], stamp),
                )
            mine.append(stamp)
            self._by_client[client] = mine
            if self.total is not None:
                self._all.append(stamp)

    def _wait(self, oldest: float, stamp: float) -> int:
        return max(1, math.ceil(oldest + self.window - stamp))

    def _forget(self, before: float) -> None:
        while self._all and self._all[0] <= before:
            self._all.popleft()
        for client in [c for c, hits in self._by_client.items() if hits[0] <= before]:
            hits = self._by_client[client]
            while hits and hits[0] <= before:
                hits.popleft()
            if not hits:
                del self._by_client[client]


def apply_limiter(limit: ApplyLimit, clock: Callable[[], float] = time.monotonic) -> RateLimiter:
    """The public access form's limits."""
    setting = "[access] apply_limit"
    return RateLimiter(setting, "address", limit.per_address, limit.window, limit.total, clock)


def submit_limiter(limit: SubmitLimit, clock: Callable[[], float] = time.monotonic) -> RateLimiter:
    """An approved user's submissions' limit."""
    return RateLimiter("[access] submit_limit", "user", limit.per_user, limit.window, None, clock)
