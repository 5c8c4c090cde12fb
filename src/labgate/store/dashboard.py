"""The dashboard's reads: one page, a few indexed queries, each for one viewer.

Every read takes the :class:`~labgate.store.users.Viewer` and applies the one visibility
predicate (:func:`labgate.store.users.visible`) in its SQL: a flight under embargo is, for
whoever is outside its group, exactly a flight that does not exist (same exception, same
message), and it counts nowhere (lists, pages, histories, rates, hosts, pushes, bisections).

SQLAlchemy Core over ``labgate.store.schema``; results are the model's values (`FlightResult`,
`JobResult`, `StepResult`, `PushRecord`) or small frozen dataclasses of this module, each with the
``to_json`` the JSON API serves (the same form the CLI's ``--json`` prints).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, or_, select

from labgate.model import (
    Embargo,
    FlightResult,
    FlightState,
    JobResult,
    Outcome,
    PushRecord,
    StepResult,
)
from labgate.store import (
    FlightNotFound,
    Store,
    finished_flight_ids,
    flight_from_row,
    iso,
    revisions_of,
    step_from_row,
)
from labgate.store import schema as t
from labgate.store.branches import push_from_row
from labgate.store.hosts import HostEvent, HostRegistry, HostStatus
from labgate.store.users import Users, Viewer, seen_by, visible

PAGE_SIZE = 50

FLIGHT_FILTERS = ("pass", "fail", "broken", "blocked", "cancelled", "running", "queued")
"""What the flight list's ``outcome`` filter takes: a final outcome, or a live state."""


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return (end - start).total_seconds()


def parse_iso(value: str | None) -> datetime | None:
    """A stored time as the model gives it (ISO 8601), None for none."""
    return datetime.fromisoformat(value) if value else None


def _flight(row: Any, revisions: Mapping[str, str]) -> FlightResult:
    return flight_from_row(row, revisions, ())


# What a history row reads of a step: all that `step_from_row` needs, not its command.
_STEP_COLUMNS = (
    t.step.c.id,
    t.step.c.job_id,
    t.step.c.name,
    t.step.c.outcome,
    t.step.c.exit_status,
    t.step.c.duration_s,
    t.step.c.log,
    t.step.c.reason,
    t.step.c.started,
    t.step.c.finished,
    t.step.c.command,
)


# --- the flight list ------------------------------------------------------------------------


@dataclass(frozen=True)
class GateState:
    """What the push gate made of a flight: its verdict, and its last push if it made one."""

    push_allowed: bool
    regressions: int
    push: PushRecord | None = None

    @property
    def word(self) -> str:
        """``pushed``, ``push failed`` (the push was made and refused: not-fast-forward,
        error), ``regressed`` (regressions stop the push), ``not pushed`` (something else
        stops it: broken or untested jobs, new findings) or ``push allowed`` (no push yet)."""
        if self.push is not None:
            return "pushed" if self.push.status == "pushed" else "push failed"
        if self.regressions:
            return "regressed"
        return "push allowed" if self.push_allowed else "not pushed"


@dataclass(frozen=True)
class FlightRow:
    """A flight in the list (without its jobs), how many of its jobs ended each way, what the
    gate made of it and, for a bisect flight, the bisection it served."""

    flight: FlightResult
    job_counts: Mapping[str, int]
    gate: GateState | None = None
    bisection: int | None = None

    @property
    def total(self) -> int:
        return sum(self.job_counts.values())

    def duration_s(self, now: datetime | None = None) -> float | None:
        """From start to finish; of a flight still running, so far (to ``now``)."""
        started = parse_iso(self.flight.started)
        if started is None:
            return None
        finished = parse_iso(self.flight.finished)
        if finished is None and self.flight.state is FlightState.RUNNING:
            finished = now or datetime.now(UTC)
        return seconds_between(started, finished)


@dataclass(frozen=True)
class FlightPage:
    rows: tuple[FlightRow, ...]
    older: int | None
    """The ``before`` of the next (older) page, None on the last page."""


def flight_page(
    store: Store,
    viewer: Viewer,
    *,
    branch: str | None = None,
    blessing: str | None = None,
    outcome: str | None = None,
    before: int | None = None,
    limit: int = PAGE_SIZE,
) -> FlightPage:
    """The flights the viewer may see, newest first, filtered, keyset-paginated by id."""
    query = select(t.flight).where(visible(viewer)).order_by(t.flight.c.id.desc()).limit(limit + 1)
    if branch:
        query = query.where(t.flight.c.branch == branch)
    if blessing:
        query = query.where(t.flight.c.blessing == blessing)
    if outcome in (str(FlightState.RUNNING), str(FlightState.QUEUED)):
        query = query.where(t.flight.c.state == outcome)
    elif outcome:
        query = query.where(t.flight.c.outcome == outcome)
    if before is not None:
        query = query.where(t.flight.c.id < before)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
        more = len(rows) > limit
        rows = rows[:limit]
        ids = [r.id for r in rows]
        revisions = revisions_of(conn, ids)
        counts = _job_counts(conn, ids)
        gates = _gate_states(conn, ids)
        bisect = [r for r in rows if r.blessing == "bisect"]
        served = _bisections_served(conn, viewer, bisect)
    page = tuple(
        FlightRow(_flight(r, revisions[r.id]), counts[r.id], gates.get(r.id), served.get(r.id))
        for r in rows
    )
    return FlightPage(page, rows[-1].id if more and rows else None)


def _gate_states(conn: Connection, flight_ids: Sequence[int]) -> dict[int, GateState]:
    """The verdict and last push of each flight that has a verdict (two queries)."""
    if not flight_ids:
        return {}
    query = select(t.verdict.c.flight_id, t.verdict.c.push_allowed, t.verdict.c.regressions)
    verdicts = conn.execute(query.where(t.verdict.c.flight_id.in_(flight_ids))).all()
    pushes: dict[int, PushRecord] = {}
    pushed = select(t.push).where(t.push.c.flight_id.in_(flight_ids)).order_by(t.push.c.id)
    for row in conn.execute(pushed):
        pushes[row.flight_id] = push_from_row(row)  # the last one stays
    return {
        v.flight_id: GateState(bool(v.push_allowed), v.regressions or 0, pushes.get(v.flight_id))
        for v in verdicts
    }


def bisection_served(store: Store, viewer: Viewer, flight_id: int) -> int | None:
    """The bisection a bisect flight served, None when none did (or the viewer may not see
    it)."""
    with store.engine.connect() as conn:
        row = conn.execute(select(t.flight).where(t.flight.c.id == flight_id)).first()
        return _bisections_served(conn, viewer, [row]).get(flight_id) if row else None


def _bisections_served(conn: Connection, viewer: Viewer, flights: Sequence[Any]) -> dict[int, int]:
    """For each of these bisect flights (rows), the bisection that ran it. A bisection runs its
    flights between its creation and its end, so only the bisections of those branches whose
    time overlaps the flights' are read."""
    if not flights:
        return {}
    first = min(f.created for f in flights)
    last = max(f.created for f in flights)
    query = seen_by(
        select(t.bisection.c.id, t.bisection.c.flights), t.bisection.c.flight_id, viewer
    ).where(
        t.bisection.c.branch.in_(sorted({f.branch for f in flights})),
        t.bisection.c.created <= last,
        or_(t.bisection.c.finished.is_(None), t.bisection.c.finished >= first),
    )
    wanted = {f.id for f in flights}
    served: dict[int, int] = {}
    for bisection_id, used in conn.execute(query):
        for flight_id in set(json.loads(used)) & wanted:
            served.setdefault(flight_id, bisection_id)
    return served


def _job_counts(conn: Connection, flight_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """For each flight, how many of its jobs stand at each outcome (one grouped query)."""
    counts: dict[int, dict[str, int]] = {i: {} for i in flight_ids}
    if flight_ids:
        query = (
            select(t.job.c.flight_id, t.job.c.outcome, func.count())
            .where(t.job.c.flight_id.in_(flight_ids))
            .group_by(t.job.c.flight_id, t.job.c.outcome)
        )
        for flight_id, outcome, n in conn.execute(query).all():
            counts[flight_id][outcome] = n
    return counts


def branch_names(store: Store, viewer: Viewer) -> list[str]:
    with store.engine.connect() as conn:
        query = (
            select(t.flight.c.branch).where(visible(viewer)).distinct().order_by(t.flight.c.branch)
        )
        return list(conn.execute(query).scalars())


# --- job runs: a job across flights (history), or the jobs a host ran ----------------------


@dataclass(frozen=True)
class JobRun:
    """One job of one flight, with its steps (no test cases), and the flight it belongs to."""

    flight: FlightResult
    job: JobResult
    duration_s: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "flight": self.flight.id,
            "branch": self.flight.branch,
            "blessing": str(self.flight.blessing),
            "revisions": dict(self.flight.revisions),
            "started": self.job.started,
            "duration_s": self.duration_s,
            "job": self.job.to_json(),
        }


def _job_runs(
    conn: Connection, job_rows: Sequence[Any], flights: Mapping[int, Any]
) -> list[JobRun]:
    ids = [j.id for j in job_rows]
    steps: dict[int, list[StepResult]] = {i: [] for i in ids}
    if ids:
        query = (
            select(*_STEP_COLUMNS)
            .where(t.step.c.job_id.in_(ids))
            .order_by(t.step.c.job_id, t.step.c.seq)
        )
        for s in conn.execute(query).all():
            steps[s.job_id].append(step_from_row(s))
    revisions = revisions_of(conn, list(flights))
    out = []
    for j in job_rows:
        job = JobResult(
            id=j.id,
            name=j.name,
            outcome=Outcome(j.outcome),
            host=j.host,
            steps=tuple(steps[j.id]),
            reason=j.reason,
            started=iso(j.started),
            finished=iso(j.finished),
        )
        flight = _flight(flights[j.flight_id], revisions[j.flight_id])
        out.append(JobRun(flight, job, seconds_between(j.started, j.finished)))
    return out


def job_runs(
    store: Store, viewer: Viewer, branch: str, job: str, *, limit: int = 100
) -> list[JobRun]:
    """The job in the branch's flights the viewer may see, newest first."""
    # ordered by flight.id: both stores then walk ix_flight_branch backwards and stop early
    query = (
        select(t.job)
        .join(t.flight, t.flight.c.id == t.job.c.flight_id)
        .where(t.job.c.name == job, t.flight.c.branch == branch, visible(viewer))
        .order_by(t.flight.c.id.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        job_rows = conn.execute(query).all()
        flight_ids = sorted({j.flight_id for j in job_rows})
        flights = _flight_rows(conn, flight_ids)
        return _job_runs(conn, job_rows, flights)


def host_runs(
    store: Store, viewer: Viewer, host: str, *, limit: int = 100, before: int | None = None
) -> list[JobRun]:
    """The jobs of flights the viewer may see that ran on the host, newest first (``before``:
    of job ids below it)."""
    query = (
        select(t.job)
        .join(t.flight, t.flight.c.id == t.job.c.flight_id)
        .where(t.job.c.host == host, visible(viewer))
        .order_by(t.job.c.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(t.job.c.id < before)
    with store.engine.connect() as conn:
        job_rows = conn.execute(query).all()
        flights = _flight_rows(conn, sorted({j.flight_id for j in job_rows}))
        return _job_runs(conn, job_rows, flights)


def _flight_rows(conn: Connection, ids: Sequence[int]) -> dict[int, Any]:
    if not ids:
        return {}
    rows = conn.execute(select(t.flight).where(t.flight.c.id.in_(ids))).all()
    return {r.id: r for r in rows}


# --- hosts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Busy:
    flight: int
    job: str
    since: str | None

    def to_json(self) -> dict[str, Any]:
        return {"flight": self.flight, "job": self.job, "since": self.since}


@dataclass(frozen=True)
class HostState:
    """A host as lab.toml (or the store) declares it, and what it runs now."""

    name: str
    flags: tuple[str, ...]
    slots: int
    executor: str
    busy: tuple[Busy, ...] = ()
    held: bool = False
    """Busy with work the viewer may not see (an embargoed job): shown as ``reserved``."""
    in_lab: bool = True
    status: HostStatus | None = None
    """Quarantine and reservation, from the host registry (``labgate.hosts``)."""

    @property
    def state(self) -> str:
        """``quarantined`` or ``reserved`` (no new job goes there), else ``busy`` or ``free``."""
        if self.status is not None and self.status.state != "in service":
            return self.status.state
        if self.held:
            return "reserved"
        return "busy" if self.busy else "free"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "flags": list(self.flags),
            "slots": self.slots,
            "executor": self.executor,
            "state": self.state,
            "busy": [b.to_json() for b in self.busy],
            "in_lab": self.in_lab,
            "status": self.status.to_json() if self.status is not None else None,
        }


def host_states(store: Store, viewer: Viewer, declared: Sequence[Any]) -> list[HostState]:
    """Every host of lab.toml (``declared``: HostSpec) and every host the store knows, with the
    jobs holding it now (allocations not released); a host held by a job the viewer may not see
    is ``reserved``, without the job."""
    with store.engine.connect() as conn:
        known = {r.name: r for r in conn.execute(select(t.host))}
        names = [h.name for h in declared] + sorted(set(known) - {h.name for h in declared})
        busy: dict[str, list[Busy]] = {n: [] for n in names}
        held: set[str] = set()
        if names:
            query = (
                select(
                    t.allocation.c.host,
                    t.allocation.c.started,
                    t.job.c.name,
                    t.job.c.flight_id,
                    visible(viewer).label("seen"),
                )
                .join(t.job, t.job.c.id == t.allocation.c.job_id)
                .join(t.flight, t.flight.c.id == t.job.c.flight_id)
                .where(t.allocation.c.host.in_(names), t.allocation.c.released.is_(None))
                .order_by(t.allocation.c.id)
            )
            for r in conn.execute(query):
                if r.seen:
                    busy[r.host].append(Busy(r.flight_id, r.name, iso(r.started)))
                else:
                    held.add(r.host)
    statuses = HostRegistry(store.engine).statuses(names)
    out = []
    for spec in declared:
        out.append(
            HostState(
                spec.name,
                tuple(sorted(spec.flags)),
                spec.slots,
                spec.executor,
                tuple(busy[spec.name]),
                held=spec.name in held,
                status=statuses.get(spec.name),
            )
        )
    for name in names[len(declared) :]:
        row = known[name]
        out.append(
            HostState(
                name,
                tuple(json.loads(row.flags)),
                row.slots,
                row.executor,
                tuple(busy[name]),
                held=name in held,
                in_lab=False,
                status=statuses.get(name),
            )
        )
    return out


# --- branches ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BranchState:
    """A branch: its refs as the lab's mirror last saw them, its baseline, last flight, last
    push."""

    name: str
    tree: str
    staging_ref: str
    tested_ref: str
    staging_sha: str | None
    tested_sha: str | None
    baseline: int | None
    last_flight: FlightResult | None
    last_push: PushRecord | None
    pushes: tuple[PushRecord, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tree": self.tree,
            "staging": {"ref": self.staging_ref, "sha": self.staging_sha},
            "tested": {"ref": self.tested_ref, "sha": self.tested_sha},
            "baseline_flight": self.baseline,
            "last_flight": self.last_flight.to_json() if self.last_flight else None,
            "last_push": self.last_push.to_json() if self.last_push else None,
        }


def last_flight(store: Store, viewer: Viewer, branch: str) -> FlightResult | None:
    """The branch's newest flight the viewer may see (without its jobs), None before its
    first."""
    newest = flight_page(store, viewer, branch=branch, limit=1).rows
    return newest[0].flight if newest else None


# --- trends -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlightPassRate:
    flight: int
    passed: int
    finished: int

    @property
    def rate(self) -> float | None:
        return self.passed / self.finished if self.finished else None


def pass_rates(
    store: Store, viewer: Viewer, branch: str, *, limit: int = 200
) -> list[FlightPassRate]:
    """For the branch's last finished flights (oldest first): jobs passed out of jobs finished
    (skipped jobs count as passed, blocked ones are left out: their dependency is counted)."""
    ids_query = finished_flight_ids(branch).where(visible(viewer)).limit(limit)
    with store.engine.connect() as conn:
        ids = sorted(conn.execute(ids_query).scalars())
        counts = _job_counts(conn, ids)
    out = []
    for i in ids:
        c = counts[i]
        passed = c.get("pass", 0) + c.get("skip", 0)
        finished = passed + c.get("fail", 0) + c.get("broken", 0)
        out.append(FlightPassRate(i, passed, finished))
    return out


def job_names(store: Store, viewer: Viewer, branch: str) -> list[str]:
    """The job names of the branch's newest flight the viewer may see (what the trends page
    offers)."""
    with store.engine.connect() as conn:
        newest = conn.execute(
            select(func.max(t.flight.c.id)).where(t.flight.c.branch == branch, visible(viewer))
        ).scalar()
        if newest is None:
            return []
        return list(
            conn.execute(
                select(t.job.c.name).where(t.job.c.flight_id == newest).order_by(t.job.c.seq)
            ).scalars()
        )


def step_state(store: Store, step_id: int) -> tuple[Outcome, str | None, int | None, float | None]:
    """A step's outcome, stored log path, exit status and duration now (a live log polls it)."""
    columns = (t.step.c.outcome, t.step.c.log, t.step.c.exit_status, t.step.c.duration_s)
    with store.engine.connect() as conn:
        row = conn.execute(select(*columns).where(t.step.c.id == step_id)).first()
    if row is None:  # the flight was deleted meanwhile
        return Outcome.CANCELLED, None, None, None
    return Outcome(row.outcome), row.log, row.exit_status, row.duration_s


@dataclass(frozen=True)
class HostEventRow:
    """A host's event, with the flight and name of the job it is about (if any)."""

    event: HostEvent
    flight_id: int | None = None
    job: str | None = None


def host_events(store: Store, viewer: Viewer, host: str, *, limit: int = 50) -> list[HostEventRow]:
    """The host's quarantines, releases, reservations and health checks, newest first, each
    with its job's flight and name; those of jobs the viewer may not see are left out."""
    events = HostRegistry(store.engine).history(host, limit=limit)
    jobs = _event_jobs(store, viewer, [e.job_id for e in events if e.job_id is not None])
    out = []
    for e in events:
        job = jobs.get(e.job_id) if e.job_id is not None else None
        if job is None:  # no job, or one deleted since: the event stays, unlinked
            out.append(HostEventRow(e))
        elif job[2]:
            out.append(HostEventRow(e, job[0], job[1]))
    return out


def _event_jobs(
    store: Store, viewer: Viewer, job_ids: Sequence[int]
) -> dict[int, tuple[int, str, bool]]:
    """The flight id and name of each of these jobs, and whether the viewer may see it."""
    if not job_ids:
        return {}
    query = (
        select(t.job.c.id, t.job.c.flight_id, t.job.c.name, visible(viewer).label("seen"))
        .join(t.flight, t.flight.c.id == t.job.c.flight_id)
        .where(t.job.c.id.in_(sorted(set(job_ids))))
    )
    with store.engine.connect() as conn:
        return {r.id: (r.flight_id, r.name, bool(r.seen)) for r in conn.execute(query)}


# --- one flight, its pushes, bisections ---------------------------------------------------


def flight(store: Store, viewer: Viewer, flight_id: int) -> tuple[FlightResult, Embargo | None]:
    """The whole flight and its embargo while it lasts; FlightNotFound when it does not exist
    or the viewer may not see it (one exception, one message: a hidden flight is a missing
    one)."""
    sight = Users(store.engine).sight(viewer, flight_id)
    if sight is None:
        raise FlightNotFound(flight_id)
    return store.get_flight(flight_id), sight.embargo


def revision_seen(store: Store, viewer: Viewer, tree: str, sha: str) -> bool:
    """Whether a flight the viewer may see tested ``tree`` at ``sha`` (a prefix will do): the
    source of an embargoed revision is shown to its group only."""
    query = (
        select(t.flight_revision.c.flight_id)
        .join(t.flight, t.flight.c.id == t.flight_revision.c.flight_id)
        .where(
            t.flight_revision.c.tree == tree,
            t.flight_revision.c.sha.startswith(sha, autoescape=True),
            visible(viewer),
        )
        .limit(1)
    )
    with store.engine.connect() as conn:
        return conn.execute(query).first() is not None


def baseline(store: Store, viewer: Viewer, branch: str) -> int | None:
    """The branch's baseline flight, None when there is none the viewer may see."""
    found = store.baseline(branch)
    if found is None or not Users(store.engine).may_see(viewer, found):
        return None
    return found
