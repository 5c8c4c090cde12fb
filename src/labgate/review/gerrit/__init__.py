"""Gerrit: events from ``gerrit stream-events`` over SSH, the open changes and votes through the
REST API (:mod:`.connector`), from pure parsing (:mod:`.events`) and request building
(:mod:`.rest`).

Tested against a protocol double that follows Gerrit's documentation (``tests/gerritdouble.py``:
an asyncssh server, the REST API with its ``)]}'`` prefix, change refs in a real git
repository), never against a real Gerrit server: none can run where labgate is developed.
"""

from labgate.review.drivers import ReviewDriver, register
from labgate.review.gerrit.connector import GerritConnector

__all__ = ["GerritConnector"]

register(ReviewDriver("gerrit", connector=GerritConnector))
