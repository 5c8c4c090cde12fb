"""Host slots shared by several controllers on one store: allocation with row locks, leases with
heartbeats, and expiry.

Each slot of each host is a row of ``slot_lease``. A controller claims slots for queued jobs in
one short transaction:

1. candidates: queued jobs of the pool's active flights, in priority order — by blessing
   (``real`` before ``review`` before ``adhoc`` before ``bisect`` before ``play``, configurable;
   a community user's on-demand flight after all of the lab's own, the user with the fewest jobs
   on hosts first), fair among branches (round robin: the n-th queued job of every branch
   before the n+1-th of any) — then locked with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two
   controllers never hold the same job;
   Only jobs that could start now are candidates: their dependencies passed and a host with
   their flags has a free slot and is in service; a job of the lab's own that cannot start
   does not hold back community work on a host it could not use;
2. ready ones (dependencies passed), each with the hosts it avoids (lost under it before) and,
   for a bisect flight, a preference for the host where the regression was seen;
3. free slots of in-service hosts (not quarantined, not reserved), read on a random sample of
   the hosts, so that controllers claiming at once mostly choose different ones;
4. the pure :func:`labgate.schedule.allocate` over them; the chosen slot rows are then locked
   (``FOR UPDATE SKIP LOCKED``) and checked free again: an allocation whose rows another
   controller took meanwhile is dropped (its job waits for the next claim); the others' rows
   get the job, the owner and ``lease_until``, and the job becomes ``preparing`` on its host.

A slot row is only ever written under its row lock and only while its ``job_id`` is NULL, so
no slot is allocated twice. The owner renews its leases with heartbeats; a controller that
stops (``kill -9``) loses them once they expire: :meth:`Allocator.reap` queues its unfinished
jobs again (recorded in the host's history) and frees the slots, and another controller runs
them. On SQLite (one controller machine) ``BEGIN IMMEDIATE`` serialises claims instead.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    bindparam,
    column,
    func,
    insert,
    select,
    tuple_,
    update,
    values,
)

from labgate.model import Blessing, HostSpec, Outcome
from labgate.schedule import Allocation, HostSlots, ReadyJob, allocate
from labgate.store import ACTIVE_FLIGHT_STATES, now
from labgate.store import schema as t
from labgate.store.access import live_jobs_on
from labgate.store.flights import start_jobs
from labgate.store.hosts import add_event, lost_hosts_on, unavailable_because, unavailable_on
from labgate.store.leases import SLOT
from labgate.store.values import autocommit

BLESSING_PRIORITY: tuple[str, ...] = ("real", "review", "adhoc", "bisect", "play")
FLIGHTS_PER_QUERY = 16
CANDIDATES = 4  # queued jobs looked at per claim, in batches
SAMPLE_HOSTS = 64
PREFERENCE_TTL_S = 60.0
NEEDS_CACHE = 100_000  # jobs whose needs a controller keeps in memory before it starts afresh
LIVE = (str(Outcome.PREPARING), str(Outcome.RUNNING))
SUCCEEDED = (str(Outcome.PASS), str(Outcome.SKIP))
QUEUED = str(Outcome.QUEUED)


@dataclass(frozen=True)
class Claim:
    """A job given a host's slots by this controller."""

    job_id: int
    flight_id: int
    job: str
    host: str
    slots: int
    attempt: int
    """The job's attempt number: the claim started it (``preparing`` on its host)."""


class Allocator:
    """One controller's side of the shared slots (see the module docs)."""

    def __init__(
        self,
        engine: Engine,
        hosts: Sequence[HostSpec],
        owner: str,
        *,
        lease_s: float = 30.0,
        priority: Sequence[str] = BLESSING_PRIORITY,
        batch: int = 32,
    ) -> None:
        self.engine = engine
        self.hosts = {h.name: h for h in hosts}
        self.owner = owner
        self.lease = timedelta(seconds=lease_s)
        self.priority = tuple(priority)
        self.batch = batch
        self.sqlite = engine.dialect.name == "sqlite"
        self.reader = autocommit(engine)
        self._fits: dict[frozenset[str], tuple[str, ...]] = {}
        # jobs this controller gave a host, per (blessing rank, branch): the round robin's memory
        self._served: Counter[tuple[int, str]] = Counter()
        self._group_of: dict[int, tuple[int, str]] = {}
        # what does not change while a job waits, read once per job and flight: what it
        # needs (depends, requires, exclusive) and the host it prefers; a flight's hosts to avoid
        self._needs: dict[int, tuple[tuple[str, ...], frozenset[str], bool, str | None]] = {}
        self._wants: dict[int, tuple[tuple[str, ...], frozenset[str]]] = {}  # depends, requires
        self._avoids: dict[int, dict[str, str]] = {}
        self._flights: dict[int, tuple[str, bool]] = {}  # flight → (branch, is a bisection)
        # (branch, job name) → (read again after, host that ran it last, host it last failed on)
        self._preferences: dict[tuple[str, str], tuple[float, str | None, str | None]] = {}

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A write transaction: on SQLite taken at once (``BEGIN IMMEDIATE``), so two claims
        never interleave; on PostgreSQL the row locks do that."""
        with self.engine.connect() as conn:
            if self.sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    def _lock(self, query: Any) -> Any:
        return query if self.sqlite else query.with_for_update(skip_locked=True)

    # --- slots ------------------------------------------------------------------------------

    def sync(self) -> None:
        """Make a slot row for every slot of every host (a host given fewer slots in lab.toml
        loses its free rows beyond the count; held ones stay until released)."""
        with self._transaction() as conn:
            have = {(r.host, r.slot) for r in conn.execute(select(t.slot_lease))}
            want = {(h.name, i) for h in self.hosts.values() for i in range(h.slots)}
            missing = [{"host": h, "slot": s} for h, s in sorted(want - have)]
            if missing:
                conn.execute(insert(t.slot_lease), missing)
            for host, slot in have - want:
                conn.execute(
                    t.slot_lease.delete().where(
                        t.slot_lease.c.host == host,
                        t.slot_lease.c.slot == slot,
                        t.slot_lease.c.job_id.is_(None),
                    )
                )

    def claim(self, flights: Collection[int] | None = None) -> list[Claim]:
        """Claim slots for as many queued, ready jobs as fit now (one transaction); with
        ``flights``, only jobs of those flights (a controller that serves only the flights its
        process awaits)."""
        self._group_of.clear()
        if flights is not None and not flights:
            return []
        # read without the write lock: none free is the usual answer when busy, asked each
        # time a job ends; on PostgreSQL with the free slots and why hosts are away, in one
        # round trip (the slots chosen are locked and checked free again before they are taken)
        free_hosts, away = self._free_and_away()
        if not free_hosts:
            return []
        with self._transaction() as conn:
            # on SQLite the hosts are known here, not their free slots (None), nor who is away
            known = None if self.sqlite else free_hosts
            away = unavailable_on(conn) if self.sqlite else away
            # as many jobs locked as the free slots could take, and some to spare (a job may
            # need a host another cannot use); on SQLite, as many as all their slots could take
            open_hosts = free_hosts.keys() - away.keys()
            if known is None:
                slots = sum(self.hosts[h].slots for h in open_hosts if h in self.hosts)
            else:
                slots = sum(len(known[h]) for h in open_hosts)
            want = min(self.batch, max(4, 2 * slots))
            jobs = self._lock_candidates(conn, flights, open_hosts, want)
            if not jobs:
                return []
            ready = self._ready(conn, jobs)
            if not ready:
                return []
            free = self._free_slots(conn, ready, away, known)
            if not free:
                return []
            hosts = [
                HostSlots(name, self.hosts[name].flags, self.hosts[name].slots,
                          self.hosts[name].slots - len(rows))
                for name, rows in free.items()
            ]  # fmt: skip
            preferred = {r.name: h for r, h in ready if h is not None}
            avoid = self._avoid(conn, jobs)
            allocations = allocate([r for r, _ in ready], hosts, preferred, avoid)
            claims = self._write(conn, self._lock_chosen(conn, allocations, free), jobs)
        for c in claims:
            self._served[self._group_of[c.job_id]] += 1
        return claims

    def _free_and_away(self) -> tuple[dict[str, list[int]], dict[str, str]]:
        """The hosts with a free slot, and on PostgreSQL their free slots and the unavailable
        ones among them with why (on SQLite no slots and nobody away: both are read under its
        write lock instead, since ``BEGIN IMMEDIATE`` takes the slots read there without
        checking them again)."""
        with self.reader.connect() as conn:
            if self.sqlite:
                return {h: [] for h in conn.execute(_HOSTS_WITH_FREE_SLOTS).scalars()}, {}
            stamp = now()
            free: dict[str, list[int]] = {}
            away: dict[str, str] = {}
            for r in conn.execute(_FREE_SLOTS_AND_STATUS):
                free[r.host] = sorted(r.slots)
                why = unavailable_because(r, stamp)
                if why is not None:
                    away[r.host] = why
            return free, away

    def _lock_candidates(
        self,
        conn: Connection,
        only: Collection[int] | None,
        open_hosts: Collection[str],
        want: int,
    ) -> list[dict[str, Any]]:
        """Lock up to ``want`` queued jobs that could start on ``open_hosts`` (see
        :meth:`_startable`), best first (see :meth:`_order`); jobs another controller holds are
        skipped."""
        if only is None:
            flights = conn.execute(_POOL_FLIGHTS).all()
        else:
            flights = conn.execute(_POOL_FLIGHTS_OF, {"only": list(only)}).all()
        fits: dict[frozenset[str], bool] = {}
        live = self._live(conn, flights)
        ordered = self._order(flights, live)
        candidates: list[int] = []
        # each flight's oldest queued jobs, enough to fill the candidates (the order below
        # takes a flight's jobs oldest first); all of them when those could not (their
        # dependencies have not passed): a claim reads what it may take, not the whole queue
        per_flight = CANDIDATES * want
        for i in range(0, len(ordered), FLIGHTS_PER_QUERY):
            chunk = ordered[i : i + FLIGHTS_PER_QUERY]
            oldest = {"flights": chunk, "per": per_flight}
            rows = conn.execute(_OLDEST_QUEUED_JOBS_OF, oldest).all()
            startable = self._startable(conn, rows, open_hosts, fits)
            cut = Counter(r.flight_id for r in rows)
            if len(startable) < per_flight and per_flight in cut.values():
                rows = conn.execute(_QUEUED_JOBS_OF, {"flights": chunk}).all()
                startable = self._startable(conn, rows, open_hosts, fits)
            candidates += self._interleave(startable, flights, live)
            if len(candidates) >= CANDIDATES * self.batch:
                break
        locked: list[dict[str, Any]] = []
        slices = list(range(0, len(candidates), self.batch))
        # controllers claiming at once mostly start on different slices of the best candidates
        # instead of all skipping the same locked rows; only among the slices that start with
        # the best rank, so that work of a lower rank never goes first, and never for on-demand
        # work, whose order is the users' fair share
        best = self._group_of[candidates[0]][0] if candidates else 0
        top = [i for i in slices if self._group_of[candidates[i]][0] == best]
        if best == self._community:
            top = top[:1]
        first = random.randrange(len(top)) if top else 0
        for i in top[first:] + top[:first] + slices[len(top) :]:
            batch = {"jobs": candidates[i : i + want]}  # a slice's best
            locked += [
                dict(r._mapping) for r in conn.execute(_LOCK_QUEUED_JOBS[self.sqlite], batch)
            ]
            if len(locked) >= want:
                break
        position = {job_id: i for i, job_id in enumerate(candidates)}
        locked.sort(key=lambda r: position[r["id"]])
        return locked

    def _startable(
        self,
        conn: Connection,
        rows: Sequence[Any],
        open_hosts: Collection[str],
        fits: dict[frozenset[str], bool],
    ) -> list[Any]:
        """The queued jobs of ``rows`` that could start now: some host with their flags is open
        (has a free slot, in service; ``fits`` remembers the answer per set of flags) and their
        dependencies succeeded (read only when some of them have any)."""
        out = []
        for r in rows:
            wants = self._wants.get(r.id)
            if wants is None:
                wants = (tuple(json.loads(r.depends)), frozenset(json.loads(r.requires)))
                self._wants[r.id] = wants
            fit = fits.get(wants[1])
            if fit is None:
                fit = fits[wants[1]] = any(h in open_hosts for h in self._fitting(wants[1]))
            if fit:
                out.append(r)
        wanted = {d for r in out for d in self._wants[r.id][0]}
        if not wanted:
            return out
        passed = {
            (p.flight_id, p.name)
            for p in conn.execute(
                select(t.job.c.flight_id, t.job.c.name).where(
                    t.job.c.flight_id.in_({r.flight_id for r in out}),
                    t.job.c.name.in_(wanted),
                    t.job.c.outcome.in_(SUCCEEDED),
                )
            )
        }
        return [r for r in out if all((r.flight_id, d) in passed for d in self._wants[r.id][0])]

    def _rank(self, blessing: str) -> int:
        try:
            return self.priority.index(blessing)
        except ValueError:
            return len(self.priority)

    @property
    def _community(self) -> int:
        """The rank of on-demand work: after every blessing of the lab's own."""
        return len(self.priority) + 1

    def _group(self, flight: Any) -> tuple[int, str]:
        """A flight's turn group: its blessing's rank and its branch; a community user's
        on-demand flight (it has an owner) comes after all of the lab's own work, one group per
        user."""
        if flight.owner is not None:
            return (self._community, flight.owner)
        return (self._rank(flight.blessing), flight.branch)

    def _live(self, conn: Connection, flights: Sequence[Any]) -> dict[str, int]:
        """Each owner's jobs on hosts now (any controller's), for the owners of these flights:
        their fair share goes by what runs now, not by what ran (no user pays later for a time
        the lab was idle)."""
        owners = {f.owner for f in flights if f.owner is not None}
        return live_jobs_on(conn, owners) if owners else {}

    def _order(self, flights: Sequence[Any], live: Mapping[str, int]) -> list[int]:
        """The flights by blessing, then round robin among branches, oldest first; on-demand
        flights last, the user with the fewest jobs on hosts first, then the oldest."""
        groups: dict[tuple[int, str], list[int]] = {}
        for f in sorted(flights, key=lambda f: f.id):
            groups.setdefault(self._group(f), []).append(f.id)
        keyed = []
        for (rank, name), ids in groups.items():
            first, tie = (live.get(name, 0), "") if rank == self._community else (0, name)
            keyed += [(rank, first + turn, tie, fid) for turn, fid in enumerate(ids)]
        return [fid for *_, fid in sorted(keyed)]

    def _interleave(
        self, rows: Sequence[Any], flights: Sequence[Any], live: Mapping[str, int]
    ) -> list[int]:
        """Queued jobs in order: by blessing, then round robin among branches (a branch this
        controller served less goes first; then the n-th job of every branch before the n+1-th
        of any), oldest first. Among on-demand users, the one with the fewest jobs on hosts now
        goes first, then the oldest job: a fair share of what the lab's work leaves."""
        flight = {f.id: f for f in flights}
        turns = Counter(self._served)
        for f in flights:
            if f.owner is not None:
                turns[self._group(f)] = live.get(f.owner, 0)
        keyed = []
        for r in sorted(rows, key=lambda r: r.id):
            f = flight[r.flight_id]
            group = self._group(f)
            self._group_of[r.id] = group
            keyed.append((group[0], turns[group], r.id))
            turns[group] += 1
        return [job_id for _, _, job_id in sorted(keyed)]

    def _ready(
        self, conn: Connection, jobs: Sequence[dict[str, Any]]
    ) -> list[tuple[ReadyJob, str | None]]:
        """The jobs whose dependencies passed, each with the host it prefers (see
        :meth:`_preferred_hosts`) and the hosts it avoids (lost under it before)."""
        if len(self._needs) > NEEDS_CACHE or len(self._wants) > NEEDS_CACHE:
            self._needs.clear()
            self._wants.clear()
            self._avoids.clear()
            self._flights.clear()
        new = [j for j in jobs if j["id"] not in self._needs]
        if new:
            preferred = self._preferred_hosts(conn, new)
            for j in new:
                self._needs[j["id"]] = (
                    tuple(json.loads(j["depends"])),
                    frozenset(json.loads(j["requires"])),
                    bool(j["exclusive"]),
                    preferred.get(j["id"]),
                )
        flights = {j["flight_id"] for j in jobs}
        wanted = {d for j in jobs for d in self._needs[j["id"]][0]}
        passed: set[tuple[int, str]] = set()
        if wanted:
            rows = conn.execute(
                select(t.job.c.flight_id, t.job.c.name).where(
                    t.job.c.flight_id.in_(flights),
                    t.job.c.name.in_(wanted),
                    t.job.c.outcome.in_(SUCCEEDED),
                )
            )
            passed = {(r.flight_id, r.name) for r in rows}
        retried = [j["id"] for j in jobs if j["attempt"] > 0]  # only these can have lost a host
        lost = lost_hosts_on(conn, retried) if retried else {}
        out = []
        for j in jobs:
            depends, requires, exclusive, preferred_host = self._needs[j["id"]]
            if all((j["flight_id"], d) in passed for d in depends):
                key = f"{j['flight_id']}/{j['name']}"
                job = ReadyJob(j["id"], key, requires, exclusive, frozenset(lost.get(j["id"], ())))
                out.append((job, preferred_host))
        return out

    def _avoid(self, conn: Connection, jobs: Sequence[dict[str, Any]]) -> dict[str, str]:
        """Ready-job name → the host its flight asked to keep it off (a retest of a job the lab
        broke there), when another can take it."""
        unknown = {j["flight_id"] for j in jobs} - self._avoids.keys()
        if unknown:
            rows = conn.execute(
                select(t.pool_flight.c.flight_id, t.pool_flight.c.avoid).where(
                    t.pool_flight.c.flight_id.in_(unknown)
                )
            )
            for r in rows:
                self._avoids[r.flight_id] = json.loads(r.avoid)
        return {
            f"{flight}/{name}": host
            for flight in {j["flight_id"] for j in jobs}
            for name, host in self._avoids.get(flight, {}).items()
        }

    def _preferred_hosts(self, conn: Connection, jobs: Sequence[dict[str, Any]]) -> dict[int, str]:
        """For each job, the host it prefers: for a bisect flight's job, where the job last
        failed on its branch (the regression was seen there); otherwise the host that ran it
        last on its branch (its caches and install are warm). Read per branch and job name at
        most every ``PREFERENCE_TTL_S``: a preference a little old only costs a colder cache."""
        unknown = {j["flight_id"] for j in jobs} - self._flights.keys()
        if unknown:
            for r in conn.execute(
                select(t.flight.c.id, t.flight.c.branch, t.flight.c.blessing).where(
                    t.flight.c.id.in_(unknown)
                )
            ):
                self._flights[r.id] = (r.branch, r.blessing == str(Blessing.BISECT))
        stamp = time.monotonic()
        keys = {(self._flights[j["flight_id"]][0], j["name"]) for j in jobs}
        stale = {k for k in keys if self._preferences.get(k, (0.0, None, None))[0] < stamp}
        if stale:
            last = self._latest_hosts(conn, stale)
            failed = self._latest_hosts(conn, stale, t.job.c.outcome == str(Outcome.FAIL))
            for key in stale:
                self._preferences[key] = (stamp + PREFERENCE_TTL_S, last.get(key), failed.get(key))
        out: dict[int, str] = {}
        for j in jobs:
            branch, bisecting = self._flights[j["flight_id"]]
            _, last_host, failed_host = self._preferences[(branch, j["name"])]
            host = (failed_host if bisecting else None) or last_host
            if host is not None:
                out[j["id"]] = host
        return out

    def _latest_hosts(
        self, conn: Connection, keys: Collection[tuple[str, str]], *where: Any
    ) -> dict[tuple[str, str], str]:
        """(branch, job name) → the host of the newest such job (matching ``where``)."""
        newest = (
            select(func.max(t.job.c.id).label("id"))
            .join(t.flight, t.flight.c.id == t.job.c.flight_id)
            .where(
                t.flight.c.branch.in_({b for b, _ in keys}),
                t.job.c.name.in_({n for _, n in keys}),
                t.job.c.host.is_not(None),
                *where,
            )
            .group_by(t.flight.c.branch, t.job.c.name)
            .subquery()
        )
        rows = conn.execute(
            select(t.flight.c.branch, t.job.c.name, t.job.c.host)
            .join(t.flight, t.flight.c.id == t.job.c.flight_id)
            .join(newest, newest.c.id == t.job.c.id)
        )
        return {(r.branch, r.name): r.host for r in rows}

    def _fitting(self, requires: frozenset[str]) -> tuple[str, ...]:
        """The hosts with every flag of ``requires`` (cached: the lab's hosts do not change)."""
        hosts = self._fits.get(requires)
        if hosts is None:
            hosts = tuple(n for n, h in self.hosts.items() if requires <= h.flags)
            self._fits[requires] = hosts
        return hosts

    def _free_slots(
        self,
        conn: Connection,
        ready: Sequence[tuple[ReadyJob, str | None]],
        away: Mapping[str, str],
        known: Mapping[str, list[int]] | None,
    ) -> dict[str, list[int]]:
        """Free slots of in-service hosts (not ``away``) some ready job can use, as seen now
        (not locked), or as ``known`` from a moment ago: host name → slot numbers. Hosts are
        sampled at random (all of them when few), so that controllers claiming at once mostly
        choose different hosts."""
        fitting: set[str] = set()
        for requires in {r.requires for r, _ in ready}:
            fitting.update(self._fitting(requires))
        usable = sorted(fitting - away.keys())
        preferred = {h for _, h in ready if h in usable}
        size = max(SAMPLE_HOSTS, 2 * len(ready))
        if len(usable) > size:
            usable = list(preferred | set(random.sample(usable, size)))
        if not usable:
            return {}
        if known is not None:
            return {h: known[h] for h in usable if h in known}
        rows = conn.execute(_FREE_SLOTS_ON, {"hosts": usable})
        free: dict[str, list[int]] = {}
        for r in rows:
            free.setdefault(r.host, []).append(r.slot)
        return free

    def _lock_chosen(
        self, conn: Connection, allocations: Sequence[Allocation], free: Mapping[str, list[int]]
    ) -> list[tuple[Allocation, list[int]]]:
        """Each allocation with the slot rows it takes, locked; an allocation whose rows another
        controller took meanwhile is dropped (its job stays queued for the next claim)."""
        chosen: list[tuple[Allocation, list[int]]] = []
        taken: dict[str, int] = {}
        for a in allocations:
            start = taken.get(a.host, 0)
            chosen.append((a, free[a.host][start : start + a.slots]))
            taken[a.host] = start + a.slots
        if self.sqlite or not chosen:  # BEGIN IMMEDIATE: nobody else can have taken them
            return chosen
        pairs = [(a.host, slot) for a, slots in chosen for slot in slots]
        got = {
            (r.host, r.slot)
            for r in conn.execute(
                self._lock(
                    select(t.slot_lease.c.host, t.slot_lease.c.slot).where(
                        tuple_(t.slot_lease.c.host, t.slot_lease.c.slot).in_(pairs),
                        t.slot_lease.c.job_id.is_(None),
                    )
                )
            )
        }
        return [(a, slots) for a, slots in chosen if all((a.host, s) in got for s in slots)]

    def _write(
        self,
        conn: Connection,
        chosen: Sequence[tuple[Allocation, list[int]]],
        jobs: Sequence[dict[str, Any]],
    ) -> list[Claim]:
        by_id = {j["id"]: j for j in jobs}
        until = now() + self.lease
        slot_rows: list[dict[str, Any]] = []
        claims = []
        for a, slots in chosen:
            job = by_id[a.job_id]
            slot_rows += [{"h": a.host, "s": s, "j": a.job_id} for s in slots]
            claims.append(Claim(a.job_id, job["flight_id"], job["name"], a.host, a.slots, 0))
        if not claims:
            return []
        free_row = (t.slot_lease.c.job_id.is_(None),)
        if self.sqlite:  # in-process: a statement per row costs little
            conn.execute(
                update(t.slot_lease)
                .where(
                    t.slot_lease.c.host == bindparam("h"),
                    t.slot_lease.c.slot == bindparam("s"),
                    *free_row,
                )
                .values(job_id=bindparam("j"), owner=self.owner, lease_until=until),
                slot_rows,
            )
            attempts = start_jobs(conn, {c.job_id: c.host for c in claims})
        else:  # one statement (UPDATE ... FROM VALUES) with the jobs' start: one round trip
            given = values(
                column("h", String), column("s", Integer), column("j", Integer), name="given"
            ).data([(r["h"], r["s"], r["j"]) for r in slot_rows])
            taken = (
                update(t.slot_lease)
                .where(
                    t.slot_lease.c.host == given.c.h, t.slot_lease.c.slot == given.c.s, *free_row
                )
                .values(job_id=given.c.j, owner=self.owner, lease_until=until)
            )
            attempts = start_jobs(conn, {c.job_id: c.host for c in claims}, taken.cte("taken"))
        return [replace(c, attempt=attempts[c.job_id]) for c in claims]

    # --- leases -----------------------------------------------------------------------------

    def heartbeat(self) -> set[int]:
        """Renew this controller's leases; returns the jobs it still holds (a job missing here
        was taken from it: its lease expired and it runs elsewhere)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.slot_lease)
                .where(SLOT.held_by(self.owner), t.slot_lease.c.job_id.is_not(None))
                .values(SLOT.renew(self.lease.total_seconds(), now()))
            )
            return set(
                conn.execute(
                    select(t.slot_lease.c.job_id).where(SLOT.held_by(self.owner))
                ).scalars()
            )

    def release(self, job_id: int) -> None:
        """Give back the slots of a job this controller ran."""
        with self.engine.begin() as conn:
            release_slots(conn, job_id, SLOT.held_by(self.owner))

    def reap(self, dead: str | None = None) -> list[int]:
        """Free the slots whose lease expired; their unfinished jobs are queued again (their
        controller stopped: killed, or cut off from the store). With ``dead``, free that
        controller's slots at once (a process of this machine known to be gone). Returns the
        jobs queued again."""
        stamp = now()
        expired = SLOT.held_by(dead) if dead is not None else SLOT.expired(stamp)
        with self._transaction() as conn:
            rows = conn.execute(
                self._lock(select(t.slot_lease).where(t.slot_lease.c.job_id.is_not(None), expired))
            ).all()
            if not rows:
                return []
            jobs = {r.job_id: r for r in rows}
            live = conn.execute(
                select(t.job.c.id, t.job.c.attempt).where(
                    t.job.c.id.in_(list(jobs)), t.job.c.outcome.in_(LIVE)
                )
            ).all()
            for job_id, attempt in live:
                row = jobs[job_id]
                reason = (
                    f"controller {row.owner} is gone"
                    if dead is not None
                    else f"controller {row.owner} stopped renewing its lease on {row.host}"
                )
                conn.execute(
                    update(t.job)
                    .where(t.job.c.id == job_id)
                    .values(outcome=str(Outcome.QUEUED), reason=f"{reason}; queued again")
                )
                conn.execute(
                    update(t.step)
                    .where(t.step.c.job_id == job_id)
                    .values(outcome=str(Outcome.QUEUED))
                )
                conn.execute(
                    update(t.allocation)
                    .where(t.allocation.c.job_id == job_id, t.allocation.c.released.is_(None))
                    .values(released=stamp)
                )
                add_event(
                    conn, row.host, "lease-expired", job_id=job_id, attempt=attempt, reason=reason
                )
            for r in rows:
                conn.execute(
                    update(t.slot_lease)
                    .where(t.slot_lease.c.host == r.host, t.slot_lease.c.slot == r.slot, expired)
                    .values(job_id=None, **SLOT.cleared())
                )
            return [job_id for job_id, _ in live]


def release_slots(conn: Connection, job_id: int, *where: Any) -> None:
    """Give back the slots job ``job_id`` holds (those matching ``where``), in the caller's
    transaction."""
    if not where:  # every job's end: the statement built once
        conn.execute(_RELEASE_SLOTS, {"r_job": job_id})
        return
    conn.execute(
        update(t.slot_lease)
        .where(t.slot_lease.c.job_id == job_id, *where)
        .values(job_id=None, **SLOT.cleared())
    )


# The claim's statements, built once (a controller claims each time one of its jobs ends).
_HOSTS_WITH_FREE_SLOTS = (
    select(t.slot_lease.c.host).where(t.slot_lease.c.job_id.is_(None)).distinct()
)
_POOL_FLIGHTS = (
    select(t.flight.c.id, t.flight.c.branch, t.flight.c.blessing, t.flight.c.owner)
    .join(t.pool_flight, t.pool_flight.c.flight_id == t.flight.c.id)
    .where(
        t.flight.c.state.in_(ACTIVE_FLIGHT_STATES),
        select(t.job.c.id)
        .where(t.job.c.flight_id == t.flight.c.id, t.job.c.outcome == QUEUED)
        .exists(),
    )
)
_POOL_FLIGHTS_OF = _POOL_FLIGHTS.where(t.flight.c.id.in_(bindparam("only", expanding=True)))
_QUEUED_JOBS_OF = select(t.job.c.id, t.job.c.flight_id, t.job.c.depends, t.job.c.requires).where(
    t.job.c.flight_id.in_(bindparam("flights", expanding=True)), t.job.c.outcome == QUEUED
)
_RANKED_QUEUED = select(
    *_QUEUED_JOBS_OF.selected_columns,
    func.row_number().over(partition_by=t.job.c.flight_id, order_by=t.job.c.id).label("oldest"),
).where(t.job.c.flight_id.in_(bindparam("flights", expanding=True)), t.job.c.outcome == QUEUED)
_OLDEST = _RANKED_QUEUED.subquery("ranked")
_OLDEST_QUEUED_JOBS_OF = select(
    _OLDEST.c.id, _OLDEST.c.flight_id, _OLDEST.c.depends, _OLDEST.c.requires
).where(_OLDEST.c.oldest <= bindparam("per"))
_QUEUED_JOBS = select(
    t.job.c.id,
    t.job.c.flight_id,
    t.job.c.name,
    t.job.c.requires,
    t.job.c.depends,
    t.job.c.exclusive,
    t.job.c.attempt,
).where(t.job.c.id.in_(bindparam("jobs", expanding=True)), t.job.c.outcome == QUEUED)
# by ``Allocator.sqlite``: SQLite's BEGIN IMMEDIATE already locks; PostgreSQL skips the rows
# another controller is claiming
_LOCK_QUEUED_JOBS = {True: _QUEUED_JOBS, False: _QUEUED_JOBS.with_for_update(skip_locked=True)}
# PostgreSQL: each host with a free slot, its free slots and its status (a host_status row's
# columns may be chosen when grouped by its key)
_FREE_SLOTS_AND_STATUS = (
    select(
        t.slot_lease.c.host,
        func.array_agg(t.slot_lease.c.slot).label("slots"),
        t.host_status.c.quarantined,
        t.host_status.c.reserved_by,
        t.host_status.c.reserved_reason,
        t.host_status.c.reserved_until,
    )
    .select_from(t.slot_lease.outerjoin(t.host_status, t.host_status.c.name == t.slot_lease.c.host))
    .where(t.slot_lease.c.job_id.is_(None))
    .group_by(t.slot_lease.c.host, t.host_status.c.name)
)
_FREE_SLOTS_ON = select(t.slot_lease.c.host, t.slot_lease.c.slot).where(
    t.slot_lease.c.host.in_(bindparam("hosts", expanding=True)), t.slot_lease.c.job_id.is_(None)
)
_RELEASE_SLOTS = (
    update(t.slot_lease)
    .where(t.slot_lease.c.job_id == bindparam("r_job"))
    .values(job_id=None, **SLOT.cleared())
)
