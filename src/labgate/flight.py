"""Planning a flight and running one of its jobs.

``plan_flight`` resolves the revision tuple and stores a queued flight with every job and step;
``JobRunner.run_job`` runs one job on the host it was given: a fresh work dir with every tree
checked out and its dependencies' artifacts, its steps in order, every outcome written to the
store as it happens. Which job runs where and when is the flights service's
(:mod:`labgate.flights`): every driver of work goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TypeVar

from sqlalchemy import Connection

from labgate.config import Lab
from labgate.executor import (
    SESSIONS,
    Executor,
    HostLost,
    JobSession,
    LocalExecutor,
    StepRun,
    step_environment,
)
from labgate.git import GitError, Mirrors, ensure_commit
from labgate.model import (
    EMBARGO_HOST_FLAG,
    Blessing,
    DisabledTest,
    Embargo,
    FlightResult,
    HostSpec,
    JobSpec,
    Outcome,
    Owner,
    StepSpec,
    TestCaseResult,
)
from labgate.perf.metrics import host_class
from labgate.perf.runs import run_step
from labgate.store import Store, StoredJob
from labgate.store.flights import StepEnd
from labgate.store.metrics import StepMetrics


class FlightError(Exception):
    """A flight cannot be planned or run as asked (unknown branch, job or revision)."""


class FlightWatcher(Protocol):
    """What a flight reports as it runs (the CLI shows it live)."""

    def flight_started(self, flight_id: int, total: int, done: int) -> None: ...
    def job_started(self, job: str, host: str) -> None: ...
    def step_started(self, job: str, step: str) -> None: ...
    def job_finished(self, job: str, outcome: Outcome, host: str | None) -> None: ...


class NoWatcher:
    def flight_started(self, flight_id: int, total: int, done: int) -> None:
        pass

    def job_started(self, job: str, host: str) -> None:
        pass

    def step_started(self, job: str, step: str) -> None:
        pass

    def job_finished(self, job: str, outcome: Outcome, host: str | None) -> None:
        pass


def safe_name(name: str) -> str:
    """A job or step name made safe as one path component."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
    return cleaned or "_"


def env_name(name: str) -> str:
    """A tree or runvar name as the suffix of an environment variable."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def mirrors_for(lab: Lab) -> Mirrors:
    return Mirrors(
        lab.mirror_dir,
        {name: tree.url for name, tree in lab.trees.items()},
        frozenset(name for name, tree in lab.trees.items() if tree.private),
    )


def resolve_revisions(
    lab: Lab, mirrors: Mirrors, refs: Mapping[str, str], overrides: Mapping[str, str] = {}
) -> dict[str, str]:
    """Fetch each tree's mirror and resolve the tuple to full shas (``overrides`` win)."""
    wanted = dict(refs)
    for tree, rev in overrides.items():
        if tree not in lab.trees:
            known = ", ".join(sorted(lab.trees)) or "none"
            raise FlightError(f"--rev {tree}={rev}: no tree {tree!r} in the lab (trees: {known})")
        wanted[tree] = rev
    out: dict[str, str] = {}
    for tree, rev in wanted.items():
        try:
            mirrors.update(tree)
            out[tree] = mirrors.resolve(tree, rev)
        except GitError as error:
            raise FlightError(str(error)) from error
    return out


def select_jobs(jobs: Sequence[JobSpec], globs: Sequence[str]) -> list[JobSpec]:
    """The jobs matching any glob, with every job they depend on (so they can run)."""
    if not globs:
        return list(jobs)
    by_name = {j.name: j for j in jobs}
    chosen: set[str] = set()
    stack = [j.name for j in jobs if any(fnmatch.fnmatchcase(j.name, g) for g in globs)]
    if not stack:
        names = ", ".join(by_name) or "none"
        raise FlightError(f"--job {' '.join(globs)}: matches no job (jobs: {names})")
    while stack:
        name = stack.pop()
        if name not in chosen:
            chosen.add(name)
            stack.extend(by_name[name].depends)
    return [j for j in jobs if j.name in chosen]


def without_disabled(jobs: Sequence[JobSpec], disabled: Sequence[DisabledTest]) -> list[JobSpec]:
    """The jobs once lab.toml's ``[[disable]]`` entries are applied, the simplest honest reading of
    "not run": a job matching an entry whose step glob is ``*`` is left out of the flight, and so
    is every job that depends on it (it could not run); an entry naming steps removes those steps
    from the matching jobs (the job's other steps still run, in order), and a job left with no
    step is left out. Nothing disabled is run, so nothing disabled is counted; every vote lists
    the entries (``labgate.review.vote``)."""
    kept: dict[str, JobSpec] = {}
    for job in jobs:
        entries = [d for d in disabled if fnmatch.fnmatchcase(job.name, d.job)]
        steps = tuple(
            s for s in job.steps if not any(fnmatch.fnmatchcase(s.name, d.step) for d in entries)
        )
        if steps and not any(d.whole_job for d in entries):
            kept[job.name] = replace(job, steps=steps)
    names = {j.name for j in jobs}
    changed = True
    while changed:  # a job whose dependency is gone cannot run either
        lost = [n for n, j in kept.items() if any(d in names and d not in kept for d in j.depends)]
        for name in lost:
            del kept[name]
        changed = bool(lost)
    return list(kept.values())


def plan_flight(
    lab: Lab,
    store: Store,
    branch: str,
    *,
    revisions: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] = {},
    job_globs: Sequence[str] = (),
    blessing: Blessing = Blessing.ADHOC,
    mirrors: Mirrors | None = None,
    embargo: Embargo | None = None,
    owner: Owner | None = None,
    requires: Sequence[str] = (),
    admit: Callable[[Connection], None] | None = None,
) -> int:
    """Store a queued flight of the branch's jobs; returns its id.

    ``revisions`` gives the whole tuple as full shas (the gate and bisection know it); otherwise
    it is resolved from the branch's refs, with ``overrides`` (tree → any rev) applied. A flight
    is under ``embargo``, or else the branch's (lab.toml): then every job requires the
    ``embargo-ok`` host flag, so only hosts set aside for embargoed work run it. Every job also
    requires the host flags of ``requires``; an ``owner``'s flight is on-demand work (see
    ``labgate.access``). ``admit`` decides in the transaction that stores the flight (see
    :meth:`labgate.store.Store.create_flight`).
    """
    jobs = select_jobs(without_disabled(lab.jobs_for(branch), lab.disabled), job_globs)
    if revisions is None:
        revisions = resolve_revisions(
            lab, mirrors or mirrors_for(lab), lab.revision_refs(branch), overrides
        )
    embargo = embargo or lab.branch(branch).embargo
    private = sorted(tree for tree in revisions if tree in lab.trees and lab.trees[tree].private)
    if private and embargo is None:
        raise FlightError(
            f"tree {private[0]!r} is private: only a flight under embargo may check it out "
            "(--embargo GROUP --until TIME, or the branch's embargo in lab.toml)"
        )
    extra = (*requires, *([EMBARGO_HOST_FLAG] if embargo is not None else []))
    if extra:
        jobs = [replace(j, requires=(*j.requires, *extra)) for j in jobs]
    return store.create_flight(branch, blessing, revisions, jobs, embargo, owner, admit)


T = TypeVar("T")


async def off_loop(store: Store, call: Callable[[], T]) -> T:
    """Make a store call on a job's path (a step's record, the job's start and end, the pool's
    claim): on a store that is a server (PostgreSQL) in a thread, so that the event loop runs
    the other jobs while the server answers (each such call is a round trip, several a step);
    on SQLite at once (in process: a thread would cost more than the statement). The caller
    waits for it either way: what the store says runs is what runs. A cancelled caller still
    waits until the call is done, so that what it wrote is settled before its own cancellation
    is recorded."""
    if not store.remote:
        return call()
    running = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await running
        raise


# A job whose host is lost goes to another host, up to this many attempts in all.
MAX_HOST_ATTEMPTS = 3


@dataclass
class JobRunner:
    """Runs one job of a stored flight on the host the allocator gave it: the work dir (every
    tree checked out, dependencies' artifacts), the host's health check and console, the steps in
    order, each outcome written to the store as it happens, the job in the host's history. The
    flights service (:mod:`labgate.flights`) decides which job runs where and when."""

    lab: Lab
    store: Store
    executor: Executor = field(default_factory=LocalExecutor)
    mirrors: Mirrors | None = None

    def __post_init__(self) -> None:
        self.mirrors = self.mirrors or mirrors_for(self.lab)
        self.registry = self.store.hosts
        self._deleting: set[asyncio.Future[None]] = set()

    def fetch(self, flight: FlightResult) -> None:
        """Every commit of the revision tuple in the mirrors; one that cannot be had is left for
        the jobs' checkout to report (``broken``)."""
        assert self.mirrors is not None
        for tree, sha in flight.revisions.items():
            if tree in self.mirrors.urls:
                with contextlib.suppress(GitError):
                    ensure_commit(self.mirrors, tree, sha)

    async def run_job(
        self,
        flight: FlightResult,
        job: StoredJob,
        host: str,
        attempt: int,
        progress: FlightWatcher | None = None,
    ) -> Outcome:
        """Run attempt ``attempt`` of one job of ``flight`` on ``host`` (the pool's claim
        started it there); QUEUED means its host was lost and the job is queued again (for
        another host), CANCELLED that it was cancelled."""
        assert self.mirrors is not None
        progress = progress or NoWatcher()
        name = job.spec.name
        host_spec = self.lab.host(host)
        progress.job_started(name, host)
        workdir = self.lab.work_dir / str(flight.id) / safe_name(name)
        artifacts = self.lab.artifacts_dir / str(flight.id) / safe_name(name)
        outcome, reason = Outcome.BROKEN, None
        session: JobSession | None = None
        last_step: StepEnd | None = None  # ended, written with the job's end
        try:
            try:
                await _before_job(host_spec, job.spec, self.lab.dir)
                await asyncio.to_thread(
                    self._prepare, flight, self.mirrors, job.spec, workdir, artifacts
                )
                session = await self._session(host_spec, flight, name, workdir, artifacts)
                await session.prepare()
            except (GitError, OSError) as error:
                outcome, reason = Outcome.BROKEN, f"cannot prepare the work dir: {error}"
                self.store.set_steps(job.step_ids, Outcome.BLOCKED)
                self._end_job(host_spec, job.id, attempt, outcome, reason)
                return outcome
            # nothing runs between the last step and the job's end (no artifacts to bring
            # back, no console to stop): the step's end is written with the job's
            with_job = session.artifacts_are_here and not host_spec.lifecycle.console
            async with _console(host_spec, self.lab, flight.id, name, attempt):
                outcome, reason, last_step = await self._run_steps(
                    flight, job, host, attempt, session, workdir, progress, with_job=with_job
                )
            await session.fetch_artifacts()
            end = functools.partial(
                self._end_job, host_spec, job.id, attempt, outcome, reason, last_step=last_step
            )
            await off_loop(self.store, end)
            last_step = None
            return outcome
        except HostLost as error:
            outcome, reason = self._host_lost(job, host_spec, attempt, error)
            return outcome
        except asyncio.CancelledError:
            outcome = Outcome.CANCELLED
            self._end_job(
                host_spec, job.id, attempt, outcome, "cancelled", in_history=False,
                last_step=last_step,
            )  # fmt: skip
            raise
        finally:
            if session is not None:
                await asyncio.shield(session.close())
            if outcome is not Outcome.QUEUED:
                progress.job_finished(name, outcome, host)
            await self._discard(workdir)

    async def _discard(self, workdir: Path) -> None:
        """Delete a job's checkout without making the job wait: it is moved aside at once (an
        attempt of the same job may start in its place) and deleted in a thread (a build tree
        can take seconds, and the controller claims the next job when this one returns).
        ``asyncio.run`` waits for the thread before the process ends. Always in a thread:
        deleting on the event loop would stall every running job."""
        gone = workdir.with_name(f".{workdir.name}.gone-{uuid.uuid4().hex[:12]}")
        try:
            workdir.rename(gone)
        except FileNotFoundError:  # the work dir could not be made
            return
        except OSError:  # it cannot be moved aside: delete it before anything starts there
            await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)
            return
        deleting = asyncio.ensure_future(asyncio.to_thread(shutil.rmtree, gone, ignore_errors=True))
        self._deleting.add(deleting)
        deleting.add_done_callback(self._deleting.discard)

    async def _session(
        self, host: HostSpec, flight: FlightResult, name: str, workdir: Path, artifacts: Path
    ) -> JobSession:
        key = f"{flight.id}/{safe_name(name)}"
        return await SESSIONS[host.executor](host, key, workdir, artifacts, self.executor)

    def _host_lost(
        self, job: StoredJob, host: HostSpec, attempt: int, error: HostLost
    ) -> tuple[Outcome, str]:
        """The job's attempt is ``broken`` (kept in the host's history with its steps); the job
        is queued again for another host unless it has had its attempts."""
        reason = f"host {host.name} lost: {error}"
        if error.quarantine:
            self.registry.quarantine(host.name, str(error))
        again = attempt < MAX_HOST_ATTEMPTS
        self._end_job(
            host, job.id, attempt, Outcome.BROKEN, reason,
            data={"steps": self.registry.attempt_steps(job.id), "queued_again": again},
            queue_again=f"{reason}; queued again for another host" if again else None,
        )  # fmt: skip
        return (Outcome.QUEUED if again else Outcome.BROKEN), reason

    def _prepare(
        self,
        flight: FlightResult,
        mirrors: Mirrors,
        spec: JobSpec,
        workdir: Path,
        artifacts: Path,
    ) -> None:
        for root in (self.lab.log_dir, self.lab.artifacts_dir, self.lab.work_dir):
            # the lab's user alone reads a flight's logs, artifacts and trees (an embargoed
            # flight's hold an undisclosed fix); the dashboard serves them to who may see them
            private = root / str(flight.id)
            private.mkdir(parents=True, exist_ok=True)
            private.chmod(0o700)
        for path in (workdir, artifacts):
            shutil.rmtree(path, ignore_errors=True)
        workdir.mkdir(parents=True)
        artifacts.mkdir(parents=True)
        (workdir / ".labgate").mkdir()
        for tree, sha in flight.revisions.items():
            mirrors.checkout(tree, sha, workdir / tree)
        if spec.depends:
            (workdir / "artifacts").mkdir()
            for dep in spec.depends:
                source = self.lab.artifacts_dir / str(flight.id) / safe_name(dep)
                (workdir / "artifacts" / dep).symlink_to(source, target_is_directory=True)

    async def _run_steps(
        self,
        flight: FlightResult,
        job: StoredJob,
        host: str,
        attempt: int,
        session: JobSession,
        workdir: Path,
        progress: FlightWatcher,
        *,
        with_job: bool,
    ) -> tuple[Outcome, str | None, StepEnd | None]:
        """Run the job's steps; the outcome, why, and (``with_job``) the end of its last step
        when that is to be written with the job's end (a plain end: no test cases or
        metrics)."""
        env = self._env(flight, job.spec, host, attempt, Path(session.artifacts))
        equiv = host_class(self.lab.host(host))  # metrics are compared within the host's class
        suffix = "" if attempt <= 1 else f".{attempt}"
        logs = [
            f"{flight.id}/{safe_name(job.spec.name)}/{safe_name(step.name)}{suffix}.log"
            for step in job.spec.steps
        ]
        for rel_log in logs:
            (self.lab.log_dir / rel_log).unlink(missing_ok=True)
        if job.step_ids:  # the job runs from its first step on (one transaction for both)
            await off_loop(
                self.store,
                functools.partial(
                    self.store.start_step, job.step_ids[0], logs[0], job_running=job.id
                ),
            )
        for index, (step, step_id) in enumerate(zip(job.spec.steps, job.step_ids, strict=True)):
            log = self.lab.log_dir / logs[index]
            progress.step_started(job.spec.name, step.name)
            step_env = {
                **env,
                "LABGATE_STEP": step.name,
                "LABGATE_BROKEN_FILE": f"{session.workdir}/.labgate/broken-{index}",
            }
            try:
                runs = await run_step(session, step, step_env, log, workdir, logs[index])
                result = runs.run
                if step.results and result.outcome is not Outcome.BROKEN:
                    await session.fetch_results(step.results.partition(":")[2])
            except HostLost as error:
                self.store.finish_step(
                    step_id, Outcome.BROKEN, exit_status=None, duration_s=None,
                    reason=f"host lost: {error}",
                )  # fmt: skip
                self.store.set_steps(job.step_ids[index + 1 :], Outcome.BLOCKED)
                raise
            except asyncio.CancelledError:
                self.store.finish_step(
                    step_id, Outcome.CANCELLED, exit_status=None, duration_s=None,
                    reason="cancelled",
                )  # fmt: skip
                self.store.set_steps(job.step_ids[index + 1 :], Outcome.CANCELLED)
                raise
            result, cases = _with_results(result, step.results, workdir)
            if step.results and result.outcome is not Outcome.BROKEN:
                result = self._record_findings(result, step_id, step.results, workdir, job, step)
            # a later attempt replaces what an earlier one (on a lost host) recorded
            metrics = runs.metrics if runs.metrics or attempt > 1 else None
            following = index + 1 < len(job.step_ids) and result.outcome is Outcome.PASS
            last = index + 1 == len(job.step_ids)
            if last and with_job and metrics is None and not step.results:
                end = StepEnd(
                    step_id, result.outcome, result.exit_status, round(result.duration_s, 4),
                    result.reason,
                )  # fmt: skip
                return result.outcome, _why(step.name, result), end
            ended = functools.partial(
                self.store.finish_step,
                step_id,
                result.outcome,
                exit_status=result.exit_status,
                duration_s=round(result.duration_s, 4),
                reason=result.reason,
                testcases=cases if step.results else None,
                metrics=StepMetrics(host, equiv, metrics) if metrics is not None else None,
                then_start=(job.step_ids[index + 1], logs[index + 1]) if following else None,
            )
            try:
                await off_loop(self.store, ended)
            except asyncio.CancelledError:  # recorded meanwhile: the steps after it will not run
                self.store.set_steps(job.step_ids[index + 1 :], Outcome.CANCELLED)
                raise
            if result.outcome is not Outcome.PASS:
                rest = Outcome.SKIP if result.outcome is Outcome.SKIP else Outcome.BLOCKED
                self.store.set_steps(job.step_ids[index + 1 :], rest)
                return result.outcome, _why(step.name, result), None
        return Outcome.PASS, None, None

    def _end_job(
        self,
        host: HostSpec,
        job_id: int,
        attempt: int,
        outcome: Outcome,
        reason: str | None,
        *,
        in_history: bool = True,
        data: Mapping[str, object] | None = None,
        queue_again: str | None = None,
        last_step: StepEnd | None = None,
    ) -> None:
        """The attempt's end, its slots given back and (``in_history``) the job in its host's
        history, in one transaction (see ``Store.end_job``); N broken jobs in a row quarantine
        the host."""
        self.store.end_job(
            job_id, outcome, reason, host=host.name, attempt=attempt,
            quarantine_after=host.lifecycle.quarantine_after, in_history=in_history, data=data,
            queue_again=queue_again, last_step=last_step,
        )  # fmt: skip

    def _env(
        self, flight: FlightResult, spec: JobSpec, host: str, attempt: int, artifacts: Path
    ) -> dict[str, str]:
        env = {
            "LABGATE_FLIGHT": str(flight.id),
            "LABGATE_BRANCH": flight.branch,
            "LABGATE_BLESSING": str(flight.blessing),
            "LABGATE_JOB": spec.name,
            "LABGATE_HOST": host,
            "LABGATE_ATTEMPT": str(attempt),
            "LABGATE_ARTIFACTS": str(artifacts),
        }
        for tree, sha in flight.revisions.items():
            env[f"LABGATE_REV_{env_name(tree)}"] = sha
        for name, value in spec.runvars:
            env[f"LABGATE_RUNVAR_{env_name(name)}"] = value
        lab = self.lab
        return step_environment(os.environ, env, lab.step_env, lab.pass_env, lab.secret_env_names)

    def _record_findings(
        self,
        result: StepRun,
        step_id: int,
        spec: str,
        workdir: Path,
        job: StoredJob,
        step: StepSpec,
    ) -> StepRun:
        """Store the static analysis findings a step declares (``results = "sarif:..."``); a
        SARIF file that cannot be read makes the step ``broken`` with the reason."""
        from labgate.results import ResultsError, collect_findings

        try:
            findings = collect_findings(spec, workdir, job.spec.name, step.name)
        except ResultsError as error:
            return StepRun(Outcome.BROKEN, result.exit_status, result.duration_s, str(error))
        if findings is not None:
            self.store.record_findings(step_id, findings)
        return result


def _why(step: str, result: StepRun) -> str | None:
    """Why a job ended with this step (None: it passed)."""
    if result.outcome is Outcome.PASS:
        return None
    return f"step {step}: {result.reason or result.outcome}"


def _with_results(
    result: StepRun, results: str | None, workdir: Path
) -> tuple[StepRun, tuple[TestCaseResult, ...]]:
    """Collect the test cases a step declares (``results = "junit:..."``); a result file that
    cannot be read makes the step ``broken`` with the reason."""
    if not results or result.outcome is Outcome.BROKEN:
        return result, ()
    from labgate.results import ResultsError, collect_results

    try:
        return result, collect_results(results, workdir)
    except ResultsError as error:
        broken = StepRun(Outcome.BROKEN, result.exit_status, result.duration_s, str(error))
        return broken, ()


async def _before_job(host: HostSpec, spec: JobSpec, lab_dir: Path) -> None:
    """The host's health check (and install before an exclusive job); an unfit host is lost
    for this job, and quarantined."""
    if not host.lifecycle.health and not (spec.exclusive and host.lifecycle.install):
        return
    from labgate.hosts.lifecycle import HostUnfit, before_job

    unfit = await before_job(host, exclusive=spec.exclusive, cwd=lab_dir)
    if unfit is not None:
        raise HostUnfit(unfit)


def _console(
    host: HostSpec, lab: Lab, flight_id: int, job: str, attempt: int
) -> contextlib.AbstractAsyncContextManager[None]:
    """The host's console captured into the job's ``console.log`` while its steps run."""
    if not host.lifecycle.console:
        return contextlib.nullcontext()
    from labgate.hosts.lifecycle import console

    suffix = "" if attempt <= 1 else f".{attempt}"
    log = lab.log_dir / str(flight_id) / safe_name(job) / f"console{suffix}.log"
    return console(host, log, cwd=lab.dir)
