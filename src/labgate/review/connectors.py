"""The connectors of a lab's ``[[review]]`` entries, by name."""

from __future__ import annotations

from labgate.config import Lab
from labgate.model import ReviewSpec
from labgate.review.base import Connector


class NotAvailable(Exception):
    """A ``[[review]]`` whose connector cannot run (Gerrit: not done, see labgate.review.gerrit)."""


def connector_for(spec: ReviewSpec) -> Connector:
    if spec.driver == "github":
        from labgate.review.github.connector import GitHubConnector  # httpx: loaded on use

        return GitHubConnector(spec)
    raise NotAvailable(
        f"[[review]] {spec.name}: the Gerrit connector is not done: its event stream and REST "
        "calls have never run against a Gerrit server (none can be had here), so it does not "
        "vote; only its event parsing and request building exist (labgate.review.gerrit)"
    )


def connectors_for(lab: Lab) -> tuple[dict[str, Connector], list[str]]:
    """The usable connectors by ``[[review]]`` name, and why each other entry is left out."""
    usable: dict[str, Connector] = {}
    left_out: list[str] = []
    for spec in lab.reviews:
        try:
            usable[spec.name] = connector_for(spec)
        except NotAvailable as why:
            left_out.append(str(why))
    return usable, left_out
