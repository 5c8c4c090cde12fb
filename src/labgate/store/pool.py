"""The pool: the lab's hosts as recorded, and the flights handed to the controllers sharing them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from labgate.model import (
    HostSpec,
    Outcome,
)
from labgate.store import schema as t
from labgate.store.hosts import lost_hosts_on
from labgate.store.values import (
    ACTIVE_FLIGHT_STATES,
    JobState,
    Tables,
    aware,
    now,
)


class PoolTables(Tables):
    """Hosts as lab.toml declares them; the pool's flights and where their jobs stand."""

    # --- hosts ------------------------------------------------------------------------------

    def sync_hosts(self, hosts: Sequence[HostSpec]) -> None:
        """Record the lab's hosts as lab.toml declares them now. Controllers starting together
        may race here: a host another inserted first is updated instead."""
        with self.engine.begin() as conn:
            for h in hosts:
                values = {
                    "flags": json.dumps(sorted(h.flags)),
                    "slots": h.slots,
                    "executor": h.executor,
                }
                changed = conn.execute(
                    update(t.host).where(t.host.c.name == h.name).values(**values)
                ).rowcount
                if changed:
                    continue
                try:
                    with conn.begin_nested():
                        conn.execute(t.host.insert().values(name=h.name, **values))
                except IntegrityError:
                    conn.execute(update(t.host).where(t.host.c.name == h.name).values(**values))

    def last_hosts(self, branch: str, job_names: Sequence[str]) -> dict[str, str]:
        """For each job name, the host that last ran it on ``branch`` (for host affinity)."""
        if not job_names:
            return {}
        newest = (
            select(t.job.c.name, func.max(t.job.c.id).label("id"))
            .join(t.flight, t.flight.c.id == t.job.c.flight_id)
            .where(
                t.flight.c.branch == branch,
                t.job.c.name.in_(list(job_names)),
                t.job.c.host.is_not(None),
            )
            .group_by(t.job.c.name)
            .subquery()
        )
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.job.c.name, t.job.c.host).join(newest, t.job.c.id == newest.c.id)
            )
            return {r.name: r.host for r in rows}

    # --- the pool: flights handed to the controllers sharing the hosts ------------------------

    def submit_flight(self, flight_id: int, avoid: Mapping[str, str] | None = None) -> None:
        """Hand a stored flight to the pool: any controller may run its jobs. ``avoid`` maps a
        job to a host to keep it off when another can take it. Submitting again is harmless."""
        with self.engine.begin() as conn:
            known = conn.execute(
                select(t.pool_flight.c.flight_id).where(t.pool_flight.c.flight_id == flight_id)
            ).first()
            if known is None:
                conn.execute(
                    t.pool_flight.insert().values(
                        flight_id=flight_id, submitted=now(), avoid=json.dumps(dict(avoid or {}))
                    )
                )
            elif avoid:
                conn.execute(
                    update(t.pool_flight)
                    .where(t.pool_flight.c.flight_id == flight_id)
                    .values(avoid=json.dumps(dict(avoid)))
                )

    def active_pool_flights(self) -> list[int]:
        """The flights of the pool that are not finished, oldest first."""
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(t.flight.c.id)
                .join(t.pool_flight, t.pool_flight.c.flight_id == t.flight.c.id)
                .where(t.flight.c.state.in_(ACTIVE_FLIGHT_STATES))
                .order_by(t.flight.c.id)
            )
            return list(rows.scalars())

    def job_states(
        self,
        flight_ids: Sequence[int],
        *,
        needs: bool = True,
        but: Sequence[int] = (),
        moved_only: bool = False,
    ) -> dict[int, list[JobState]]:
        """Where each job of these flights stands (but the jobs ``but`` names), without steps:
        what moving a flight along needs (cheap enough to ask after every job). Without
        ``needs``, ``requires`` and ``depends`` are left empty (a caller that has them
        already). ``moved_only``: only the jobs that are not waiting for their first attempt
        (any job left out is queued, attempt 0), so that a caller asking after every job reads
        the few that run or ended, not the whole queue each time."""
        out: dict[int, list[JobState]] = {i: [] for i in flight_ids}
        if not flight_ids:
            return out
        columns = [t.job.c.id, t.job.c.flight_id, t.job.c.name, t.job.c.outcome, t.job.c.attempt]
        if needs:
            columns += [t.job.c.requires, t.job.c.depends]
        with self.reader.connect() as conn:
            where: list[ColumnElement[bool]] = [
                t.job.c.flight_id.in_(list(flight_ids)),
                t.job.c.id.not_in(list(but)),
            ]
            if moved_only:
                where.append(or_(t.job.c.outcome != str(Outcome.QUEUED), t.job.c.attempt > 0))
            rows = conn.execute(
                select(*columns).where(*where).order_by(t.job.c.flight_id, t.job.c.seq)
            )
            for r in rows:
                out[r.flight_id].append(
                    JobState(
                        r.id,
                        r.name,
                        Outcome(r.outcome),
                        frozenset(json.loads(r.requires)) if needs else frozenset(),
                        tuple(json.loads(r.depends)) if needs else (),
                        r.attempt,
                    )
                )
        return out

    def lost_hosts(self, job_ids: Sequence[int]) -> dict[int, set[str]]:
        """For each job, the hosts an attempt of it was lost on (it is not given them again)."""
        if not job_ids:
            return {}
        with self.engine.connect() as conn:
            return lost_hosts_on(conn, job_ids)

    def lease_holders(self, flight_id: int) -> dict[str, datetime]:
        """The controllers holding host slots for jobs of this flight, each with when its
        lease ends: a flight with a live holder is being run."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.slot_lease.c.owner, func.max(t.slot_lease.c.lease_until))
                .join(t.job, t.job.c.id == t.slot_lease.c.job_id)
                .where(t.job.c.flight_id == flight_id, t.slot_lease.c.owner.is_not(None))
                .group_by(t.slot_lease.c.owner)
            )
            return {owner: aware(until) for owner, until in rows}
