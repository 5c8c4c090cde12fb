"""Gerrit: events from ``gerrit stream-events`` over SSH, the open changes and votes through the
REST API (:mod:`.connector`), from pure parsing (:mod:`.events`) and request building
(:mod:`.rest`).

Tested against a protocol double that follows Gerrit's documentation (``tests/gerritdouble.py``:
an asyncssh server, the REST API with its ``)]}'`` prefix, change refs in a real git
repository), never against a real Gerrit server: none can run where labgate is developed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labgate.review.drivers import ReviewDriver, register

if TYPE_CHECKING:
    from labgate.model import ReviewSpec
    from labgate.review.gerrit.connector import GerritConnector


def _connector(spec: ReviewSpec) -> GerritConnector:
    # imported when a loop runs, not when lab.toml is read (asyncssh, httpx)
    from labgate.review.gerrit.connector import GerritConnector

    return GerritConnector(spec)


register(ReviewDriver("gerrit", connector=_connector))
