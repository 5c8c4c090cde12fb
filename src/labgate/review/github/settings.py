"""``[[review]]`` keys of ``driver = "github"`` and the settings they give the connector."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from labgate.model import ReviewSpec
from labgate.rawconfig import REVIEW_MODELS, RawReview, Text, _Invalid, settings_of

GITHUB_API = "https://api.github.com"


@dataclass(frozen=True)
class GitHubSettings:
    """How labgate talks to GitHub: the API token from the environment variable ``token_env``,
    the webhook's secret from ``secret_env`` (each delivery's signature is checked with it),
    the status or check run name ``context``, and ``report``: ``status`` (commit statuses),
    ``check_run`` or both."""

    token_env: str
    secret_env: str
    context: str = "labgate"
    report: tuple[str, ...] = ("status",)

    def secret_envs(self) -> tuple[str | None, ...]:
        return (self.token_env, self.secret_env)


def github_settings(spec: ReviewSpec) -> GitHubSettings:
    """The settings of a ``[[review]]`` of this driver."""
    return settings_of(spec, GitHubSettings)


class RawGitHubReview(RawReview):
    driver: Literal["github"] = "github"
    server: Text = GITHUB_API
    token_env: Text
    secret_env: Text
    context: Text = "labgate"
    report: list[Literal["status", "check_run"]] = Field(default=["status"], min_length=1)

    @field_validator("project")
    @classmethod
    def _owner_repo(cls, value: str) -> str:
        if not re.fullmatch(r"[^/\s]+/[^/\s]+", value):
            raise _Invalid(
                f"{value!r} is not a GitHub owner/repo", 'write e.g. project = "xen-project/xen"'
            )
        return value

    def settings(self, lab_dir: Path) -> GitHubSettings:
        return GitHubSettings(
            token_env=self.token_env,
            secret_env=self.secret_env,
            context=self.context,
            report=tuple(dict.fromkeys(self.report)),
        )


REVIEW_MODELS["github"] = RawGitHubReview
