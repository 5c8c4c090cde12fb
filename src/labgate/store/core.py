"""The store's core: every flight, job, step and result, in SQLite (default) or PostgreSQL.

SQLAlchemy 2 Core over the tables in ``schema``; the schema is created and upgraded by the Alembic
migrations in ``migrations`` (beside this file) when a store is opened. Every write is one
transaction, so a controller killed at any point leaves the store consistent: a flight's jobs and
steps are created with the flight, and later only their outcomes change in place.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Select, create_engine, event, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from labgate.model import (
    BisectionRecord,
    Blessing,
    FlightResult,
    FlightState,
    HostSpec,
    JobResult,
    JobSpec,
    Outcome,
    PushRecord,
    StepResult,
    StepSpec,
    TestCaseResult,
)
from labgate.store import schema as t

if TYPE_CHECKING:
    from labgate.store.hosts import HostRegistry
    from labgate.store.review import ReviewQueue
    from labgate.store.slots import Allocator


class StoreError(Exception):
    """A problem with the store a user can act on (unreachable database, unknown flight)."""


class FlightNotFound(StoreError):
    def __init__(self, flight_id: int) -> None:
        super().__init__(f"flight {flight_id} does not exist in this lab's store")
        self.flight_id = flight_id


@dataclass(frozen=True)
class JobState:
    """Where a job stands, without its steps (moving a flight along)."""

    id: int
    name: str
    outcome: Outcome
    requires: frozenset[str]
    depends: tuple[str, ...]
    attempt: int


@dataclass(frozen=True)
class StoredJob:
    """A job as the runner needs it: its id, its plan (as stored) and where it stands."""

    id: int
    spec: JobSpec
    outcome: Outcome
    attempt: int
    step_ids: tuple[int, ...]


def now() -> datetime:
    return datetime.now(UTC)


def process_owner() -> str:
    """This process as the holder of a lease: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(owner: str) -> bool:
    """Whether a lease holder (``host:pid``, maybe followed by ``:tag``) is a process of this
    machine that no longer exists (a controller killed here): only then can its leases be cut
    short safely."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


ACTIVE_FLIGHT_STATES = ("queued", "running")


def aware(value: datetime) -> datetime:
    """A stored time with its time zone (SQLite gives naive datetimes back, stored as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def iso(value: datetime | None) -> str | None:
    """A stored time as ISO 8601 text (UTC), or None."""
    if value is None:
        return None
    return aware(value).isoformat(timespec="seconds")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
_REVISION = re.compile(r"^(down_revision|revision)\s*=\s*['\"]?([^'\"\s]+)['\"]?", re.MULTILINE)


def head_revision() -> str | None:
    """The newest migration's revision, read from the migration files (without Alembic)."""
    revisions, parents = set(), set()
    for path in MIGRATIONS.glob("*.py"):
        found: dict[str, str] = {m[1]: m[2] for m in _REVISION.finditer(path.read_text())}
        if "revision" in found:
            revisions.add(found["revision"])
            if found.get("down_revision") not in (None, "None"):
                parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


_MIGRATE_LOCK = 0x6C616267617465  # "labgate": the advisory lock PostgreSQL migrations hold


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (creating it in an empty database). A store
    already at the newest one is left alone without loading Alembic (start-up time)."""
    head = head_revision()
    if head is not None and _current_revision(engine) == head:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "labgate.store:migrations")
    with engine.connect() as connection:
        # one process migrates at a time; the others wait for it, then find the schema at head
        # (three commands started at once on a fresh store used to create its tables together)
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


class Store:
    """Reads and writes flights. Open one with :meth:`open`; close it when done."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> Store:
        engine = make_engine(url)
        try:
            migrate(engine)
        except Exception as error:
            engine.dispose()
            raise StoreError(
                f"cannot open the store at {make_url(url).render_as_string(hide_password=True)}:"
                f" {error}"
            ) from error
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @functools.cached_property
    def hosts(self) -> HostRegistry:
        """Host state and history (quarantine, reservations, events)."""
        from labgate.store.hosts import HostRegistry

        return HostRegistry(self.engine)

    @functools.cached_property
    def review(self) -> ReviewQueue:
        """The review queue."""
        from labgate.store.review import ReviewQueue

        return ReviewQueue(self)

    def slots(self, hosts: Sequence[HostSpec], owner: str, **options: Any) -> Allocator:
        """The host slots this lab's controllers share, as controller ``owner`` claims them
        (see :class:`labgate.store.slots.Allocator` for the options)."""
        from labgate.store.slots import Allocator

        return Allocator(self.engine, hosts, owner, **options)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- flights ---------------------------------------------------------------------------

    def create_flight(
        self,
        branch: str,
        blessing: Blessing,
        revisions: Mapping[str, str],
        jobs: Sequence[JobSpec],
    ) -> int:
        """Store a new queued flight with all its jobs and steps, in one transaction."""
        with self.engine.begin() as conn:
            flight_id = conn.execute(
                t.flight.insert().values(
                    branch=branch,
                    blessing=str(blessing),
                    state=str(FlightState.QUEUED),
                    created=now(),
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            if revisions:
                conn.execute(
                    t.flight_revision.insert(),
                    [{"flight_id": flight_id, "tree": k, "sha": v} for k, v in revisions.items()],
                )
            for seq, spec in enumerate(jobs):
                self._insert_job(conn, flight_id, seq, spec)
        return int(flight_id)

    def _insert_job(self, conn: Connection, flight_id: int, seq: int, spec: JobSpec) -> None:
        job_id = conn.execute(
            t.job.insert().values(
                flight_id=flight_id,
                seq=seq,
                name=spec.name,
                outcome=str(Outcome.QUEUED),
                requires=json.dumps(list(spec.requires)),
                depends=json.dumps(list(spec.depends)),
                exclusive=spec.exclusive,
                attempt=0,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        if spec.runvars:
            conn.execute(
                t.runvar.insert(),
                [{"job_id": job_id, "name": k, "value": v} for k, v in spec.runvars],
            )
        conn.execute(
            t.step.insert(),
            [
                {
                    "job_id": job_id,
                    "seq": i,
                    "name": s.name,
                    "command": s.run,
                    "timeout": s.timeout,
                    "results": s.results,
                    "outcome": str(Outcome.QUEUED),
                }
                for i, s in enumerate(spec.steps)
            ],
        )

    def set_flight_state(
        self, flight_id: int, state: FlightState, outcome: Outcome | None = None
    ) -> None:
        values: dict[str, Any] = {"state": str(state)}
        if state is FlightState.RUNNING:
            values["started"] = now()
            values["finished"] = None
            values["outcome"] = None
        elif state in (FlightState.FINISHED, FlightState.CANCELLED):
            values["finished"] = now()
            values["outcome"] = str(outcome) if outcome is not None else None
        with self.engine.begin() as conn:
            conn.execute(t.flight.update().where(t.flight.c.id == flight_id).values(**values))

    def mark_running(self, flight_id: int) -> None:
        """A queued flight's first job started: the flight is running (from now)."""
        with self.engine.begin() as conn:
            conn.execute(
                t.flight.update()
                .where(t.flight.c.id == flight_id, t.flight.c.state == str(FlightState.QUEUED))
                .values(state=str(FlightState.RUNNING), started=now(), finished=None, outcome=None)
            )

    def get_flight(self, flight_id: int) -> FlightResult:
        """The whole flight: revisions, jobs with runvars, steps with test cases."""
        flights = self.get_flights([flight_id])
        if not flights:
            raise FlightNotFound(flight_id)
        return flights[0]

    def get_flights(self, flight_ids: Sequence[int]) -> list[FlightResult]:
        """Whole flights, in the order asked (ids that do not exist are left out), in a fixed
        number of queries however many there are: history reads hundreds at a time."""
        if not flight_ids:
            return []
        with self.engine.connect() as conn:
            rows = {
                r.id: r for r in conn.execute(select(t.flight).where(t.flight.c.id.in_(flight_ids)))
            }
            found = [i for i in flight_ids if i in rows]
            revisions = revisions_of(conn, found)
            jobs = self._jobs(conn, found)
        return [flight_from_row(rows[i], revisions[i], jobs[i]) for i in found]

    def list_flights(
        self,
        branch: str | None = None,
        *,
        blessing: Blessing | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[FlightResult]:
        """Flights newest first, without their jobs (use :meth:`get_flight` for those)."""
        query = select(t.flight).order_by(t.flight.c.id.desc()).limit(limit)
        if branch is not None:
            query = query.where(t.flight.c.branch == branch)
        if blessing is not None:
            query = query.where(t.flight.c.blessing == str(blessing))
        if before is not None:
            query = query.where(t.flight.c.id < before)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            revisions = revisions_of(conn, [r.id for r in rows])
        return [flight_from_row(r, revisions[r.id], ()) for r in rows]

    def _jobs(
        self, conn: Connection, flight_ids: Sequence[int]
    ) -> dict[int, tuple[JobResult, ...]]:
        """The jobs of each flight with their runvars, steps and test cases (four queries)."""
        of_flights = t.job.c.flight_id.in_(flight_ids)
        job_rows = conn.execute(
            select(t.job).where(of_flights).order_by(t.job.c.flight_id, t.job.c.seq)
        ).all()
        runvars: dict[int, dict[str, str]] = {j.id: {} for j in job_rows}
        steps: dict[int, list[Any]] = {j.id: [] for j in job_rows}
        cases: dict[int, list[TestCaseResult]] = {}
        if job_rows:
            for r in conn.execute(
                select(t.runvar).join(t.job, t.job.c.id == t.runvar.c.job_id).where(of_flights)
            ):
                runvars[r.job_id][r.name] = r.value
            for s in conn.execute(
                select(t.step)
                .join(t.job, t.job.c.id == t.step.c.job_id)
                .where(of_flights)
                .order_by(t.step.c.seq)
            ):
                steps[s.job_id].append(s)
            for c in conn.execute(
                select(t.testcase)
                .join(t.step, t.step.c.id == t.testcase.c.step_id)
                .join(t.job, t.job.c.id == t.step.c.job_id)
                .where(of_flights)
                .order_by(t.testcase.c.id)
            ):
                cases.setdefault(c.step_id, []).append(
                    TestCaseResult(c.name, Outcome(c.outcome), c.duration_s, c.message)
                )
        out: dict[int, list[JobResult]] = {i: [] for i in flight_ids}
        for j in job_rows:
            out[j.flight_id].append(
                JobResult(
                    id=j.id,
                    name=j.name,
                    outcome=Outcome(j.outcome),
                    host=j.host,
                    runvars=runvars[j.id],
                    steps=tuple(step_from_row(s, cases.get(s.id, ())) for s in steps[j.id]),
                    depends=tuple(json.loads(j.depends)),
                    requires=tuple(json.loads(j.requires)),
                    exclusive=bool(j.exclusive),
                    reason=j.reason,
                    started=iso(j.started),
                    finished=iso(j.finished),
                )
            )
        return {i: tuple(jobs) for i, jobs in out.items()}

    def flight_jobs(self, flight_id: int) -> list[StoredJob]:
        """The flight's jobs as planned, with where each stands, for the runner."""
        with self.engine.connect() as conn:
            if (
                conn.execute(select(t.flight.c.id).where(t.flight.c.id == flight_id)).first()
                is None
            ):
                raise FlightNotFound(flight_id)
            job_rows = conn.execute(
                select(t.job).where(t.job.c.flight_id == flight_id).order_by(t.job.c.seq)
            ).all()
            ids = [j.id for j in job_rows]
            runvars: dict[int, list[tuple[str, str]]] = {i: [] for i in ids}
            steps: dict[int, list[Any]] = {i: [] for i in ids}
            if ids:
                for r in conn.execute(
                    select(t.runvar).where(t.runvar.c.job_id.in_(ids)).order_by(t.runvar.c.name)
                ):
                    runvars[r.job_id].append((r.name, r.value))
                for s in conn.execute(
                    select(t.step).where(t.step.c.job_id.in_(ids)).order_by(t.step.c.seq)
                ):
                    steps[s.job_id].append(s)
        return [
            StoredJob(
                id=j.id,
                spec=JobSpec(
                    name=j.name,
                    steps=tuple(
                        StepSpec(s.name, s.command, s.timeout, s.results) for s in steps[j.id]
                    ),
                    requires=tuple(json.loads(j.requires)),
                    depends=tuple(json.loads(j.depends)),
                    runvars=tuple(runvars[j.id]),
                    exclusive=bool(j.exclusive),
                ),
                outcome=Outcome(j.outcome),
                attempt=j.attempt,
                step_ids=tuple(s.id for s in steps[j.id]),
            )
            for j in job_rows
        ]

    # --- jobs and steps ---------------------------------------------------------------------

    def start_job(self, job_id: int, host: str) -> int:
        """Mark a job preparing on ``host``; returns its attempt number (1 for the first run)."""
        with self.engine.begin() as conn:
            attempt = conn.execute(
                update(t.job)
                .where(t.job.c.id == job_id)
                .values(
                    outcome=str(Outcome.PREPARING),
                    host=host,
                    attempt=t.job.c.attempt + 1,
                    started=now(),
                    finished=None,
                    reason=None,
                )
                .returning(t.job.c.attempt)
            ).scalar()
            conn.execute(
                t.allocation.insert().values(
                    job_id=job_id, host=host, slots=1, started=now(), released=None
                )
            )
        return int(attempt or 1)

    def finish_job(
        self,
        job_id: int,
        outcome: Outcome,
        reason: str | None = None,
        *,
        attempt: int | None = None,
    ) -> None:
        """Set a job's final outcome and release its host allocation. With ``attempt``, only
        while the job is still live at that attempt: a controller whose lease was taken away
        does not overwrite the job's queued or newer attempt."""
        stamp = now()
        where = [t.job.c.id == job_id]
        if attempt is not None:
            live = [str(Outcome.PREPARING), str(Outcome.RUNNING)]
            where += [t.job.c.attempt == attempt, t.job.c.outcome.in_(live)]
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.job)
                .where(*where)
                .values(outcome=str(outcome), reason=reason, finished=stamp)
            )
            if done.rowcount == 0:
                return
            conn.execute(
                update(t.allocation)
                .where(t.allocation.c.job_id == job_id, t.allocation.c.released.is_(None))
                .values(released=stamp)
            )

    def block_job(self, job_id: int, reason: str) -> None:
        """A job that will not run because a dependency did not pass: it and its steps are
        ``blocked``."""
        stamp = now()
        with self.engine.begin() as conn:
            conn.execute(
                update(t.job)
                .where(t.job.c.id == job_id)
                .values(outcome=str(Outcome.BLOCKED), reason=reason, finished=stamp)
            )
            conn.execute(
                update(t.step).where(t.step.c.job_id == job_id).values(outcome=str(Outcome.BLOCKED))
            )

    def start_step(self, step_id: int, log: str, *, job_running: int | None = None) -> None:
        """Mark a step running with its log path; ``job_running`` also marks its job running
        (the first step), in the same transaction."""
        with self.engine.begin() as conn:
            _start_step(conn, step_id, log)
            if job_running is not None:
                conn.execute(
                    update(t.job)
                    .where(t.job.c.id == job_running)
                    .values(outcome=str(Outcome.RUNNING))
                )

    def finish_step(
        self,
        step_id: int,
        outcome: Outcome,
        *,
        exit_status: int | None,
        duration_s: float | None,
        reason: str | None = None,
        testcases: Iterable[TestCaseResult] | None = None,
        then_start: tuple[int, str] | None = None,
    ) -> None:
        """Record how a step ended. ``testcases`` (for a step that declares ``results``)
        replace any an earlier attempt left; None leaves the step's test cases alone.
        ``then_start`` (step id, log) starts the next step in the same transaction."""
        with self.engine.begin() as conn:
            if then_start is not None:
                _start_step(conn, *then_start)
            conn.execute(
                update(t.step)
                .where(t.step.c.id == step_id)
                .values(
                    outcome=str(outcome),
                    exit_status=exit_status,
                    duration_s=duration_s,
                    reason=reason,
                    finished=now(),
                )
            )
            if testcases is None:
                return
            conn.execute(t.testcase.delete().where(t.testcase.c.step_id == step_id))
            rows = [
                {
                    "step_id": step_id,
                    "name": c.name,
                    "outcome": str(c.outcome),
                    "duration_s": c.duration_s,
                    "message": c.message,
                }
                for c in testcases
            ]
            if rows:
                conn.execute(t.testcase.insert(), rows)

    def set_steps(self, step_ids: Sequence[int], outcome: Outcome) -> None:
        """Give steps that will not run (after the step that ended their job) an outcome."""
        if step_ids:
            with self.engine.begin() as conn:
                conn.execute(
                    update(t.step).where(t.step.c.id.in_(step_ids)).values(outcome=str(outcome))
                )

    def requeue_job(self, job_id: int, reason: str) -> None:
        """Queue a job again after its host was lost (its attempt stays counted, its steps are
        queued again; the lost attempt is kept in the host's history and its logs)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.job)
                .where(t.job.c.id == job_id)
                .values(outcome=str(Outcome.QUEUED), reason=reason, finished=None)
            )
            conn.execute(
                update(t.step).where(t.step.c.job_id == job_id).values(outcome=str(Outcome.QUEUED))
            )

    def reset_unfinished(self, flight_id: int) -> list[str]:
        """Make every job of the flight that did not finish (interrupted or cancelled) queued
        again, with its steps, and release its allocations. Finished jobs are left alone.
        Returns the names of the jobs reset."""
        again = [str(o) for o in (Outcome.PREPARING, Outcome.RUNNING, Outcome.CANCELLED)]
        stamp = now()
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(t.job.c.id, t.job.c.name).where(
                    t.job.c.flight_id == flight_id, t.job.c.outcome.in_(again)
                )
            ).all()
            ids = [r.id for r in rows]
            if ids:
                conn.execute(
                    update(t.job)
                    .where(t.job.c.id.in_(ids))
                    .values(outcome=str(Outcome.QUEUED), finished=None)
                )
                conn.execute(
                    update(t.step)
                    .where(t.step.c.job_id.in_(ids))
                    .values(outcome=str(Outcome.QUEUED))
                )
                conn.execute(
                    update(t.allocation)
                    .where(t.allocation.c.job_id.in_(ids), t.allocation.c.released.is_(None))
                    .values(released=stamp)
                )
        return [r.name for r in rows]

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

    # --- history -----------------------------------------------------------------------------

    def branch_history(
        self,
        branch: str,
        *,
        limit: int = 100,
        before: int | None = None,
        blessings: Sequence[Blessing] | None = None,
    ) -> list[FlightResult]:
        """The branch's finished flights (of these blessings), newest first, each with its jobs
        and steps."""
        query = finished_flight_ids(branch).limit(limit)
        if before is not None:
            query = query.where(t.flight.c.id < before)
        if blessings is not None:
            query = query.where(t.flight.c.blessing.in_([str(b) for b in blessings]))
        with self.engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
        return self.get_flights(ids)

    def flights_at(self, branch: str, revisions: Mapping[str, str]) -> list[FlightResult]:
        """Finished flights of the branch that tested exactly this revision tuple, newest first
        (a bisection reuses every result already stored for a tuple)."""
        query = finished_flight_ids(branch)
        for tree, sha in revisions.items():
            alias = t.flight_revision.alias()
            query = query.join(
                alias,
                (alias.c.flight_id == t.flight.c.id)
                & (alias.c.tree == tree)
                & (alias.c.sha == sha),
            )
        with self.engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
        return [f for f in self.get_flights(ids) if dict(f.revisions) == dict(revisions)]

    # --- the push gate ----------------------------------------------------------------------

    def baseline(self, branch: str) -> int | None:
        """The flight the branch's new flights are compared with (the last one pushed)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(t.branch_state.c.baseline_flight_id).where(t.branch_state.c.branch == branch)
            ).scalar()

    def _ensure_branch_state(self, conn: Connection, branch: str) -> None:
        exists = conn.execute(
            select(t.branch_state.c.branch).where(t.branch_state.c.branch == branch)
        ).first()
        if exists is None:
            try:
                with conn.begin_nested():
                    conn.execute(t.branch_state.insert().values(branch=branch, updated=now()))
            except IntegrityError:  # another controller inserted it first: fine
                pass

    def set_baseline(self, branch: str, flight_id: int) -> None:
        with self.engine.begin() as conn:
            self._set_baseline(conn, branch, flight_id)

    def _set_baseline(self, conn: Connection, branch: str, flight_id: int) -> None:
        self._ensure_branch_state(conn, branch)
        conn.execute(
            update(t.branch_state)
            .where(t.branch_state.c.branch == branch)
            .values(baseline_flight_id=flight_id, updated=now())
        )

    def acquire_gate(self, branch: str, owner: str, lease_s: float) -> bool:
        """Take (or renew) the branch's gate lease for ``owner``; False if another live owner
        holds it. Two gate processes on one branch never run it at once."""
        stamp = now()
        with self.engine.begin() as conn:
            self._ensure_branch_state(conn, branch)
            free = (
                t.branch_state.c.gate_owner.is_(None)
                | (t.branch_state.c.gate_owner == owner)
                | (t.branch_state.c.gate_lease_until < stamp)
            )
            result = conn.execute(
                update(t.branch_state)
                .where(t.branch_state.c.branch == branch, free)
                .values(gate_owner=owner, gate_lease_until=stamp + timedelta(seconds=lease_s))
            )
            return result.rowcount == 1

    def release_gate(self, branch: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.branch_state)
                .where(t.branch_state.c.branch == branch, t.branch_state.c.gate_owner == owner)
                .values(gate_owner=None, gate_lease_until=None)
            )

    def record_push(
        self,
        branch: str,
        flight_id: int,
        tree: str,
        sha: str,
        previous_sha: str | None,
        status: str,
        message: str | None = None,
    ) -> int:
        """Record a push decision; a successful push makes the flight the branch's baseline in
        the same transaction."""
        with self.engine.begin() as conn:
            push_id = conn.execute(
                t.push.insert().values(
                    branch=branch,
                    flight_id=flight_id,
                    tree=tree,
                    sha=sha,
                    previous_sha=previous_sha,
                    status=status,
                    message=message,
                    created=now(),
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            if status == "pushed":
                self._set_baseline(conn, branch, flight_id)
        return int(push_id)

    def pushes(
        self, branch: str | None = None, *, flight_id: int | None = None, limit: int = 50
    ) -> list[PushRecord]:
        """Push decisions, newest first, of a branch or of one flight."""
        query = select(t.push).order_by(t.push.c.id.desc()).limit(limit)
        if branch is not None:
            query = query.where(t.push.c.branch == branch)
        if flight_id is not None:
            query = query.where(t.push.c.flight_id == flight_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            PushRecord(
                r.id,
                r.branch,
                r.flight_id,
                r.tree,
                r.sha,
                r.previous_sha,
                r.status,
                r.message,
                iso(r.created) or "",
            )
            for r in rows
        ]

    def record_verdict(
        self, flight_id: int, baseline_flight_id: int | None, push_allowed: bool, data: Any
    ) -> None:
        """Store the verdict of a flight (its JSON form), replacing an earlier one."""
        with self.engine.begin() as conn:
            conn.execute(t.verdict.delete().where(t.verdict.c.flight_id == flight_id))
            conn.execute(
                t.verdict.insert().values(
                    flight_id=flight_id,
                    baseline_flight_id=baseline_flight_id,
                    push_allowed=push_allowed,
                    data=json.dumps(data),
                    created=now(),
                )
            )

    def verdict(self, flight_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.verdict).where(t.verdict.c.flight_id == flight_id)).first()
        if row is None:
            return None
        return {
            "flight": row.flight_id,
            "baseline_flight": row.baseline_flight_id,
            "push_allowed": bool(row.push_allowed),
            "data": json.loads(row.data),
        }

    # --- bisections -------------------------------------------------------------------------

    def create_bisection(
        self,
        branch: str,
        job: str,
        step: str | None,
        testcase: str | None,
        flight_id: int,
        baseline_flight_id: int | None,
    ) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    t.bisection.insert().values(
                        branch=branch,
                        job=job,
                        step=step,
                        testcase=testcase,
                        flight_id=flight_id,
                        baseline_flight_id=baseline_flight_id,
                        state="running",
                        executions=0,
                        rounds=0,
                        flights="[]",
                        graph=json.dumps({"nodes": [], "edges": []}),
                        created=now(),
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )

    def update_bisection(
        self,
        bisection_id: int,
        *,
        state: str,
        executions: int,
        rounds: int,
        flights: Sequence[int],
        graph: Mapping[str, Any],
        culprit_tree: str | None = None,
        culprit_commit: str | None = None,
        confidence: float | None = None,
        reason: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "state": state,
            "executions": executions,
            "rounds": rounds,
            "flights": json.dumps(list(flights)),
            "graph": json.dumps(graph),
            "culprit_tree": culprit_tree,
            "culprit_commit": culprit_commit,
            "confidence": confidence,
            "reason": reason,
        }
        if state != "running":
            values["finished"] = now()
        with self.engine.begin() as conn:
            conn.execute(
                update(t.bisection).where(t.bisection.c.id == bisection_id).values(**values)
            )

    def bisection(self, bisection_id: int) -> BisectionRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.bisection).where(t.bisection.c.id == bisection_id)).first()
        if row is None:
            raise StoreError(f"bisection {bisection_id} does not exist in this lab's store")
        return _bisection(row)

    def bisections(
        self, branch: str | None = None, *, flight_id: int | None = None, limit: int = 50
    ) -> list[BisectionRecord]:
        query = select(t.bisection).order_by(t.bisection.c.id.desc()).limit(limit)
        if branch is not None:
            query = query.where(t.bisection.c.branch == branch)
        if flight_id is not None:
            query = query.where(t.bisection.c.flight_id == flight_id)
        with self.engine.connect() as conn:
            return [_bisection(r) for r in conn.execute(query)]

    # --- cancel requests (the dashboard's "cancel"; the runner polls them) -------------------

    def request_cancel(self, flight_id: int, source: str) -> bool:
        """Ask the runner of an unfinished flight to cancel it; False if the flight is already
        finished or cancelled. ``source`` says who asked (for the record). Idempotent."""
        with self.engine.begin() as conn:
            state = conn.execute(
                select(t.flight.c.state).where(t.flight.c.id == flight_id)
            ).scalar()
            if state is None:
                raise FlightNotFound(flight_id)
            if state in (str(FlightState.FINISHED), str(FlightState.CANCELLED)):
                return False
            asked = conn.execute(
                select(t.cancel_request.c.flight_id).where(
                    t.cancel_request.c.flight_id == flight_id
                )
            ).first()
            if asked is None:
                conn.execute(
                    t.cancel_request.insert().values(
                        flight_id=flight_id, requested=now(), source=source
                    )
                )
        return True

    def clear_cancel_request(self, flight_id: int) -> None:
        """Forget the flight's cancel request once the runner acted on it (a later ``flight
        resume`` then runs the flight again instead of cancelling it at once)."""
        with self.engine.begin() as conn:
            conn.execute(t.cancel_request.delete().where(t.cancel_request.c.flight_id == flight_id))

    def cancel_requests(self, flight_ids: Sequence[int]) -> set[int]:
        """Which of these flights someone asked to cancel (the flights service polls this)."""
        if not flight_ids:
            return set()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.cancel_request.c.flight_id).where(
                    t.cancel_request.c.flight_id.in_(list(flight_ids))
                )
            )
            return set(rows.scalars())

    def cancel_requested(self, flight_id: int) -> bool:
        """True when someone asked to cancel the flight."""
        return flight_id in self.cancel_requests([flight_id])

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
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.flight.c.id)
                .join(t.pool_flight, t.pool_flight.c.flight_id == t.flight.c.id)
                .where(t.flight.c.state.in_(ACTIVE_FLIGHT_STATES))
                .order_by(t.flight.c.id)
            )
            return list(rows.scalars())

    def job_states(
        self, flight_ids: Sequence[int], *, plans: bool = True
    ) -> dict[int, list[JobState]]:
        """Where each job of these flights stands, without steps: what moving a flight along
        needs (cheap enough to ask after every job). Without ``plans``, ``requires`` and
        ``depends`` are left empty (a caller that has them already)."""
        out: dict[int, list[JobState]] = {i: [] for i in flight_ids}
        if not flight_ids:
            return out
        columns = [t.job.c.id, t.job.c.flight_id, t.job.c.name, t.job.c.outcome, t.job.c.attempt]
        if plans:
            columns += [t.job.c.requires, t.job.c.depends]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*columns)
                .where(t.job.c.flight_id.in_(list(flight_ids)))
                .order_by(t.job.c.flight_id, t.job.c.seq)
            )
            for r in rows:
                out[r.flight_id].append(
                    JobState(
                        r.id,
                        r.name,
                        Outcome(r.outcome),
                        frozenset(json.loads(r.requires)) if plans else frozenset(),
                        tuple(json.loads(r.depends)) if plans else (),
                        r.attempt,
                    )
                )
        return out

    def lost_hosts(self, job_ids: Sequence[int]) -> dict[int, set[str]]:
        """For each job, the hosts an attempt of it was lost on (it is not given them again)."""
        lost: dict[int, set[str]] = {}
        if not job_ids:
            return lost
        with self.engine.connect() as conn:
            for r in conn.execute(
                select(t.host_event.c.job_id, t.host_event.c.host).where(
                    t.host_event.c.job_id.in_(list(job_ids)),
                    t.host_event.c.kind == "job",
                    t.host_event.c.outcome == str(Outcome.BROKEN),
                )
            ):
                lost.setdefault(r.job_id, set()).add(r.host)
        return lost

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


def _bisection(row: Any) -> BisectionRecord:
    return BisectionRecord(
        id=row.id,
        branch=row.branch,
        job=row.job,
        step=row.step,
        testcase=row.testcase,
        flight_id=row.flight_id,
        baseline_flight_id=row.baseline_flight_id,
        state=row.state,
        culprit_tree=row.culprit_tree,
        culprit_commit=row.culprit_commit,
        confidence=row.confidence,
        executions=row.executions,
        rounds=row.rounds,
        reason=row.reason,
        flights=tuple(json.loads(row.flights)),
        graph=json.loads(row.graph),
        created=iso(row.created) or "",
        finished=iso(row.finished),
    )


def _start_step(conn: Connection, step_id: int, log: str) -> None:
    conn.execute(
        update(t.step)
        .where(t.step.c.id == step_id)
        .values(
            outcome=str(Outcome.RUNNING),
            log=log,
            started=now(),
            finished=None,
            exit_status=None,
            duration_s=None,
            reason=None,
        )
    )


def step_from_row(row: Any, cases: Sequence[TestCaseResult] = ()) -> StepResult:
    """A stored step (a row of ``step``, its command not needed) with these test cases."""
    return StepResult(
        id=row.id,
        name=row.name,
        outcome=Outcome(row.outcome),
        exit_status=row.exit_status,
        duration_s=row.duration_s,
        log=row.log,
        reason=row.reason,
        started=iso(row.started),
        finished=iso(row.finished),
        testcases=tuple(cases),
    )


def finished_flight_ids(branch: str) -> Select[Any]:
    """A query of the ids of the branch's finished flights, newest first."""
    return (
        select(t.flight.c.id)
        .where(t.flight.c.branch == branch, t.flight.c.state == str(FlightState.FINISHED))
        .order_by(t.flight.c.id.desc())
    )


def revisions_of(conn: Connection, flight_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """The revision tuple ({tree: sha}) of each flight, in one query."""
    out: dict[int, dict[str, str]] = {i: {} for i in flight_ids}
    if flight_ids:
        rows = conn.execute(
            select(t.flight_revision).where(t.flight_revision.c.flight_id.in_(flight_ids))
        )
        for r in rows:
            out[r.flight_id][r.tree] = r.sha
    return out


def flight_from_row(
    row: Any, revisions: Mapping[str, str], jobs: tuple[JobResult, ...]
) -> FlightResult:
    return FlightResult(
        id=row.id,
        branch=row.branch,
        blessing=Blessing(row.blessing),
        revisions=dict(revisions),
        state=FlightState(row.state),
        outcome=Outcome(row.outcome) if row.outcome else None,
        started=iso(row.started),
        finished=iso(row.finished),
        jobs=jobs,
    )
