"""``[[review]]`` keys of ``driver = "gerrit"`` and the settings they give the connector."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from labgate.model import ReviewSpec
from labgate.rawconfig import REVIEW_MODELS, RawReview, Text, settings_of, under


@dataclass(frozen=True)
class GerritSettings:
    """How labgate reaches a Gerrit server: ``user`` (its account there), the HTTP password
    from the environment variable ``password_env`` (REST), ``ssh`` (``[user@]host[:port]`` of
    ``gerrit stream-events``) with ``identity_file`` (None: the SSH agent's and ``~/.ssh``'s
    keys) and ``known_hosts_file`` naming the server's key (default ``~/.ssh/known_hosts``),
    both resolved against the lab dir."""

    user: str
    password_env: str
    ssh: str
    identity_file: str | None = None
    known_hosts_file: str | None = None

    def secret_envs(self) -> tuple[str | None, ...]:
        return (self.password_env,)


def gerrit_settings(spec: ReviewSpec) -> GerritSettings:
    """The settings of a ``[[review]]`` of this driver."""
    return settings_of(spec, GerritSettings)


class RawGerritReview(RawReview):
    driver: Literal["gerrit"] = "gerrit"
    user: Text
    password_env: Text
    ssh: Text
    identity_file: Text | None = None
    known_hosts_file: Text | None = None

    def settings(self, lab_dir: Path) -> GerritSettings:
        return GerritSettings(
            user=self.user,
            password_env=self.password_env,
            ssh=self.ssh,
            identity_file=str(under(lab_dir, self.identity_file)) if self.identity_file else None,
            known_hosts_file=(
                str(under(lab_dir, self.known_hosts_file)) if self.known_hosts_file else None
            ),
        )


REVIEW_MODELS["gerrit"] = RawGerritReview
