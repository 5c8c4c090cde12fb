"""GitHub: pull requests in through a webhook receiver (``labgate serve``), results out as commit
statuses (or, with ``voting = false``, as pull request comments) through the REST API.

GitHub itself cannot be reached from the test environment: the tests serve the receiver on a
loopback port with real signed requests, and check the REST calls against a fake that follows
GitHub's documented request and response shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from labgate.review.drivers import ReviewDriver, register

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from labgate.model import ReviewSpec
    from labgate.review.github.connector import GitHubConnector


def _connector(spec: ReviewSpec) -> GitHubConnector:
    # imported when a loop runs, not when lab.toml is read (httpx)
    from labgate.review.github.connector import GitHubConnector

    return GitHubConnector(spec)


def _routes(*args: Any, **options: Any) -> Sequence[BaseRoute]:
    from labgate.review.github.webhook import github_routes

    return github_routes(*args, **options)


register(ReviewDriver("github", connector=_connector, routes=_routes))
