"""How often the public access form (``/access``, its page and its POST) answers: at most
``per_address`` requests from one client address, and ``total`` from all addresses together,
in any ``window`` seconds (lab.toml ``[access] apply_limit``). A request over a limit is
refused (HTTP 429) with the seconds until the limit allows one again (``Retry-After``), and is
not counted: a client that waits as told gets in.

The counts are the web process's own (one ``labgate serve`` answers the form): they start
afresh when it restarts. Memory stays bounded: at most ``total`` requests are remembered.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from labgate.access.settings import ApplyLimit


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
    """The sliding windows of one lab's access form (see the module docs); thread-safe."""

    limit: ApplyLimit
    clock: Callable[[], float] = time.monotonic
    _by_address: dict[str, deque[float]] = field(default_factory=dict)
    _all: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, address: str) -> None:
        """Count a request from ``address``; Limited when it is over a limit (then not
        counted)."""
        with self._lock:
            stamp = self.clock()
            self._forget(stamp - self.limit.window)
            mine = self._by_address.get(address, deque())
            where = "[access] apply_limit"
            per = f"{self.limit.window:g} s"
            if len(mine) >= self.limit.per_address:
                raise Limited(
                    "per_address",
                    f"too many requests from your address: {where} allows "
                    f"{self.limit.per_address} from one address per {per}",
                    self._wait(mine[0], stamp),
                )
            if len(self._all) >= self.limit.total:
                raise Limited(
                    "total",
                    f"too many requests to this form from everyone: {where} allows "
                    f"{self.limit.total} in all per {per}",
                    self._wait(self._all[0], stamp),
                )
            mine.append(stamp)
            self._by_address[address] = mine
            self._all.append(stamp)

    def _wait(self, oldest: float, stamp: float) -> int:
        return max(1, math.ceil(oldest + self.limit.window - stamp))

    def _forget(self, before: float) -> None:
        while self._all and self._all[0] <= before:
            self._all.popleft()
        for address in [a for a, hits in self._by_address.items() if hits[0] <= before]:
            hits = self._by_address[address]
            while hits and hits[0] <= before:
                hits.popleft()
            if not hits:
                del self._by_address[address]
