"""GitHub: pull requests in through a webhook receiver (``labgate serve``), results out as commit
statuses (or, with ``voting = false``, as pull request comments) through the REST API.

GitHub itself cannot be reached from the test environment: the tests serve the receiver on a
loopback port with real signed requests, and check the REST calls against a fake that follows
GitHub's documented request and response shapes.
"""

from labgate.review.drivers import ReviewDriver, register
from labgate.review.github.connector import GitHubConnector
from labgate.review.github.webhook import github_routes

__all__ = ["GitHubConnector", "github_routes"]

register(ReviewDriver("github", connector=GitHubConnector, routes=github_routes))
