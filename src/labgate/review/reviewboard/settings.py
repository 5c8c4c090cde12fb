"""``[[review]]`` keys of ``driver = "reviewboard"`` and the settings they give the connector."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from labgate.model import ReviewSpec
from labgate.rawconfig import REVIEW_MODELS, RawReview, Text, settings_of


@dataclass(frozen=True)
class ReviewBoardSettings:
    """How labgate talks to a Review Board server: the API token from the environment variable
    ``token_env``, the status updates' service id ``context``, ``poll_interval``: seconds
    between two polls of its API for new diffs and rechecks, and ``secret_env``: the variable
    holding its WebHook's secret (None: no webhook is taken)."""

    token_env: str
    context: str = "labgate"
    poll_interval: float = 10.0
    secret_env: str | None = None

    def secret_envs(self) -> tuple[str | None, ...]:
        return (self.token_env, self.secret_env)


def reviewboard_settings(spec: ReviewSpec) -> ReviewBoardSettings:
    """The settings of a ``[[review]]`` of this driver."""
    return settings_of(spec, ReviewBoardSettings)


class RawReviewBoardReview(RawReview):
    driver: Literal["reviewboard"] = "reviewboard"
    token_env: Text
    context: Text = "labgate"
    poll_interval: float = Field(default=10.0, gt=0, le=3600)
    secret_env: Text | None = None

    def settings(self, lab_dir: Path) -> ReviewBoardSettings:
        return ReviewBoardSettings(
            self.token_env, self.context, self.poll_interval, self.secret_env
        )


REVIEW_MODELS["reviewboard"] = RawReviewBoardReview
