"""The review loop shared by every connector: events → the durable queue → a ``review`` flight
per patch set → a verdict → a vote, exactly once per run.

Never voting twice: a run's vote is decided, then recorded as an *intent* (a guarded update: one
intent per run), then posted, then marked ``done``. A controller killed before the intent simply
tests the run again (its flight is resumed, finished jobs keep their results); killed between
the intent and ``done``, it asks the connector whether the server already has the report
(:meth:`~labgate.review.base.Connector.reported`) and posts only if not. Runs are claimed with a
lease, so controllers sharing a PostgreSQL store never work on the same run; the queue survives
any restart of ``labgate serve`` or ``labgate review run``.

A patch its connector applies onto the branch's tested head (a Review Board diff) is judged
against a baseline of that head: a branch without one gets it first, a ``real`` flight of its
tested revision tuple (as the push gate makes). The connector says when
testing begins (:meth:`~labgate.review.base.Connector.started`); what it answers (a Review Board
status update's id) is kept with the run, so the vote updates that one after any restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from labgate.config import Lab
from labgate.evidence import branch_evidence, judge
from labgate.executor import reap_orphans
from labgate.flight import FlightError, resolve_revisions
from labgate.flights import Flights
from labgate.git import GitError
from labgate.heartbeat import renew_every
from labgate.model import Blessing, FlightResult, FlightState, Outcome, ReviewSpec
from labgate.review.base import (
    ChangeEvent,
    ChangeStates,
    Closed,
    Connector,
    PatchFailed,
    PatchSource,
    QueueAcknowledger,
    Refused,
    ReviewRun,
    Vote,
    Withdrawer,
)
from labgate.review.vote import error_vote, flight_url, patch_vote, summary_of, vote_for
from labgate.store import Store, owner_is_dead, process_owner
from labgate.store.review import ERROR, INTENT, QUEUED, RUNNING, SUPERSEDED, WITHDRAW
from labgate.store.users import Users

EMBARGOED = "embargoed"
"""A run whose flight is under embargo: tested, never voted on."""

log = logging.getLogger("labgate.review")

RETRY_POST_S = 60.0
"""How long a run whose vote could not be posted waits before it is tried again."""

ACK_LANE = 8
"""``pending`` posts at once (their own lane: they never wait behind diff fetches, results,
polls; enough for a restart's backlog, few enough not to take every thread of the server)."""


class Superseded(Exception):
    """The run's patch set is no longer the one its ref points at."""


class PatchUnavailable(Exception):
    """The connector could not give the patch now (its server is down): tried again later."""


def close_change(store: Store, event: ChangeEvent) -> list[ReviewRun]:
    """A ``closed`` event: the change's queued runs are dropped and the flights of its running
    ones cancelled (their loop then ends them without a vote); each is logged. Returns them."""
    reason = f"the change was {event.closed_as or 'closed'}"
    ended = store.review.close_change(event.source, event.change, reason)
    for run in ended:
        if run.state == QUEUED or run.flight_id is None:
            log.info("run %d (%s change %s) dropped: %s", run.id, run.connector, run.change,
                     reason)  # fmt: skip
        else:
            log.info("run %d (%s change %s): %s: flight %d cancelled", run.id, run.connector,
                     run.change, reason, run.flight_id)  # fmt: skip
            store.request_cancel(run.flight_id, f"review: {reason}")
    return ended


def queue_event(store: Store, event: ChangeEvent) -> ReviewRun | None:
    """Queue a run for the event (None: nothing new, see ``ReviewQueue.enqueue``); an event
    with a ``delivery`` seen before queues nothing; a ``closed`` one ends the change's runs
    (:func:`close_change`). What a webhook receiver does without a loop in its process."""
    queue = store.review
    if event.kind == "closed":
        close_change(store, event)
        return None
    if event.delivery is not None:
        if queue.delivery_seen(event.source, event.delivery):
            return None
        run = queue.enqueue(event)
        queue.record_delivery(event.source, event.delivery, event.kind)
    else:
        run = queue.enqueue(event)
    if run is not None:
        log.info("queued run %d: %s change %s patch set %s", run.id, run.connector,
                 run.change, run.patchset)  # fmt: skip
    return run


@dataclass
class ReviewLoop:
    """Processes the review queue of a lab for the given connectors (by ``[[review]]`` name)."""

    lab: Lab
    store: Store
    connectors: Mapping[str, Connector]
    owner: str = field(default_factory=process_owner)
    lease_s: float = 600.0
    flights: Flights | None = None
    """The flights service its flights run on (``labgate serve`` shares one); default: its own."""
    parallel: int = 1
    """Runs worked on at once (their flights share the hosts through the flights service)."""

    def __post_init__(self) -> None:
        if self.flights is None:
            self.flights = Flights(self.lab, self.store)
        self.queue = self.store.review
        self.specs: dict[str, ReviewSpec] = {r.name: r for r in self.lab.reviews}
        self.wake = asyncio.Event()
        self._baseline_lock = asyncio.Lock()
        # the mirrors are git repositories: one fetch, clone or patch in them at a time
        self._mirrors_lock = asyncio.Lock()
        self._acks: dict[int, asyncio.Task[None]] = {}
        self._ack_lane = asyncio.Semaphore(ACK_LANE)
        self._holders: dict[int, str] = {}
        self._withdrawing: asyncio.Task[None] | None = None

    # --- events in -----------------------------------------------------------------------

    def enqueue(self, event: ChangeEvent) -> ReviewRun | None:
        """Queue the event (see :func:`queue_event`) and wake the loop for a new run."""
        run = queue_event(self.store, event)
        if run is not None:
            self.wake.set()
        return run

    async def listen(self, connector: Connector) -> None:
        """Queue every event the connector yields (it reconciles after each (re)connect); each
        is said to be queued in the background, so a reconcile's many events are queued at
        once, not one server call after another."""
        async for event in connector.events():
            self.receive(event)

    def receive(self, event: ChangeEvent) -> ReviewRun | None:
        """Queue an event a webhook delivered, before the delivery is answered, and wake the
        loop; its connector, if a :class:`QueueAcknowledger`, is told in the background (the
        server that sent the webhook may be waiting for the answer). The run's start waits
        for that, so it updates the same report rather than making a second."""
        run = self.enqueue(event)
        connector = self.connectors.get(event.source)
        if run is not None and isinstance(connector, QueueAcknowledger):
            self._track(run, self._acknowledge(connector, run))
        if event.kind == "closed":
            self.start_withdrawing()
        return run

    def acknowledge_queued(self) -> list[asyncio.Task[None]]:
        """Say "queued", in the background, of every queued run nobody said it of (its
        controller was killed in between, or a webhook queued it with no loop running), so
        its ``pending`` does not wait for its start; returns the tasks saying it."""
        tasks: list[asyncio.Task[None]] = []
        for run in self.queue.runs(state=QUEUED):
            connector = self.connectors.get(run.connector)
            if run.report_id is not None or run.id in self._acks:
                continue
            if isinstance(connector, QueueAcknowledger):
                tasks.append(self._track(run, self._acknowledge(connector, run, again=True)))
        return tasks

    def _track(self, run: ReviewRun, ack: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(ack)
        self._acks[run.id] = task
        task.add_done_callback(lambda _: self._acks.pop(run.id, None))
        return task

    async def _acknowledge(
        self, connector: QueueAcknowledger, run: ReviewRun, *, again: bool = False
    ) -> None:
        asked = time.monotonic()
        try:
            async with self._ack_lane:
                sent = time.monotonic()
                report_id = await connector.queued(run, again=again)
        except Exception as error:  # a courtesy: the run still starts and reports
            log.warning("run %d: could not say it is queued: %s", run.id, error)
            return
        if report_id is not None:
            self.queue.set_report_id(run.id, report_id)
        # the server's share and the lane's, for bench/review.py
        log.info("run %d: said queued (%s change %s) in %.2fs, %.2fs of it waiting for the lane",
                 run.id, run.connector, run.change, time.monotonic() - asked,
                 sent - asked)  # fmt: skip

    # --- closed changes ------------------------------------------------------------------

    def start_withdrawing(self) -> None:
        """Finalise, in the background, the reports of runs whose change was closed
        (:meth:`withdraw_closed`), unless a pass is under way."""
        if self._withdrawing is None or self._withdrawing.done():
            self._withdrawing = asyncio.create_task(self.withdraw_closed())

    async def withdraw_closed(self) -> None:
        """Finalise the report of every run ended by a closed change (queued by this process,
        by a webhook with no loop running, or before a restart): its connector says the run
        was cancelled, without a vote. A run this process is working on is left to its
        worker (it does so when its cancelled flight ends); a failure is logged and tried at
        the next pass."""
        for run in self.queue.to_withdraw():
            connector = self.connectors.get(run.connector)
            if connector is None or run.id in self._holders:
                continue
            ack = self._acks.get(run.id)
            if ack is not None:  # its pending may be on its way: finalise that one
                await asyncio.shield(ack)
            await self._withdraw(connector, self.queue.get(run.id))

    async def _withdraw(self, connector: Connector, run: ReviewRun) -> None:
        reason = run.reason or "the change was closed"
        if isinstance(connector, Withdrawer):
            try:
                await connector.withdrawn(run, reason)
            except Exception as error:
                log.warning("run %d: could not say it was cancelled: %s", run.id, error)
                return
            log.info("run %d: said cancelled: %s", run.id, reason)
        self.queue.mark_withdrawn(run.id)

    async def check_live(self) -> list[ReviewRun]:
        """Ask the server about the change of every run queued or running (a change closed
        while no controller listened is not in a poll's open list): the closed ones' runs
        are ended as a ``closed`` event ends them (:func:`close_change`); returns those."""
        ended: list[ReviewRun] = []
        live = self.queue.runs(state=QUEUED) + self.queue.runs(state=RUNNING)
        for name, connector in self.connectors.items():
            runs = [r for r in live if r.connector == name]
            if not runs or not isinstance(connector, ChangeStates):
                continue
            try:
                events = await connector.closed_changes(runs)
            except Exception as error:
                log.warning("[[review]] %s: cannot ask which changes are closed: %s", name, error)
                continue
            for event in events:
                ended += close_change(self.store, event)
        for run in ended:
            if run.flight_id is not None:
                await asyncio.to_thread(self._end_orphaned, run.flight_id)
        if ended:
            await self.withdraw_closed()
        return ended

    def _end_orphaned(self, flight_id: int) -> None:
        """A flight whose controller is gone (killed with the flight running) has nobody to
        act on its cancel request: its steps left running are ended, its hosts released, and
        it is marked cancelled here."""
        assert self.flights is not None
        if self.flights.runners_of(flight_id):
            return  # a live controller runs it: it acts on the cancel request
        reap_orphans(self.lab.work_dir / str(flight_id), flight_id)
        self.store.reset_unfinished(flight_id)
        self.store.clear_cancel_request(flight_id)
        self.store.set_flight_state(flight_id, FlightState.CANCELLED, Outcome.CANCELLED)

    # --- the queue -----------------------------------------------------------------------

    async def process_once(self) -> list[ReviewRun]:
        """Work on claimable runs until none is left; returns the runs as they ended. Runs of
        a dead controller of this host are taken over at once."""
        for owner in self.queue.running_owners():
            ours = owner == self.owner or owner.startswith(f"{self.owner}:")
            if not ours and owner_is_dead(owner):
                log.info("taking over the runs of %s (no such process)", owner)
                self.queue.expire_owner(owner)
        done: list[ReviewRun] = []

        async def worker(owner: str) -> None:
            while (run := self.queue.claim(owner, self.lease_s, list(self.connectors))) is not None:
                self._holders[run.id] = owner
                try:
                    await self.handle(run)
                finally:
                    del self._holders[run.id]
                done.append(self.queue.get(run.id))

        # each worker holds its runs under a name of its own: a lease's holder may take its
        # rows again, so workers sharing one would take each other's runs
        workers = max(1, self.parallel)
        owners = [self.owner] if workers == 1 else [f"{self.owner}:{i}" for i in range(workers)]
        await asyncio.gather(*(worker(owner) for owner in owners))
        return sorted(done, key=lambda r: r.id)

    async def catch_up(self) -> None:
        """Queue what every connector says may have no result yet (its reconcile); a connector
        that cannot answer is logged and left for the next time."""
        for name, connector in self.connectors.items():
            try:
                events = await connector.reconcile()
            except Exception as error:
                log.warning("[[review]] %s: cannot list its open changes: %s", name, error)
                continue
            runs = [run for run in map(self.receive, events) if run is not None]
            acks = [self._acks[run.id] for run in runs if run.id in self._acks]
            await asyncio.gather(*map(asyncio.shield, acks))

    async def once(self) -> list[ReviewRun]:
        """Catch up with every connector, end the runs of changes closed meanwhile
        (:meth:`check_live`), then work on the queue until it is empty (``labgate review run
        --once``)."""
        await self.catch_up()
        await self.check_live()
        await self.withdraw_closed()
        return await self.process_once()

    async def run_forever(self, poll_s: float = 30.0) -> None:
        """Listen to every connector and process the queue as runs arrive (``labgate serve``,
        ``labgate review run``). First, at once: ``pending`` for the runs a killed controller
        queued but never said so of, and each connector's reconcile (its first poll or
        connect, whose new runs get theirs); then the runs of changes closed meanwhile are
        ended (:meth:`check_live`) before any run is worked on."""
        self.acknowledge_queued()
        listeners = [asyncio.create_task(self.listen(c)) for c in self.connectors.values()]
        try:
            ended = await self.check_live()
            log.info("start-up check done: %d run(s) of closed changes ended", len(ended))
            while True:
                self.start_withdrawing()
                self.wake.clear()
                await self.process_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), poll_s)
        finally:
            tasks = [*listeners, *([self._withdrawing] if self._withdrawing else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def handle(self, run: ReviewRun) -> None:
        """Test one claimed run and vote, or finish what a dead controller left of it."""
        spec = self.specs[run.connector]
        connector = self.connectors[run.connector]
        try:
            await self._handle(spec, connector, run)
        except asyncio.CancelledError:
            # stopped (Ctrl-C, SIGTERM): the run is claimable again at once, its flight resumed
            self.queue.release(run.id, self._holder(run), "the controller was stopped")
            raise

    async def _handle(self, spec: ReviewSpec, connector: Connector, run: ReviewRun) -> None:
        ack = self._acks.get(run.id)
        if ack is not None:
            await asyncio.shield(ack)
            run = self.queue.get(run.id)
        if run.vote_state == INTENT:
            await self._finish_intent(connector, run)
            return
        try:
            flight_id = run.flight_id or await self._plan(connector, run, spec)
        except (Superseded, Closed) as why:
            log.info("run %d superseded: %s", run.id, why)
            self.queue.finish(run.id, SUPERSEDED, str(why))
            if isinstance(why, Closed):
                await self._withdraw(connector, self.queue.get(run.id))
            return
        except PatchFailed as error:
            await self._vote(connector, run, patch_vote(str(error), self.lab.disabled,
                                                        spec.voting, run.marker))  # fmt: skip
            return
        except (FlightError, GitError) as error:
            vote = error_vote(
                str(error),
                self.lab.disabled,
                spec.voting,
                run.marker,
                attempts_left=run.attempt <= spec.retries,
            )
            await self._vote(connector, run, vote)
            return
        except PatchUnavailable as error:
            self._postpone(run, str(error))
            return
        self.queue.set_flight(run.id, flight_id)
        run = self.queue.get(run.id)
        if self._closed(run):
            # closed while it was planned (nothing to cancel then): never run, never left queued
            self.store.set_flight_state(flight_id, FlightState.CANCELLED, Outcome.CANCELLED)
            await self._withdraw(connector, self.queue.get(run.id))
            return
        if Users(self.store.engine).embargo(flight_id) is not None:
            # an embargoed flight's results are its group's: nothing goes to a public review
            await self._run_flight(run, flight_id)
            self.queue.finish(run.id, EMBARGOED, f"flight {flight_id} is under embargo: no vote")
            return
        try:
            report_id = await connector.started(run, flight_url(spec.web_url, flight_id))
        except Exception as error:  # a pending status is a courtesy; the vote is what counts
            log.warning("run %d: could not say testing started: %s", run.id, error)
        else:
            if report_id is not None and report_id != run.report_id:
                self.queue.set_report_id(run.id, report_id)
                run = self.queue.get(run.id)
        flight = await self._run_flight(run, flight_id)
        if self._closed(run):
            await self._withdraw(connector, self.queue.get(run.id))
            return
        vote = self._decide(run, spec, flight)
        await self._vote(connector, run, vote)

    def _closed(self, run: ReviewRun) -> bool:
        """Whether the run's change was closed while it ran (:func:`close_change`): no vote."""
        now = self.queue.get(run.id)
        if now.state != SUPERSEDED:
            return False
        log.info("run %d: %s: no vote", run.id, now.reason)
        return True

    async def _plan(self, connector: Connector, run: ReviewRun, spec: ReviewSpec) -> int:
        """Store the run's review flight: the patch as the tree under test, every other tree
        at the branch's pins. A patch fetched as a ref is judged against the branch's baseline
        as it is; one its connector applies onto the branch's tested head (a
        :class:`~labgate.review.base.PatchSource`'s) against a baseline of that head, made
        first when the branch has none."""
        branch = self.lab.branch(spec.branch)
        assert self.flights is not None and self.flights.mirrors is not None
        mirrors = self.flights.mirrors
        if isinstance(connector, PatchSource):
            others = await self._baseline(spec.branch)
            try:
                async with self._mirrors_lock:
                    sha = await connector.patch_commit(
                        run, mirrors, branch.tree, others[branch.tree]
                    )
            except (GitError, PatchFailed, Closed):
                raise  # the base cannot be had, the patch does not apply, the change is closed
            except Exception as error:
                raise PatchUnavailable(f"cannot get the patch: {error}") from error
        else:
            refs = self.lab.revision_refs(spec.branch)
            pinned = {k: v for k, v in refs.items() if k != branch.tree}
            async with self._mirrors_lock:
                others = await asyncio.to_thread(resolve_revisions, self.lab, mirrors, pinned)
                sha = await asyncio.to_thread(mirrors.fetch_ref, branch.tree, run.ref)
            if run.revision and sha != run.revision:
                raise Superseded(f"{run.ref} is at {sha[:12]} now, not {run.revision[:12]}")
        revisions = {**others, branch.tree: sha}
        flight_id = self.flights.plan(spec.branch, revisions=revisions, blessing=Blessing.REVIEW)
        log.info("run %d: flight %d", run.id, flight_id)
        return flight_id

    async def _baseline(self, branch: str) -> dict[str, str]:
        """The branch's tested revision tuple (the tree under test at its ``tested`` ref, the
        others at their pins), after making it the baseline when the branch has none: a
        ``real`` flight of it (one a killed loop left unfinished is resumed)."""
        spec = self.lab.branch(branch)
        assert self.flights is not None and self.flights.mirrors is not None
        refs = {**self.lab.revision_refs(branch), spec.tree: spec.tested}
        async with self._mirrors_lock:
            tested = await asyncio.to_thread(
                resolve_revisions, self.lab, self.flights.mirrors, refs
            )
        async with self._baseline_lock:
            if self.store.baseline(branch) is not None:
                return tested
            recent = self.store.list_flights(branch, blessing=Blessing.REAL, limit=20)
            same = [f for f in recent if dict(f.revisions) == tested]
            if same and same[0].state is FlightState.FINISHED:
                flight_id = same[0].id
            else:
                flight_id = (
                    same[0].id
                    if same
                    else self.flights.plan(branch, revisions=tested, blessing=Blessing.REAL)
                )
                log.info("%s: no baseline yet: flight %d tests %s", branch, flight_id, spec.tested)
                await self.flights.run(flight_id)
            self.store.set_baseline(branch, flight_id)
            return tested

    async def _run_flight(self, run: ReviewRun, flight_id: int) -> FlightResult:
        holder = self._holder(run)
        renewing = asyncio.create_task(
            renew_every(
                self.lease_s, lambda: self.queue.renew(run.id, holder, self.lease_s), floor_s=1
            )
        )
        try:
            assert self.flights is not None
            return await self.flights.run(flight_id)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    def _decide(self, run: ReviewRun, spec: ReviewSpec, flight: FlightResult) -> Vote:
        baseline_id = self.store.baseline(spec.branch)
        baseline = self.store.get_flight(baseline_id) if baseline_id is not None else None
        history = branch_evidence(self.store, spec.branch, flight)
        verdict = judge(self.lab, spec.branch, flight, baseline, history)
        return vote_for(
            verdict,
            flight,
            self.lab.disabled,
            spec.voting,
            web_url=spec.web_url,
            attempts_left=run.attempt <= spec.retries,
            marker=run.marker,
        )

    async def _vote(self, connector: Connector, run: ReviewRun, vote: Vote) -> None:
        if not self.queue.record_intent(run.id, vote):
            now = self.queue.get(run.id)
            if now.vote_state == WITHDRAW:  # its change was closed as its flight ended
                log.info("run %d: %s: no vote", run.id, now.reason)
                await self._withdraw(connector, now)
                return
            # an intent was recorded before (by a run of this loop that died): it stands
            await self._finish_intent(connector, now)
            return
        await self._post(connector, self.queue.get(run.id), vote)

    async def _finish_intent(self, connector: Connector, run: ReviewRun) -> None:
        vote = Vote(
            verified=run.vote if run.vote in (-1, 0, 1) else 0,  # type: ignore[arg-type]
            message=run.message or "",
            voting=bool(run.voting),
            summary=summary_of(run.message or ""),
            target_url=flight_url(self.specs[run.connector].web_url, run.flight_id)
            if run.flight_id is not None
            else None,
            retest=run.retest,
        )
        try:
            if await connector.reported(run):
                log.info("run %d: the server already has its vote", run.id)
                self.queue.mark_voted(run.id, retry=run.event() if vote.retest else None)
                return
        except Exception as error:
            self._postpone(run, f"cannot tell whether the vote was posted: {error}")
            return
        await self._post(connector, run, vote)

    async def _post(self, connector: Connector, run: ReviewRun, vote: Vote) -> None:
        try:
            await connector.report(run, vote)
        except Refused as why:
            log.warning("run %d: %s", run.id, why)
            self.queue.finish(run.id, ERROR, str(why))
            return
        except Exception as error:
            self._postpone(run, f"posting the vote failed: {error}")
            return
        retry = self.queue.mark_voted(run.id, retry=run.event() if vote.retest else None)
        log.info("run %d: voted %+d%s", run.id, vote.verified,
                 f", attempt {retry.attempt} queued" if retry else "")  # fmt: skip

    def _postpone(self, run: ReviewRun, reason: str) -> None:
        log.warning("run %d: %s; trying again in %gs", run.id, reason, RETRY_POST_S)
        self.queue.release(run.id, self._holder(run), reason, delay_s=RETRY_POST_S)

    def _holder(self, run: ReviewRun) -> str:
        """The name the run's lease is held under (its worker's)."""
        return self._holders.get(run.id, self.owner)
