"""``[access]`` in lab.toml: which trees community members may have fetched, and their quotas.

[access]
group = "community"                # approved users join it unless the admin says otherwise
allow_urls = ["https://github.com/*/xen.git"]
max_fetch_mb = 200                 # a tree's new objects, at most
fetch_timeout = 300                # seconds a fetch may take
token_days = 90                    # an approval's token expires after this
apply_limit = { per_address = 10, total = 100, window = 3600 }  # requests to /access
submit_limit = { per_user = 30, window = 3600 }   # a user's flights and reservations asked for
quota = { flights = 2, host_hours = 20 }               # each user
users = { alice = { flights = 4 } }                    # a user's own (wins over quota)
groups = { community = { flights = 20, host_hours = 200 } }  # all members together
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import Field

from labgate.rawconfig import Name, Text, _Raw


@dataclass(frozen=True)
class Quota:
    """How much on-demand work at once and in a week (None: no limit)."""

    flights: int | None = None
    """Flights queued or running at once."""
    host_hours: float | None = None
    """Hours of host time in the last 7 days: on-demand jobs' run time, and host-time
    reservations (the window reserved, or as long as held when it ended early)."""


@dataclass(frozen=True)
class ApplyLimit:
    """How many requests the public access form answers in any ``window`` seconds: from one
    client address, and from all together (see ``labgate.access.ratelimit``)."""

    per_address: int = 10
    total: int = 100
    window: float = 3600.0


@dataclass(frozen=True)
class SubmitLimit:
    """How many on-demand flights and host reservations one user may ask for in any
    ``window`` seconds, accepted or not (see ``labgate.access.ratelimit``)."""

    per_user: int = 30
    window: float = 3600.0


@dataclass(frozen=True)
class AccessSettings:
    group: str = "community"
    allow_urls: tuple[str, ...] = ()
    max_fetch_mb: float = 200.0
    fetch_timeout: float = 300.0
    token_days: int = 90
    apply_limit: ApplyLimit = field(default_factory=ApplyLimit)
    submit_limit: SubmitLimit = field(default_factory=SubmitLimit)
    quota: Quota = field(default_factory=lambda: Quota(flights=2, host_hours=20.0))
    users: Mapping[str, Quota] = field(default_factory=dict)
    groups: Mapping[str, Quota] = field(default_factory=dict)

    def user_quota(self, user: str) -> Quota:
        """The user's own quota: theirs in ``users``, else the lab's ``quota``."""
        return self.users.get(user, self.quota)

    def approved(self, groups: frozenset[str]) -> bool:
        """Whether a user in these groups may submit on-demand work: a member of ``group`` or
        of a group with a quota of its own."""
        return self.group in groups or bool(groups & set(self.groups))


class RawQuota(_Raw):
    flights: int | None = Field(default=None, ge=0, le=10_000)
    host_hours: float | None = Field(default=None, ge=0)

    def to_quota(self) -> Quota:
        return Quota(self.flights, self.host_hours)


class RawApplyLimit(_Raw):
    per_address: int = Field(default=ApplyLimit.per_address, ge=1, le=1_000_000)
    total: int = Field(default=ApplyLimit.total, ge=1, le=1_000_000)
    window: float = Field(default=ApplyLimit.window, gt=0, le=7 * 86_400)

    def to_limit(self) -> ApplyLimit:
        return ApplyLimit(self.per_address, self.total, self.window)


class RawSubmitLimit(_Raw):
    per_user: int = Field(default=SubmitLimit.per_user, ge=1, le=1_000_000)
    window: float = Field(default=SubmitLimit.window, gt=0, le=7 * 86_400)

    def to_limit(self) -> SubmitLimit:
        return SubmitLimit(self.per_user, self.window)


_DEFAULT = AccessSettings()


class RawAccess(_Raw):
    group: Name = _DEFAULT.group
    allow_urls: list[Text] = Field(default_factory=list)
    max_fetch_mb: float = Field(default=_DEFAULT.max_fetch_mb, gt=0)
    fetch_timeout: float = Field(default=_DEFAULT.fetch_timeout, gt=0, le=86_400)
    token_days: int = Field(default=_DEFAULT.token_days, ge=1, le=3650)
    apply_limit: RawApplyLimit = RawApplyLimit()
    submit_limit: RawSubmitLimit = RawSubmitLimit()
    quota: RawQuota = RawQuota(flights=2, host_hours=20.0)
    users: dict[Name, RawQuota] = Field(default_factory=dict)
    groups: dict[Name, RawQuota] = Field(default_factory=dict)

    def to_settings(self) -> AccessSettings:
        return AccessSettings(
            group=self.group,
            allow_urls=tuple(self.allow_urls),
            max_fetch_mb=self.max_fetch_mb,
            fetch_timeout=self.fetch_timeout,
            token_days=self.token_days,
            apply_limit=self.apply_limit.to_limit(),
            submit_limit=self.submit_limit.to_limit(),
            quota=self.quota.to_quota(),
            users={k: v.to_quota() for k, v in self.users.items()},
            groups={k: v.to_quota() for k, v in self.groups.items()},
        )
