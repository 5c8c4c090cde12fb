"""Access requests and what on-demand work uses: the store's side of ``labgate.access``.

An access request is written once by the person applying and decided once by a lab admin: the
row keeps who decided, when and why (the audit of approvals and refusals). An approval makes the
user, puts them in their group and makes their API token, in the transaction that decides.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text, update

from labgate.model import Outcome
from labgate.store import schema as t
from labgate.store.users import Users, Viewer, check_name, visible
from labgate.store.values import ACTIVE_FLIGHT_STATES, StoreError, aware, iso, now

PENDING, APPROVED, REFUSED = "pending", "approved", "refused"
WEEK = timedelta(days=7)
LIMITS = {"name": 200, "email": 300, "affiliation": 300, "why": 5000}


class AccessError(StoreError):
    """An access request that cannot be made or decided; the message says which rule."""


@dataclass(frozen=True)
class AccessRequest:
    id: int
    name: str
    email: str
    affiliation: str
    why: str
    created: str
    state: str
    decided_by: str | None
    decided: str | None
    decision_why: str | None
    user: str | None
    group: str | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _request(row: Any) -> AccessRequest:
    return AccessRequest(
        row.id, row.name, row.email, row.affiliation, row.why, iso(row.created) or "",
        row.state, row.decided_by, iso(row.decided), row.decision_why, row.user, row.group,
    )  # fmt: skip


@dataclass(frozen=True)
class Usage:
    """A user's on-demand work: flights queued or running, and host time in the last week."""

    flights: int = 0
    host_seconds: float = 0.0


@dataclass(frozen=True)
class Waiting:
    """An on-demand flight of the pool that still has queued jobs."""

    flight: int
    owner: str
    branch: str
    created: str
    queued: int
    live: int
    requires: tuple[frozenset[str], ...]
    """The host flags each of its queued jobs requires."""


class AccessRequests:
    """Access requests of one store, and the usage the quotas are checked against."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.users = Users(engine)

    def apply(self, *, name: str, email: str, affiliation: str, why: str) -> int:
        """Record a person's request; its id."""
        fields = {"name": name, "email": email, "affiliation": affiliation, "why": why}
        for key, value in fields.items():
            if not value.strip():
                raise AccessError(f"{key}: is required")
            if len(value) > LIMITS[key]:
                raise AccessError(f"{key}: is {len(value)} characters long; at most {LIMITS[key]}")
        if "@" not in email.strip("@"):
            raise AccessError(f"email: {email!r} is not a mail address (no @)")
        values = {k: v.strip() for k, v in fields.items()}
        with self.engine.begin() as conn:
            row = conn.execute(
                t.access_request.insert().values(**values, created=now(), state=PENDING)
            )
            return int(row.inserted_primary_key[0])  # type: ignore[index]

    def requests(self, state: str | None = None) -> list[AccessRequest]:
        """The requests, newest first (only those in ``state`` when given)."""
        query = select(t.access_request).order_by(t.access_request.c.id.desc())
        if state is not None:
            query = query.where(t.access_request.c.state == state)
        with self.engine.connect() as conn:
            return [_request(r) for r in conn.execute(query)]

    def get(self, request_id: int) -> AccessRequest:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.access_request).where(t.access_request.c.id == request_id)
            ).first()
        if row is None:
            raise AccessError(f"no access request {request_id}")
        return _request(row)

    def _decide(self, conn: Any, request_id: int, values: dict[str, Any]) -> Any:
        """Write the decision on a pending request (once: a second decision is refused)."""
        row = conn.execute(
            select(t.access_request).where(t.access_request.c.id == request_id)
        ).first()
        if row is None:
            raise AccessError(f"no access request {request_id}")
        done = conn.execute(
            update(t.access_request)
            .where(t.access_request.c.id == request_id, t.access_request.c.state == PENDING)
            .values(**values, decided=now())
        ).rowcount
        if done != 1:
            raise AccessError(
                f"access request {request_id} was {row.state} already "
                f"(by {row.decided_by} at {iso(row.decided)})"
            )
        return row

    def approve(
        self,
        request_id: int,
        *,
        by: str,
        group: str,
        user: str | None = None,
        why: str = "",
        token_days: int = 90,
    ) -> tuple[str, str]:
        """Approve the request: the user (named ``user``, else their e-mail address) in
        ``group`` and an API token expiring in ``token_days``; (user, token). The token is
        stored hashed: this is the one time it is seen."""
        check_name("group", group)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(t.access_request).where(t.access_request.c.id == request_id)
            ).first()
            if row is None:
                raise AccessError(f"no access request {request_id}")
            name = user or row.email
            self._decide(
                conn,
                request_id,
                {
                    "state": APPROVED,
                    "decided_by": by,
                    "decision_why": why or None,
                    "user": name,
                    "group": group,
                },
            )
            self.users.insert_user(conn, name, email=row.email, groups=[group])
            token = self.users.insert_token(conn, name, now() + timedelta(days=token_days))
        return name, token

    def refuse(self, request_id: int, *, by: str, why: str) -> None:
        """Refuse the request, saying why (the person is told nothing else)."""
        if not why.strip():
            raise AccessError("a refusal says why (--why)")
        with self.engine.begin() as conn:
            self._decide(
                conn, request_id, {"state": REFUSED, "decided_by": by, "decision_why": why}
            )

    # --- usage ---------------------------------------------------------------------------------

    def members(self, group: str) -> list[str]:
        with self.engine.connect() as conn:
            return members_on(conn, group)

    def usage(self, users: Sequence[str], at: datetime | None = None) -> dict[str, Usage]:
        """Each user's flights queued or running and host time since a week before ``at``."""
        with self.engine.connect() as conn:
            return usage_on(conn, users, at)

    def waiting(self, viewer: Viewer | None = None) -> tuple[list[Waiting], list[frozenset[str]]]:
        """The pool's on-demand flights with queued jobs, oldest first (those ``viewer`` may
        see, all for None), and the host flags each queued job of the lab's own flights needs
        whose dependencies passed (the jobs that go first where a host fits them)."""
        active = (
            select(t.flight.c.id)
            .join(t.pool_flight, t.pool_flight.c.flight_id == t.flight.c.id)
            .where(t.flight.c.state.in_(ACTIVE_FLIGHT_STATES))
        )
        jobs = (
            select(
                t.flight.c.id,
                t.flight.c.owner,
                t.flight.c.branch,
                t.flight.c.created,
                t.job.c.name,
                t.job.c.outcome,
                t.job.c.requires,
                t.job.c.depends,
            )
            .join(t.job, t.job.c.flight_id == t.flight.c.id)
            .where(t.flight.c.id.in_(active), t.job.c.outcome.in_((*WAITING_OR_LIVE, *SUCCEEDED)))
            .order_by(t.flight.c.id, t.job.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(jobs).all()
            seen = set(
                conn.execute(
                    select(t.flight.c.id).where(
                        t.flight.c.id.in_({r.id for r in rows if r.owner}), visible(viewer)
                    )
                ).scalars()
                if viewer is not None
                else (r.id for r in rows)
            )
        passed = {(r.id, r.name) for r in rows if r.outcome in SUCCEEDED}
        lab_ready: list[frozenset[str]] = []
        flights: dict[int, dict[str, Any]] = {}
        for r in rows:
            if r.outcome in SUCCEEDED:
                continue
            queued = r.outcome == str(Outcome.QUEUED)
            if r.owner is None:
                if queued and all((r.id, d) in passed for d in json.loads(r.depends)):
                    lab_ready.append(frozenset(json.loads(r.requires)))
                continue
            f = flights.setdefault(
                r.id,
                {"owner": r.owner, "branch": r.branch, "created": iso(r.created) or "",
                 "queued": 0, "live": 0, "requires": []},
            )  # fmt: skip
            f["queued" if queued else "live"] += 1
            if queued:
                f["requires"].append(frozenset(json.loads(r.requires)))
        out = [
            Waiting(fid, f["owner"], f["branch"], f["created"], f["queued"], f["live"],
                    tuple(f["requires"]))
            for fid, f in flights.items()
            if f["queued"] and fid in seen
        ]  # fmt: skip
        return out, lab_ready

    def live_jobs(self) -> dict[str, int]:
        """Jobs of on-demand flights on a host now, per owner."""
        with self.engine.connect() as conn:
            return live_jobs_on(conn)

    def free_hosts(self) -> set[str]:
        """The hosts with a free slot now."""
        with self.engine.connect() as conn:
            query = select(t.slot_lease.c.host).where(t.slot_lease.c.job_id.is_(None)).distinct()
            return set(conn.execute(query).scalars())

    def owned(self, user: str, limit: int = 50) -> list[Any]:
        """The user's on-demand flights, newest first: id, branch, state, outcome, owner_only."""
        query = (
            select(
                t.flight.c.id,
                t.flight.c.branch,
                t.flight.c.state,
                t.flight.c.outcome,
                t.flight.c.owner_only,
            )
            .where(t.flight.c.owner == user)
            .order_by(t.flight.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def make_public(self, flight_id: int, user: str) -> bool:
        """The owner shows their on-demand flight to everyone; False when it is not theirs."""
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    update(t.flight)
                    .where(t.flight.c.id == flight_id, t.flight.c.owner == user)
                    .values(owner_only=False)
                ).rowcount
            )


LIVE = (str(Outcome.PREPARING), str(Outcome.RUNNING))
WAITING_OR_LIVE = (str(Outcome.QUEUED), *LIVE)
SUCCEEDED = (str(Outcome.PASS), str(Outcome.SKIP))  # a job that depends on it may start


def live_jobs_on(conn: Connection, owners: Collection[str] | None = None) -> dict[str, int]:
    """Jobs of on-demand flights on a host now, per owner (of ``owners``, or all), in the
    caller's transaction (the allocator's fair share)."""
    owner = t.flight.c.owner
    rows = conn.execute(
        select(owner, func.count())
        .join(t.job, t.job.c.flight_id == t.flight.c.id)
        .where(owner.is_not(None) if owners is None else owner.in_(owners))
        .where(t.job.c.outcome.in_(LIVE))
        .group_by(owner)
    ).all()
    return {name: int(n) for name, n in rows}


def members_on(conn: Connection, group: str) -> list[str]:
    """The group's members, in the caller's transaction."""
    query = select(t.user_group.c.user).where(t.user_group.c.group == group)
    return sorted(conn.execute(query).scalars())


def usage_on(
    conn: Connection, users: Sequence[str], at: datetime | None = None
) -> dict[str, Usage]:
    """Each user's flights queued or running and host time since a week before ``at``, in the
    caller's transaction (an admission's, see :func:`admission`)."""
    stamp = at or now()
    since = stamp - WEEK
    active: dict[str, int] = dict(
        conn.execute(
            select(t.flight.c.owner, func.count())
            .where(t.flight.c.owner.in_(users), t.flight.c.state.in_(ACTIVE_FLIGHT_STATES))
            .group_by(t.flight.c.owner)
        ).all()
    )
    runs = conn.execute(
        select(t.flight.c.owner, t.job.c.started, t.job.c.finished)
        .join(t.job, t.job.c.flight_id == t.flight.c.id)
        .where(
            t.flight.c.owner.in_(users),
            t.job.c.started.is_not(None),
            (t.job.c.finished.is_(None)) | (t.job.c.finished >= since),
        )
    ).all()
    seconds: dict[str, float] = defaultdict(float)
    for owner, started, finished in runs:
        begin = max(aware(started), since)
        end = aware(finished) if finished is not None else stamp
        seconds[owner] += max(0.0, (end - begin).total_seconds())
    for user, start, until, ended in conn.execute(_host_time(users, since)).all():
        # the whole window from its start, the future part too (it is the user's already),
        # unless it ended early: the host was released or reserved again before its end
        end = min(aware(until), aware(ended)) if ended is not None else aware(until)
        seconds[user] += max(0.0, (end - max(aware(start), since)).total_seconds())
    return {u: Usage(int(active.get(u, 0)), seconds[u]) for u in users}


def _host_time(users: Sequence[str], since: datetime) -> Any:
    """The users' host-time reservations that reach into the week from ``since``: user,
    start, until, and when the host's reservation next changed (NULL: not since)."""
    event = t.host_event
    ended = (
        select(func.min(event.c.created))
        .where(
            event.c.host == t.host_time.c.host,
            event.c.kind.in_(RESERVATION_ENDS),
            event.c.created > t.host_time.c.start,
        )
        .scalar_subquery()
    )
    return select(t.host_time.c.user, t.host_time.c.start, t.host_time.c.until, ended).where(
        t.host_time.c.user.in_(users), t.host_time.c.until > since
    )


RESERVATION_ENDS = ("release", "reserve")
"""The host events that end a host's reservation before its window is over (host_event.kind,
written by ``labgate.store.hosts``)."""


def record_host_time(conn: Connection, user: str, host: str, length: timedelta) -> None:
    """Count a reservation the user holds from now for ``length`` in their host time, in the
    caller's transaction (its admission, see :func:`admission`): made after the host's
    reservation, whose own event it must not take for its end."""
    stamp = now()
    conn.execute(
        t.host_time.insert().values(user=user, host=host, start=stamp, until=stamp + length)
    )


_ADMISSION_LOCK = 0x61636365  # "acce": the class of PostgreSQL's advisory locks of admissions


def admission(conn: Connection, subjects: Collection[str]) -> None:
    """Make the caller's transaction the only admission of on-demand work for each of
    ``subjects`` (a user, a group: whose quota it decides) until it ends, so that the usage it
    reads next stays true until the flight or reservation it lets in is stored with it. Must be
    the transaction's first statement. PostgreSQL: an advisory lock per subject, taken in one
    order (no deadlock); SQLite: ``BEGIN IMMEDIATE``, the one writer."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    for key in sorted({zlib.crc32(s.encode()) - 2**31 for s in subjects}):
        conn.execute(
            text("SELECT pg_advisory_xact_lock(CAST(:kind AS integer), CAST(:key AS integer))"),
            {"kind": _ADMISSION_LOCK, "key": key},
        )
