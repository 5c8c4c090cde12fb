"""The code review drivers: each registers itself here with what it offers, so that adding one
(Review Board, GitLab) touches its own folder only.

A driver gives the connector of a ``[[review]]`` entry (events in, votes out) and, if the review
server calls labgate (a webhook), the web routes ``labgate serve`` mounts. A driver that cannot
run yet says why instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labgate.model import ReviewSpec

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from labgate.config import Lab
    from labgate.review.base import Connector
    from labgate.store import Store


@dataclass(frozen=True)
class ReviewDriver:
    """What one ``driver = "..."`` of ``[[review]]`` offers."""

    name: str
    connector: Callable[[ReviewSpec], Connector] | None = None
    """The connector of an entry; None when the driver cannot run (see ``unavailable``)."""
    unavailable: str = ""
    """Why the driver cannot run yet, said to the user for each entry that names it."""
    routes: Callable[..., Sequence[BaseRoute]] | None = None
    """The web routes the review server calls (``routes(lab, store, **options)``)."""


DRIVERS: dict[str, ReviewDriver] = {}


def register(driver: ReviewDriver) -> None:
    DRIVERS[driver.name] = driver


def review_routes(lab: Lab, store: Store, **options: Any) -> list[BaseRoute]:
    """Every registered driver's web routes, for ``labgate serve``."""
    load_drivers()
    return [r for d in DRIVERS.values() if d.routes for r in d.routes(lab, store, **options)]


def load_drivers() -> None:
    """Import the drivers shipped with labgate: each registers itself."""
    import labgate.review.gerrit
    import labgate.review.github
    import labgate.review.reviewboard  # noqa: F401
