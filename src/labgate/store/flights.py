"""Flights, their jobs and steps, and a branch's history of them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    CTE,
    Connection,
    Select,
    Update,
    bindparam,
    case,
    insert,
    literal,
    null,
    select,
    update,
)

from labgate.model import (
    Blessing,
    Embargo,
    FlightResult,
    FlightState,
    JobResult,
    JobSpec,
    Outcome,
    Owner,
    StepResult,
    StepSpec,
    TestCaseResult,
)
from labgate.store import schema as t
from labgate.store.metrics import StepMetrics, replace_metrics
from labgate.store.values import (
    FlightNotFound,
    StoredJob,
    Tables,
    iso,
    now,
)


class FlightTables(Tables):
    """Flights, jobs, steps, test cases; cancel requests."""

    # --- flights ---------------------------------------------------------------------------

    def create_flight(
        self,
        branch: str,
        blessing: Blessing,
        revisions: Mapping[str, str],
        jobs: Sequence[JobSpec],
        embargo: Embargo | None = None,
        owner: Owner | None = None,
        admit: Callable[[Connection], None] | None = None,
    ) -> int:
        """Store a new queued flight with all its jobs and steps, in one transaction; under
        ``embargo``, only its group sees it until then, and an ``owner`` who keeps it to
        themselves alone sees it (see ``labgate.store.users``). ``admit`` runs first in that
        transaction and refuses by raising: a decision (a quota) and the flight it lets in
        are one (see ``labgate.store.access.admission``)."""
        with self.engine.begin() as conn:
            if admit is not None:
                admit(conn)
            flight_id = conn.execute(
                t.flight.insert().values(
                    branch=branch,
                    blessing=str(blessing),
                    state=str(FlightState.QUEUED),
                    created=now(),
                    embargo_group=embargo.group if embargo else None,
                    # in UTC, as every stored time: SQLite compares them as text
                    embargo_until=embargo.until.astimezone(UTC) if embargo else None,
                    owner=owner.user if owner else None,
                    owner_only=owner.only if owner else False,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            if revisions:
                conn.execute(
                    t.flight_revision.insert(),
                    [{"flight_id": flight_id, "tree": k, "sha": v} for k, v in revisions.items()],
                )
            if jobs:
                _insert_jobs(conn, flight_id, jobs)
        return int(flight_id)

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
                        StepSpec(s.name, s.command, s.timeout, s.results, s.metrics, s.repeat or 1)
                        for s in steps[j.id]
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
        """Mark a job preparing on ``host``; returns its attempt number (1 for the first run).
        (The pool starts the jobs it gives hosts in its claim: :func:`start_jobs`.)"""
        with self.engine.begin() as conn:
            return start_jobs(conn, {job_id: host})[job_id]

    def finish_job(
        self,
        job_id: int,
        outcome: Outcome,
        reason: str | None = None,
        *,
        attempt: int | None = None,
        conn: Connection | None = None,
    ) -> bool:
        """Set a job's final outcome and release its host allocation. With ``attempt``, only
        while the job is still live at that attempt: a controller whose lease was taken away
        does not overwrite the job's queued or newer attempt. Returns whether it did. In
        ``conn``'s transaction when given (a job that ran on a pool host ends with
        ``Store.end_job``), else in its own."""
        if conn is None:
            with self.engine.begin() as own:
                return self.finish_job(job_id, outcome, reason, attempt=attempt, conn=own)
        values = {"f_job": job_id, "f_outcome": str(outcome), "f_reason": reason, "f_at": now()}
        if attempt is None:
            done = conn.execute(_FINISH_JOB, values)
        else:
            done = conn.execute(FINISH_LIVE_JOB, {**values, "f_attempt": attempt})
        if done.rowcount == 0:
            return False
        conn.execute(_RELEASE_ALLOCATION, values)
        return True

    def block_job(self, job_id: int, reason: str) -> None:
        """A job that will not run because a dependency did not pass: it and its steps are
        ``blocked``."""
        with self.engine.begin() as conn:
            set_job_and_steps(conn, job_id, Outcome.BLOCKED, reason, finished=now())

    def start_step(self, step_id: int, log: str, *, job_running: int | None = None) -> None:
        """Mark a step running with its log path; ``job_running`` also marks its job running
        (the first step), in the same transaction."""
        if job_running is not None and self.engine.dialect.name == "postgresql":
            # one round trip instead of four (BEGIN, two statements, COMMIT), every job
            with self.reader.connect() as conn:
                values = {**_start_values(step_id, log), "running_job": job_running}
                conn.execute(_START_IN_RUNNING_JOB, values)
            return
        with self.engine.begin() as conn:
            _start_step(conn, step_id, log)
            if job_running is not None:
                conn.execute(_JOB_RUNNING, {"running_job": job_running})

    def finish_step(
        self,
        step_id: int,
        outcome: Outcome,
        *,
        exit_status: int | None,
        duration_s: float | None,
        reason: str | None = None,
        testcases: Iterable[TestCaseResult] | None = None,
        metrics: StepMetrics | None = None,
        then_start: tuple[int, str] | None = None,
    ) -> None:
        """Record how a step ended. ``testcases`` (for a step that declares ``results``)
        replace any an earlier attempt left; None leaves the step's test cases alone. So do
        ``metrics``, in the same transaction.
        ``then_start`` (step id, log) starts the next step at once: one statement for both
        (the controller's commonest write, one round trip without test cases)."""
        ended, values = _step_transition(
            step_id, outcome, exit_status, duration_s, reason, then_start
        )
        if testcases is None and metrics is None:
            with self.reader.connect() as conn:  # one statement: atomic without a transaction
                conn.execute(ended, values)
            return
        with self.engine.begin() as conn:
            conn.execute(ended, values)
            if metrics is not None:
                replace_metrics(conn, step_id, metrics)
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
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(t.cancel_request.c.flight_id).where(
                    t.cancel_request.c.flight_id.in_(list(flight_ids))
                )
            )
            return set(rows.scalars())

    def cancel_requested(self, flight_id: int) -> bool:
        """True when someone asked to cancel the flight."""
        return flight_id in self.cancel_requests([flight_id])


def set_job_and_steps(
    conn: Connection, job_id: int, outcome: Outcome, reason: str, *, finished: datetime | None
) -> None:
    """Give a job and all its steps ``outcome`` (``blocked``; ``queued`` again after its host was
    lost: its attempt stays counted, the lost attempt is kept in the host's history and its
    logs), in the caller's transaction."""
    conn.execute(
        update(t.job)
        .where(t.job.c.id == job_id)
        .values(outcome=str(outcome), reason=reason, finished=finished)
    )
    conn.execute(update(t.step).where(t.step.c.job_id == job_id).values(outcome=str(outcome)))


def _insert_jobs(conn: Connection, flight_id: int, jobs: Sequence[JobSpec]) -> None:
    """A flight's jobs, their runvars and their steps: three statements whatever the number of
    jobs (on PostgreSQL each is a round trip; one job at a time, a flight of a hundred jobs took
    three hundred)."""
    ids = (
        conn.execute(
            t.job.insert().returning(t.job.c.id, sort_by_parameter_order=True),
            [
                {
                    "flight_id": flight_id,
                    "seq": seq,
                    "name": spec.name,
                    "outcome": str(Outcome.QUEUED),
                    "requires": json.dumps(list(spec.requires)),
                    "depends": json.dumps(list(spec.depends)),
                    "exclusive": spec.exclusive,
                    "attempt": 0,
                }
                for seq, spec in enumerate(jobs)
            ],
        )
        .scalars()
        .all()
    )
    runvars = [
        {"job_id": job_id, "name": k, "value": v}
        for job_id, spec in zip(ids, jobs, strict=True)
        for k, v in spec.runvars
    ]
    if runvars:
        conn.execute(t.runvar.insert(), runvars)
    steps = [
        {
            "job_id": job_id,
            "seq": i,
            "name": s.name,
            "command": s.run,
            "timeout": s.timeout,
            "results": s.results,
            "metrics": s.metrics,
            "repeat": s.repeat if s.repeat > 1 else None,
            "outcome": str(Outcome.QUEUED),
        }
        for job_id, spec in zip(ids, jobs, strict=True)
        for i, s in enumerate(spec.steps)
    ]
    if steps:
        conn.execute(t.step.insert(), steps)


def start_jobs(conn: Connection, hosts: Mapping[int, str], *also: CTE) -> dict[int, int]:
    """Mark jobs preparing, each on its host (job id → host), with an open allocation each, in
    the caller's transaction; returns each job's attempt number (1 for its first run). On
    PostgreSQL one statement does it all, with the data-modifying CTEs ``also`` (the claim's
    slots), where SQLite runs each apart (``also`` is then ignored: the caller runs them)."""
    stamp = now()
    ids = list(hosts)
    started = (
        update(t.job)
        .where(t.job.c.id.in_(ids))
        .values(
            outcome=str(Outcome.PREPARING),
            host=case(dict(hosts), value=t.job.c.id),
            attempt=t.job.c.attempt + 1,
            started=stamp,
            finished=None,
            reason=None,
        )
        .returning(t.job.c.id, t.job.c.attempt, t.job.c.host)
    )
    if conn.dialect.name == "postgresql":
        done = started.cte("started")
        allocated = insert(t.allocation).from_select(
            ["job_id", "host", "slots", "started"],
            select(
                done.c.id,
                done.c.host,
                literal(1),
                bindparam("stamp", stamp, type_=t.allocation.c.started.type),
            ),
        )
        one = select(done.c.id, done.c.attempt).add_cte(allocated.cte("allocated"), *also)
        return {r.id: int(r.attempt) for r in conn.execute(one)}
    rows = conn.execute(started).all()
    conn.execute(
        t.allocation.insert(),
        [
            {"job_id": job_id, "host": host, "slots": 1, "started": stamp, "released": None}
            for job_id, host in hosts.items()
        ],
    )
    return {r.id: int(r.attempt) for r in rows}


# The controller's commonest writes, built once: making a statement (and its cache key) costs
# far more than running it (1.5 ms against 0.06 ms for a step's end here); each run then only
# binds its values.
_ENDED = {
    "outcome": bindparam("e_outcome"),
    "exit_status": bindparam("e_exit_status", type_=t.step.c.exit_status.type),
    "duration_s": bindparam("e_duration_s", type_=t.step.c.duration_s.type),
    "reason": bindparam("e_reason", type_=t.step.c.reason.type),
    "finished": bindparam("e_finished", type_=t.step.c.finished.type),
}
END_STEP = update(t.step).where(t.step.c.id == bindparam("ended_id")).values(**_ENDED)
_IS_ENDED = t.step.c.id == bindparam("ended_id")
# one UPDATE that ends a step and starts the next as _START_STEP does
_END_AND_START = (
    update(t.step)
    .where(t.step.c.id.in_([bindparam("ended_id"), bindparam("next_id")]))
    .values(
        outcome=case((_IS_ENDED, _ENDED["outcome"]), else_=literal(str(Outcome.RUNNING))),
        exit_status=case((_IS_ENDED, _ENDED["exit_status"]), else_=null()),
        duration_s=case((_IS_ENDED, _ENDED["duration_s"]), else_=null()),
        reason=case((_IS_ENDED, _ENDED["reason"]), else_=null()),
        finished=case((_IS_ENDED, _ENDED["finished"]), else_=null()),
        started=case(
            (_IS_ENDED, t.step.c.started),
            else_=bindparam("s_started", type_=t.step.c.started.type),
        ),
        log=case((_IS_ENDED, t.step.c.log), else_=bindparam("s_log", type_=t.step.c.log.type)),
    )
)
_START_STEP = (
    update(t.step)
    .where(t.step.c.id == bindparam("started_id"))
    .values(
        outcome=str(Outcome.RUNNING),
        log=bindparam("s_log"),
        started=bindparam("s_started", type_=t.step.c.started.type),
        finished=None,
        exit_status=None,
        duration_s=None,
        reason=None,
    )
)
# a job's end (see finish_job), built once: building these cost more than running them
_FINISH_JOB = (
    update(t.job)
    .where(t.job.c.id == bindparam("f_job"))
    .values(
        outcome=bindparam("f_outcome"),
        reason=bindparam("f_reason"),
        finished=bindparam("f_at", type_=t.job.c.finished.type),
    )
)
FINISH_LIVE_JOB = _FINISH_JOB.where(
    t.job.c.attempt == bindparam("f_attempt"),
    t.job.c.outcome.in_([str(Outcome.PREPARING), str(Outcome.RUNNING)]),
)
_RELEASE_ALLOCATION = (
    update(t.allocation)
    .where(t.allocation.c.job_id == bindparam("f_job"), t.allocation.c.released.is_(None))
    .values(released=bindparam("f_at", type_=t.allocation.c.released.type))
)
# (not ``job_id``: a bound name SQLAlchemy keeps for the column in an UPDATE's SET)
_JOB_RUNNING = (
    update(t.job).where(t.job.c.id == bindparam("running_job")).values(outcome=str(Outcome.RUNNING))
)
# a job's first step and the job itself marked running in one PostgreSQL statement (a
# data-modifying CTE, which SQLite does not have)
_START_IN_RUNNING_JOB = _START_STEP.add_cte(_JOB_RUNNING.cte("job_running"))


@dataclass(frozen=True)
class StepEnd:
    """How a job's last step ended, recorded with the job's end (see ``Store.end_job``)."""

    step_id: int
    outcome: Outcome
    exit_status: int | None
    duration_s: float | None
    reason: str | None

    def values(self) -> dict[str, Any]:
        """The bound values of :data:`END_STEP` for this end."""
        return _step_transition(
            self.step_id, self.outcome, self.exit_status, self.duration_s, self.reason, None
        )[1]


def _step_transition(
    step_id: int,
    outcome: Outcome,
    exit_status: int | None,
    duration_s: float | None,
    reason: str | None,
    then_start: tuple[int, str] | None,
) -> tuple[Update, dict[str, Any]]:
    """The statement (and its values) that ends step ``step_id`` and, with ``then_start``
    (step id, log), starts the next step as :func:`_start_step` does."""
    stamp = now()
    values: dict[str, Any] = {
        "ended_id": step_id,
        "e_outcome": str(outcome),
        "e_exit_status": exit_status,
        "e_duration_s": duration_s,
        "e_reason": reason,
        "e_finished": stamp,
    }
    if then_start is None:
        return END_STEP, values
    next_id, log = then_start
    return _END_AND_START, values | {"next_id": next_id, "s_started": stamp, "s_log": log}


def _start_step(conn: Connection, step_id: int, log: str) -> None:
    conn.execute(_START_STEP, _start_values(step_id, log))


def _start_values(step_id: int, log: str) -> dict[str, Any]:
    return {
        "started_id": step_id,
        "s_log": log,
        "s_started": now(),
    }


def step_from_row(row: Any, cases: Sequence[TestCaseResult] = ()) -> StepResult:
    """A stored step (a row of ``step``; its command when the row has it) with these test
    cases."""
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
        command=row._mapping.get("command"),
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
