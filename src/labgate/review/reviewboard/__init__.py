"""Review Board: review requests in by polling the Web API (a cursor on their ``last_updated``)
and, when ``secret_env`` is set, through its signed WebHooks (``labgate serve`` receives them),
each published diff revision tested as a commit made by applying the raw diff onto its base
commit in the tree's mirror, results out as *status updates* (service id ``context``, default
``labgate``) with the full message in a review attached to them.

Tested against a real Review Board server (``tests/reviewboard.py`` installs and starts one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from labgate.review.drivers import ReviewDriver, register

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from labgate.model import ReviewSpec
    from labgate.review.reviewboard.connector import ReviewBoardConnector


def _connector(spec: ReviewSpec) -> ReviewBoardConnector:
    # imported when a loop runs, not when lab.toml is read (httpx)
    from labgate.review.reviewboard.connector import ReviewBoardConnector

    return ReviewBoardConnector(spec)


def _routes(*args: Any, **options: Any) -> Sequence[BaseRoute]:
    from labgate.review.reviewboard.webhook import reviewboard_routes

    return reviewboard_routes(*args, **options)


register(ReviewDriver("reviewboard", connector=_connector, routes=_routes))
