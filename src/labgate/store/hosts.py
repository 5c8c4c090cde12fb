"""Each host's state in the store: quarantine, reservations, broken streak and history.

A quarantined host (health check failed, N broken jobs in a row, host key rejected, or by hand)
and a host reserved for a developer (until the reservation ends or is released) are not given
jobs. Every job a host ran, and every change of its state, is a row of its history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from labgate.model import Outcome
from labgate.store import schema as t
from labgate.store.values import iso, now


class HostStateError(Exception):
    """A host command that cannot be done (unknown host, reserved by someone else)."""


@dataclass(frozen=True)
class HostStatus:
    name: str
    quarantined: str | None
    quarantined_at: str | None
    broken_streak: int
    reserved_by: str | None
    reserved_reason: str | None
    reserved_until: str | None

    @property
    def state(self) -> str:
        if self.quarantined is not None:
            return "quarantined"
        if self.reserved_by is not None:
            return "reserved"
        return "in service"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "quarantined": self.quarantined,
            "quarantined_at": self.quarantined_at,
            "broken_streak": self.broken_streak,
            "reserved_by": self.reserved_by,
            "reserved_reason": self.reserved_reason,
            "reserved_until": self.reserved_until,
        }


@dataclass(frozen=True)
class HostEvent:
    id: int
    host: str
    created: str
    kind: str
    job_id: int | None
    attempt: int | None
    outcome: str | None
    reason: str | None
    data: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "created": self.created,
            "kind": self.kind,
            "job": self.job_id,
            "attempt": self.attempt,
            "outcome": self.outcome,
            "reason": self.reason,
            "data": self.data,
        }


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite: stored as UTC, read back naive
        return value.replace(tzinfo=UTC)
    return value


def _reserved(row: Any, stamp: datetime) -> bool:
    """Whether a ``host_status`` row holds a reservation now (none, or one ended, does not)."""
    until = _aware(row.reserved_until)
    return row.reserved_by is not None and (until is None or until > stamp)


def unavailable_on(conn: Connection) -> dict[str, str]:
    """The hosts quarantined or reserved now, each with why."""
    stamp = now()
    rows = conn.execute(
        select(t.host_status).where(
            t.host_status.c.quarantined.is_not(None) | t.host_status.c.reserved_by.is_not(None)
        )
    ).all()
    out: dict[str, str] = {}
    for r in rows:
        why = unavailable_because(r, stamp)
        if why is not None:
            out[r.name] = why
    return out


def unavailable_because(row: Any, stamp: datetime) -> str | None:
    """Why a host whose ``host_status`` row (its ``quarantined``, ``reserved_by``,
    ``reserved_reason`` and ``reserved_until``) this is cannot take jobs now, or None."""
    if row.quarantined is not None:
        return f"quarantined: {row.quarantined}"
    if _reserved(row, stamp):
        return f"reserved by {row.reserved_by}: {row.reserved_reason}"
    return None


def lost_hosts_on(conn: Connection, job_ids: Sequence[int]) -> dict[int, set[str]]:
    """For each job, the hosts an attempt of it was lost on (it is not given them again)."""
    lost: dict[int, set[str]] = {}
    for r in conn.execute(
        select(t.host_event.c.job_id, t.host_event.c.host).where(
            t.host_event.c.job_id.in_(list(job_ids)),
            t.host_event.c.kind == "job",
            t.host_event.c.outcome == str(Outcome.BROKEN),
        )
    ):
        lost.setdefault(r.job_id, set()).add(r.host)
    return lost


def add_event(
    conn: Connection,
    host: str,
    kind: str,
    *,
    reason: str | None = None,
    job_id: int | None = None,
    attempt: int | None = None,
    outcome: Outcome | None = None,
    data: Any = None,
) -> None:
    """Add a row to the host's history (in the caller's transaction)."""
    conn.execute(ADD_EVENT, event_values(host, kind, job_id, attempt, outcome, reason, data))


def event_values(
    host: str,
    kind: str,
    job_id: int | None,
    attempt: int | None,
    outcome: Outcome | None,
    reason: str | None,
    data: Any,
) -> dict[str, Any]:
    """The parameters of :data:`ADD_EVENT` for one row of the host's history."""
    return {
        "e_host": host,
        "e_created": now(),
        "e_kind": kind,
        "e_job": job_id,
        "e_attempt": attempt,
        "e_outcome": str(outcome) if outcome is not None else None,
        "e_reason": reason,
        "e_data": json.dumps(data) if data is not None else None,
    }


# built once (a job's end adds an event and ends its host's broken streak, every job)
ADD_EVENT = insert(t.host_event).values(
    host=bindparam("e_host"),
    created=bindparam("e_created", type_=t.host_event.c.created.type),
    kind=bindparam("e_kind"),
    job_id=bindparam("e_job"),
    attempt=bindparam("e_attempt"),
    outcome=bindparam("e_outcome"),
    reason=bindparam("e_reason"),
    data=bindparam("e_data"),
)
STREAK_ENDS = (
    update(t.host_status)
    .where(t.host_status.c.name == bindparam("s_host"), t.host_status.c.broken_streak != 0)
    .values(broken_streak=0, updated=bindparam("s_at", type_=t.host_status.c.updated.type))
)


class HostRegistry:
    """Reads and changes host state; every change is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._known: set[str] = set()

    def known(self, name: str) -> bool:
        """Whether this registry has seen the host's row (rows are never deleted)."""
        return name in self._known

    def _ensure(self, conn: Connection, name: str) -> None:
        if name in self._known:  # host rows are never deleted: seen once, known for good
            return
        exists = conn.execute(
            select(t.host_status.c.name).where(t.host_status.c.name == name)
        ).first()
        if exists is not None:
            self._known.add(name)
        else:
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(t.host_status).values(name=name, broken_streak=0, updated=now())
                    )
            except IntegrityError:  # another controller inserted it first: fine
                pass

    # --- reading ------------------------------------------------------------------------------

    def unavailable(self) -> dict[str, str]:
        """The hosts not to be given jobs now, each with why (quarantine or reservation)."""
        with self.engine.connect() as conn:
            return unavailable_on(conn)

    def statuses(self, names: Sequence[str]) -> dict[str, HostStatus]:
        """The state of each named host (in service when it has no row yet)."""
        with self.engine.connect() as conn:
            rows = {r.name: r for r in conn.execute(select(t.host_status))}
        stamp = now()
        out = {}
        for name in names:
            r = rows.get(name)
            if r is None:
                out[name] = HostStatus(name, None, None, 0, None, None, None)
                continue
            reserved = _reserved(r, stamp)
            out[name] = HostStatus(
                name=name,
                quarantined=r.quarantined,
                quarantined_at=iso(r.quarantined_at),
                broken_streak=r.broken_streak,
                reserved_by=r.reserved_by if reserved else None,
                reserved_reason=r.reserved_reason if reserved else None,
                reserved_until=iso(r.reserved_until) if reserved else None,
            )
        return out

    def history(self, host: str, *, limit: int = 50) -> list[HostEvent]:
        """The host's events, newest first."""
        query = (
            select(t.host_event)
            .where(t.host_event.c.host == host)
            .order_by(t.host_event.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                HostEvent(
                    r.id,
                    r.host,
                    iso(r.created) or "",
                    r.kind,
                    r.job_id,
                    r.attempt,
                    r.outcome,
                    r.reason,
                    json.loads(r.data) if r.data else None,
                )
                for r in conn.execute(query)
            ]

    def attempt_steps(self, job_id: int) -> list[dict[str, Any]]:
        """The job's steps as they stand (kept in the history before a lost attempt is run
        again)."""
        query = select(t.step).where(t.step.c.job_id == job_id).order_by(t.step.c.seq)
        with self.engine.connect() as conn:
            return [
                {
                    "name": r.name,
                    "outcome": r.outcome,
                    "exit_status": r.exit_status,
                    "duration_s": r.duration_s,
                    "log": r.log,
                    "reason": r.reason,
                }
                for r in conn.execute(query)
            ]

    # --- changing -----------------------------------------------------------------------------

    def quarantine(self, host: str, reason: str, *, kind: str = "quarantine") -> None:
        with self.engine.begin() as conn:
            self._quarantine(conn, host, reason, kind)

    def _quarantine(self, conn: Connection, host: str, reason: str, kind: str) -> None:
        self._ensure(conn, host)
        conn.execute(
            update(t.host_status)
            .where(t.host_status.c.name == host)
            .values(quarantined=reason, quarantined_at=now(), updated=now())
        )
        add_event(conn, host, kind, reason=reason)

    def release(self, host: str, who: str) -> list[str]:
        """End the host's quarantine and any reservation; returns what was ended."""
        with self.engine.begin() as conn:
            self._ensure(conn, host)
            row = conn.execute(select(t.host_status).where(t.host_status.c.name == host)).one()
            ended = []
            if row.quarantined is not None:
                ended.append(f"quarantine ({row.quarantined})")
            if row.reserved_by is not None:
                ended.append(f"reservation by {row.reserved_by}")
            conn.execute(
                update(t.host_status)
                .where(t.host_status.c.name == host)
                .values(
                    quarantined=None,
                    quarantined_at=None,
                    broken_streak=0,
                    reserved_by=None,
                    reserved_reason=None,
                    reserved_until=None,
                    updated=now(),
                )
            )
            add_event(conn, host, "release", reason=f"by {who}: " + (", ".join(ended) or "-"))
        return ended

    def reserve(self, host: str, who: str, reason: str, duration: timedelta | None) -> None:
        """Reserve the host for ``who``; an unexpired reservation by someone else is refused."""
        stamp = now()
        with self.engine.begin() as conn:
            self._ensure(conn, host)
            row = conn.execute(select(t.host_status).where(t.host_status.c.name == host)).one()
            if row.reserved_by != who and _reserved(row, stamp):
                raise HostStateError(
                    f"host {host} is reserved by {row.reserved_by} ({row.reserved_reason})"
                    f" until {iso(row.reserved_until) or 'released'}"
                )
            conn.execute(
                update(t.host_status)
                .where(t.host_status.c.name == host)
                .values(
                    reserved_by=who,
                    reserved_reason=reason,
                    reserved_until=stamp + duration if duration is not None else None,
                    updated=stamp,
                )
            )
            add_event(conn, host, "reserve", reason=f"{who}: {reason}")

    def record_job(
        self,
        host: str,
        job_id: int,
        attempt: int,
        outcome: Outcome,
        reason: str | None,
        *,
        quarantine_after: int,
        data: Mapping[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> str | None:
        """A job ended on the host: its history row; a broken job adds to the host's broken
        streak (anything else ends it). Returns the quarantine reason if this quarantined it.
        In ``conn``'s transaction when given, else in its own."""
        if conn is None:
            with self.engine.begin() as own:
                return self.record_job(
                    host, job_id, attempt, outcome, reason,
                    quarantine_after=quarantine_after, data=data, conn=own,
                )  # fmt: skip
        self._ensure(conn, host)
        add_event(
            conn,
            host,
            "job",
            job_id=job_id,
            attempt=attempt,
            outcome=outcome,
            reason=reason,
            data=dict(data) if data else None,
        )
        if outcome is not Outcome.BROKEN:
            if outcome.finished and outcome is not Outcome.CANCELLED:
                conn.execute(STREAK_ENDS, {"s_host": host, "s_at": now()})
            return None
        conn.execute(
            update(t.host_status)
            .where(t.host_status.c.name == host)
            .values(broken_streak=t.host_status.c.broken_streak + 1, updated=now())
        )
        row = conn.execute(select(t.host_status).where(t.host_status.c.name == host)).one()
        if row.quarantined is None and row.broken_streak >= quarantine_after:
            why = f"{row.broken_streak} broken jobs in a row (last: {reason or 'broken'})"
            self._quarantine(conn, host, why, "quarantine")
            return why
        return None
