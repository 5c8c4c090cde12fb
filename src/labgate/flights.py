"""The flights service: the one way every driver of work runs a flight.

The gate, the review loop, the lab's bisection, the web's retest, ``labgate flight run`` and the
pool's workers all go through :class:`Flights`: **plan** a flight (store it, queued), **submit** it
to the pool (any controller sharing the store may run its jobs), **await** its result. Hosts are
given out by one allocator (:class:`labgate.store.slots.Allocator`: slot rows in the store,
claimed under row locks and held under leases), so a flight run in-process and a pool worker on
another machine never put two jobs on one slot.

Each process has one controller loop per :class:`Flights`: it claims slots for ready jobs, runs
each with :class:`labgate.flight.JobRunner`, gives the slots back, moves flights along (blocks the
jobs whose dependency did not pass, breaks the jobs no available host can take, finishes a
flight whose jobs all ended), acts on cancel requests, and renews its leases. Awaiting a flight
runs that loop for the flights the process awaits; :meth:`Flights.serve` (``labgate serve``,
``labgate host worker``) runs it for every flight of the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from labgate.config import Lab
from labgate.executor import Executor, LocalExecutor, reap_orphans
from labgate.flight import FlightError, FlightWatcher, JobRunner, NoWatcher, off_loop, plan_flight
from labgate.git import Mirrors
from labgate.model import Blessing, FlightResult, FlightState, HostSpec, Outcome, flight_outcome
from labgate.schedule import blocked_reason
from labgate.store import JobState, Store, StoredJob, now, owner_is_dead, process_owner
from labgate.store.slots import BLESSING_PRIORITY, Allocator, Claim

SYNC_ATTEMPTS = 5
CANCEL_POLL_S = 0.5  # at most this often the controller asks the store for cancel requests


class FlightBusy(FlightError):
    """Another live controller runs the flight (it may not be resumed beside it)."""


def controller_owner() -> str:
    """This process, and which controller in it, as a lease holder (``host:pid:tag``)."""
    return f"{process_owner()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Awaited:
    result: asyncio.Future[FlightResult]
    progress: FlightWatcher


@dataclass
class Flights:
    """Plan, submit and await flights on the lab's hosts (see the module docs)."""

    lab: Lab
    store: Store
    executor: Executor = field(default_factory=LocalExecutor)
    mirrors: Mirrors | None = None
    owner: str = field(default_factory=controller_owner)
    lease_s: float = 30.0
    poll_s: float = 1.0
    priority: tuple[str, ...] = BLESSING_PRIORITY
    jobs_run: int = 0

    def __post_init__(self) -> None:
        self.runner = JobRunner(self.lab, self.store, self.executor, self.mirrors)
        self.mirrors = self.runner.mirrors
        self._awaited: dict[int, _Awaited] = {}
        self._serving = 0
        self._loop: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._flights: dict[int, FlightResult] = {}  # flights with jobs run here, as planned
        self._jobs: dict[int, dict[int, StoredJob]] = {}
        # a flight being read for the jobs that start first (several at once: read once)
        self._reading: dict[int, asyncio.Future[tuple[FlightResult, dict[int, StoredJob]]]] = {}
        self._started: set[int] = set()  # flights known to be marked running
        self._running: dict[asyncio.Task[Outcome], Claim] = {}
        self._settling: set[asyncio.Task[None]] = set()
        self._cancelled: set[int] = set()  # awaited flights cancelled, their jobs still ending
        self._needs: dict[int, dict[int, tuple[frozenset[str], tuple[str, ...]]]] = {}
        # per flight, its jobs that finished (an outcome a job keeps: read once)
        self._ended: dict[int, dict[int, JobState]] = {}
        # each flight's jobs as they wait in the queue, in plan order: a job not read back as
        # moved (see Store.job_states) is one of these
        self._waiting: dict[int, list[JobState]] = {}
        # per flight, its jobs the last look left unfinished, less those of ours ended since
        self._open: dict[int, int] = {}
        self._next_cancel_check = 0.0
        self._away_hosts: dict[str, str] = {}
        self._away_until = 0.0

    # --- plan, submit, await ------------------------------------------------------------------

    def plan(
        self,
        branch: str,
        *,
        revisions: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] = {},
        job_globs: Sequence[str] = (),
        blessing: Blessing = Blessing.ADHOC,
    ) -> int:
        """Store a queued flight of the branch's jobs (see :func:`labgate.flight.plan_flight`)."""
        return plan_flight(
            self.lab,
            self.store,
            branch,
            revisions=revisions,
            overrides=overrides,
            job_globs=job_globs,
            blessing=blessing,
            mirrors=self.mirrors,
        )

    def submit(self, flight_id: int, *, avoid: Mapping[str, str] | None = None) -> None:
        """Hand the flight to the pool; ``avoid`` maps a job to a host to keep it off when
        another can take it. A controller serving the pool runs it; :meth:`run` awaits it."""
        self.store.submit_flight(flight_id, avoid)

    def runners_of(self, flight_id: int) -> list[str]:
        """The live controllers running jobs of this flight now, this one included (a flight
        they run may not be resumed beside them). A controller of this machine that is gone
        loses its slots here at once; one elsewhere loses them when its lease expires."""
        stamp = now()
        live = []
        for owner, until in self.store.lease_holders(flight_id).items():
            if owner != self.owner and owner_is_dead(owner):
                self._allocator().reap(dead=owner)
            elif owner == self.owner or until >= stamp:
                live.append(owner)
        return live

    async def run(
        self,
        flight_id: int,
        *,
        progress: FlightWatcher | None = None,
        avoid: Mapping[str, str] | None = None,
        planned: FlightResult | None = None,
    ) -> FlightResult:
        """Submit the flight and await its end, this process's controller running its jobs
        (with any other controller of the pool). A flight left unfinished by a controller that is
        gone (killed, crashed) or cancelled is resumed: its finished jobs keep their results.
        Cancelling the caller cancels the flight. ``planned``: the flight as its caller has just
        planned it (stored, nothing of it run): neither read again nor resumed."""
        fresh = planned is not None and planned.id == flight_id
        flight = planned if fresh else await asyncio.to_thread(self.store.get_flight, flight_id)
        assert flight is not None
        if flight.state is FlightState.FINISHED:
            return flight
        if flight_id in self._awaited:  # already awaited here: await the same result
            return await asyncio.shield(self._awaited[flight_id].result)
        if not fresh and not self.runners_of(flight_id):
            await asyncio.to_thread(self._resume, flight)
        # as planned (what its jobs need of it does not change): the first of them to start
        # here reads only the jobs
        self._flights.setdefault(flight_id, flight)
        self.submit(flight_id, avoid=avoid)
        awaited = _Awaited(asyncio.get_running_loop().create_future(), progress or NoWatcher())
        self._awaited[flight_id] = awaited
        if fresh:
            awaited.progress.flight_started(flight_id, len(flight.jobs), 0)
        else:
            jobs = self.store.job_states([flight_id])[flight_id]
            awaited.progress.flight_started(
                flight_id, len(jobs), sum(1 for j in jobs if j.outcome.finished)
            )
        self._start()
        try:
            return await asyncio.shield(awaited.result)
        except asyncio.CancelledError:
            if not awaited.result.done():
                await self._cancel(flight_id)
            raise
        finally:
            self._awaited.pop(flight_id, None)
            self._cancelled.discard(flight_id)

    def _resume(self, flight: FlightResult) -> None:
        """Make an unfinished flight runnable again: the steps a killed controller left running
        are ended, its unfinished jobs queued again, every commit of its tuple fetched."""
        self.runner.fetch(flight)
        reap_orphans(self.lab.work_dir / str(flight.id), flight.id)
        self.store.reset_unfinished(flight.id)
        self.store.clear_cancel_request(flight.id)
        if flight.state is not FlightState.QUEUED:
            self.store.set_flight_state(flight.id, FlightState.RUNNING)

    async def serve(self, *, until_idle: bool = False) -> None:
        """Run the jobs of every flight of the pool (``labgate serve``, ``labgate host
        worker``); with ``until_idle``, return once no flight of the pool is active."""
        self._serving += 1
        self._start()
        try:
            while True:
                await self._wait_wake()
                if until_idle and not self.store.active_pool_flights() and not self._running:
                    return
        finally:
            self._serving -= 1

    async def _wait_wake(self) -> None:
        """Until the loop finds the pool idle, or ends (its error is raised here)."""
        loop = self._loop
        if loop is None:
            self._start()
            loop = self._loop
        assert loop is not None
        waiter = asyncio.create_task(self._idle.wait())
        try:
            await asyncio.wait({waiter, loop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if loop.done():
            loop.result()
        self._idle.clear()

    # --- the controller loop ----------------------------------------------------------------

    def _start(self) -> None:
        if self._loop is None:
            self._idle = asyncio.Event()
            self._loop = asyncio.create_task(self._control())
        self._wake.set()

    def _allocator(self) -> Allocator:
        return self.store.slots(
            self.lab.hosts, self.owner, lease_s=self.lease_s, priority=self.priority
        )

    def _scope(self) -> list[int] | None:
        """The flights this controller runs jobs of: every pool flight while it serves the
        pool, else only those its process awaits."""
        if self._serving:
            return None
        return sorted(set(self._awaited) - self._cancelled)

    async def _control(self) -> None:
        """The controller loop; it ends when nothing is awaited, nothing runs and the pool is
        not served (the next :meth:`run` starts another)."""
        allocator = self._allocator()
        running: dict[asyncio.Task[Outcome], Claim] = {}
        self._running = running
        beat: asyncio.Task[None] | None = None
        try:
            self._sync(allocator)
            allocator.reap()
            beat = asyncio.create_task(self._heartbeats(allocator, running))
            quiet = False  # only jobs of ours passed since the last look at the flights
            while True:
                self._wake.clear()
                scope = self._scope()
                active = True if quiet else self._advance(scope)
                if scope is not None and not scope and not running:
                    self._loop = None  # at once: a run() from now on starts a new loop
                    return
                for claim in await off_loop(self.store, functools.partial(allocator.claim, scope)):
                    self._mark_running(claim.flight_id)  # from its first job given a host
                    running[asyncio.create_task(self._run(claim))] = claim
                if not active and not running:
                    self._idle.set()
                await self._next_event(running)
                done = [t for t in running if t.done()]
                quiet = (
                    bool(done)  # not a poll: that looks for what other processes did
                    and not self._wake.is_set()
                    and time.monotonic() < self._next_cancel_check
                )
                for task in done:
                    claim = running.pop(task)
                    self.jobs_run += 1
                    if task.cancelled() or task.exception() is not None:
                        quiet = False
                        allocator.release(claim.job_id)  # its end may not have given them back
                        if not task.cancelled():
                            task.result()  # a bug in the job runner ends the loop
                        continue
                    outcome = task.result()
                    if outcome in (Outcome.BROKEN, Outcome.QUEUED):
                        self._away_until = 0.0  # the job may have quarantined its host
                    quiet = quiet and self._passed(claim, outcome)
        except BaseException as error:
            if self._loop is asyncio.current_task():
                self._loop = None
            for awaited in self._awaited.values():  # nobody may wait for a dead loop
                if not awaited.result.done() and not isinstance(error, asyncio.CancelledError):
                    awaited.result.set_exception(error)
            raise
        finally:
            if beat is not None:
                beat.cancel()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, *([beat] if beat else []), return_exceptions=True)
            for claim in running.values():
                allocator.release(claim.job_id)
            running.clear()
            self._idle.set()

    async def _next_event(self, running: Mapping[asyncio.Task[Outcome], Claim]) -> None:
        """Until a job ends, someone wakes the loop (a flight submitted, a lease reaped), or
        ``poll_s`` passes (work another process put in the store)."""
        wake = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait(
                [*running, wake], timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            wake.cancel()

    def _sync(self, allocator: Allocator) -> None:
        """Record the lab's hosts and their slots; controllers starting together race to insert
        the same rows, and the losers see them on the next try."""
        from sqlalchemy.exc import IntegrityError

        for attempt in range(SYNC_ATTEMPTS):
            try:
                self.store.sync_hosts(self.lab.hosts)
                allocator.sync()
                return
            except IntegrityError:
                if attempt == SYNC_ATTEMPTS - 1:
                    raise

    async def _heartbeats(
        self, allocator: Allocator, running: Mapping[asyncio.Task[Outcome], Claim]
    ) -> None:
        """Renew this controller's leases, free those of controllers that stopped renewing, and
        cancel a job whose lease was taken away (it runs elsewhere now)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            claimed = list(running.items())  # before: a job claimed meanwhile is not yet held
            held = await asyncio.to_thread(allocator.heartbeat)
            for task, claim in claimed:
                if claim.job_id not in held:
                    task.cancel()
            if await asyncio.to_thread(allocator.reap):
                self._wake.set()

    async def _run(self, claim: Claim) -> Outcome:
        flight = self._flights.get(claim.flight_id)
        if flight is None or claim.flight_id not in self._jobs:
            reading = self._reading.get(claim.flight_id)
            if reading is None:  # the first of its jobs to start here: read it, in a thread
                reading = asyncio.ensure_future(
                    asyncio.to_thread(
                        self._read,
                        claim.flight_id,
                        flight,
                        fetch=claim.flight_id not in self._awaited,
                    )
                )
                self._reading[claim.flight_id] = reading
                reading.add_done_callback(lambda _: self._reading.pop(claim.flight_id, None))
            read, self._jobs[claim.flight_id] = await asyncio.shield(reading)
            flight = self._flights[claim.flight_id] = read
        awaited = self._awaited.get(claim.flight_id)
        progress = awaited.progress if awaited else None
        job = self._jobs[claim.flight_id][claim.job_id]
        return await self.runner.run_job(flight, job, claim.host, claim.attempt, progress)

    def _read(
        self, flight_id: int, flight: FlightResult | None, *, fetch: bool
    ) -> tuple[FlightResult, dict[int, StoredJob]]:
        """A flight as planned (read unless ``flight`` is it) and its jobs by id; ``fetch``: a
        pool flight nobody here awaits, its revisions fetched into the mirrors here too."""
        flight = flight or self.store.get_flight(flight_id)
        if fetch:
            self.runner.fetch(flight)
        return flight, {j.id: j for j in self.store.flight_jobs(flight_id)}

    # --- moving flights along -----------------------------------------------------------------

    def _advance(self, scope: list[int] | None) -> bool:
        """Act on cancel requests, block jobs whose dependency did not pass, break jobs no
        available host can take, finish flights whose jobs all ended (answering whoever
        awaits them). Returns whether any flight in scope is still active."""
        ids = self.store.active_pool_flights() if scope is None else scope
        if not ids:
            return False
        if time.monotonic() >= self._next_cancel_check:
            self._next_cancel_check = time.monotonic() + CANCEL_POLL_S
            for flight_id in self.store.cancel_requests(ids):
                self._cancel_now(flight_id)
        states = self._job_states(ids)
        still = False
        for flight_id, jobs in states.items():
            needs = self._needs[flight_id]
            outcome = {j.name: j.outcome for j in jobs}
            stuck = []
            for j in jobs:
                if outcome[j.name] is not Outcome.QUEUED:
                    continue
                depends = needs[j.id][1]
                why = blocked_reason(depends, outcome)
                if why is not None:
                    self.store.block_job(j.id, why)
                    outcome[j.name] = Outcome.BLOCKED
                    self._progress(flight_id).job_finished(j.name, Outcome.BLOCKED, None)
                elif all(outcome[d].succeeded for d in depends):
                    stuck.append(j)
            if stuck:
                away = self._away()
                # only a job that ran before can have lost a host under it
                lost = self.store.lost_hosts([j.id for j in stuck if j.attempt > 0])
                for j in stuck:
                    requires = needs[j.id][0]
                    reason = _no_host_reason(self.lab.hosts, requires, away, lost.get(j.id, set()))
                    if reason is not None:
                        self.store.finish_job(j.id, Outcome.BROKEN, reason)
                        outcome[j.name] = Outcome.BROKEN
                        self._progress(flight_id).job_finished(j.name, Outcome.BROKEN, None)
            self._open[flight_id] = sum(1 for o in outcome.values() if not o.finished)
            if any(c.flight_id == flight_id for c in self._running.values()):
                still = True  # a job of it is still cleaning up here (its result is stored)
                self._mark_running(flight_id)
                continue
            if outcome and all(o.finished for o in outcome.values()):
                self.store.set_flight_state(
                    flight_id, FlightState.FINISHED, flight_outcome(list(outcome.values()))
                )
                self._finished(flight_id)
                continue
            if not outcome:  # a flight of no job has nothing to wait for
                self.store.set_flight_state(flight_id, FlightState.FINISHED, Outcome.PASS)
                self._finished(flight_id)
                continue
            still = True
            if any(o is not Outcome.QUEUED for o in outcome.values()):
                self._mark_running(flight_id)
        return still

    def _passed(self, claim: Claim, outcome: Outcome) -> bool:
        """Count a job of ours that ended; whether the flights need no look because of it: it
        passed (nothing to block) and its flight still has jobs the last look left unfinished
        besides those of ours that ended since (so it is not the flight's end). The next look
        reads the job's end with the others'; it comes anyway with the next wake, the next
        cancel check (every ``CANCEL_POLL_S``), or another end, and sees then what other
        controllers did."""
        left = self._open.get(claim.flight_id, 0) - 1
        self._open[claim.flight_id] = left
        return outcome is Outcome.PASS and left > 0

    def _job_states(self, ids: Sequence[int]) -> dict[int, list[JobState]]:
        """Where the jobs of these flights stand, in plan order. What each needs (the host
        flags it requires, the jobs it depends on) is read once per flight into ``_needs``, and
        a job that finished is not read again (asked after every job, a flight's finished jobs
        would make it quadratic)."""
        unknown = [i for i in ids if i not in self._needs]
        states = self.store.job_states(unknown) if unknown else {}
        for flight_id, jobs in states.items():
            self._needs[flight_id] = {j.id: (j.requires, j.depends) for j in jobs}
            self._ended[flight_id] = {j.id: j for j in jobs if j.outcome.finished}
            self._waiting[flight_id] = [replace(j, outcome=Outcome.QUEUED, attempt=0) for j in jobs]
        known = [i for i in ids if i not in states]
        if not known:
            return states
        ended = [job_id for i in known for job_id in self._ended[i]]
        # only the jobs that have left the queue (or came back to it): the rest wait as planned
        moved = self.store.job_states(known, needs=False, but=ended, moved_only=True)
        for flight_id, jobs in moved.items():
            done = self._ended[flight_id]
            done.update((j.id, j) for j in jobs if j.outcome.finished)
            live = {j.id: j for j in jobs if not j.outcome.finished}
            states[flight_id] = [
                done.get(j.id) or live.get(j.id) or j for j in self._waiting[flight_id]
            ]
        return states

    def _away(self) -> dict[str, str]:
        """The hosts quarantined or reserved, each with why (read at most every ``poll_s``: a
        person's quarantine is seen within it)."""
        stamp = time.monotonic()
        if stamp >= self._away_until:
            self._away_hosts = self.store.hosts.unavailable()
            self._away_until = stamp + self.poll_s
        return self._away_hosts

    def _progress(self, flight_id: int) -> FlightWatcher:
        awaited = self._awaited.get(flight_id)
        return awaited.progress if awaited else NoWatcher()

    def _mark_running(self, flight_id: int) -> None:
        if flight_id not in self._started:
            self.store.mark_running(flight_id)
            self._started.add(flight_id)

    def _forget(self, flight_id: int) -> None:
        self._needs.pop(flight_id, None)
        self._ended.pop(flight_id, None)
        self._waiting.pop(flight_id, None)
        self._open.pop(flight_id, None)
        self._flights.pop(flight_id, None)
        self._jobs.pop(flight_id, None)
        self._started.discard(flight_id)

    def _finished(self, flight_id: int) -> None:
        self._forget(flight_id)
        awaited = self._awaited.get(flight_id)
        if awaited is not None and not awaited.result.done():
            awaited.result.set_result(self.store.get_flight(flight_id))

    def _end(self, flight_id: int) -> list[asyncio.Task[Outcome]]:
        """Cancel the flight's running jobs here, mark it cancelled and leave it alone from now
        on; returns the jobs' tasks (each records its end as it stops)."""
        self._cancelled.add(flight_id)
        mine = [t for t, c in self._running.items() if c.flight_id == flight_id]
        for task in mine:
            task.cancel()
        self.store.set_flight_state(flight_id, FlightState.CANCELLED, Outcome.CANCELLED)
        self._forget(flight_id)
        return mine

    def _cancel_now(self, flight_id: int) -> None:
        """A cancel request: end the flight; whoever awaits it gets it once its jobs recorded
        their end."""
        self.store.clear_cancel_request(flight_id)
        mine = self._end(flight_id)
        awaited = self._awaited.get(flight_id)
        if awaited is None:  # a pool flight nobody here awaits: nothing left to remember
            self._cancelled.discard(flight_id)
        else:
            settle = asyncio.create_task(self._settle(awaited, flight_id, mine))
            self._settling.add(settle)
            settle.add_done_callback(self._settling.discard)

    async def _settle(
        self, awaited: _Awaited, flight_id: int, tasks: Sequence[asyncio.Task[Outcome]]
    ) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        if not awaited.result.done():
            awaited.result.set_result(await asyncio.to_thread(self.store.get_flight, flight_id))

    async def _cancel(self, flight_id: int) -> None:
        """The awaiting caller was cancelled (Ctrl-C, SIGTERM): end the flight and wait for its
        jobs to record their end."""
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.gather(*self._end(flight_id), return_exceptions=True))


def _no_host_reason(
    hosts: Sequence[HostSpec], requires: frozenset[str], away: Mapping[str, str], lost: set[str]
) -> str | None:
    """Why no host can take a ready job that requires these flags now, or None when one can
    (maybe later)."""
    matching = [h.name for h in hosts if h.flags >= requires]
    if not matching:
        return "no host of the lab has the flags it requires"
    if any(h not in away and h not in lost for h in matching):
        return None
    why = [f"{h} {away[h]}" if h in away else f"{h} was lost under it" for h in matching]
    return "no matching host can take it: " + "; ".join(why)
