"""The review loop shared by every connector: events → the durable queue → a ``review`` flight
per patch set → a verdict → a vote, exactly once per run.

Never voting twice: a run's vote is decided, then recorded as an *intent* (a guarded update: one
intent per run), then posted, then marked ``done``. A controller killed before the intent simply
tests the run again (its flight is resumed, finished jobs keep their results); killed between
the intent and ``done``, it asks the connector whether the server already has the report
(:meth:`~labgate.review.base.Connector.reported`) and posts only if not. Runs are claimed with a
lease, so controllers sharing a PostgreSQL store never work on the same run; the queue survives
any restart of ``labgate serve`` or ``labgate review run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from labgate.config import Lab
from labgate.evidence import branch_evidence, judge
from labgate.flight import FlightError, resolve_revisions
from labgate.flights import Flights
from labgate.git import GitError
from labgate.heartbeat import renew_every
from labgate.model import Blessing, FlightResult, ReviewSpec
from labgate.review.base import ChangeEvent, Connector, ReviewRun, Vote
from labgate.review.vote import error_vote, flight_url, summary_of, vote_for
from labgate.store import Store, owner_is_dead, process_owner
from labgate.store.review import INTENT, SUPERSEDED
from labgate.store.users import Users

EMBARGOED = "embargoed"
"""A run whose flight is under embargo: tested, never voted on."""

log = logging.getLogger("labgate.review")

RETRY_POST_S = 60.0
"""How long a run whose vote could not be posted waits before it is tried again."""


class Superseded(Exception):
    """The run's patch set is no longer the one its ref points at."""


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

    def __post_init__(self) -> None:
        if self.flights is None:
            self.flights = Flights(self.lab, self.store)
        self.queue = self.store.review
        self.specs: dict[str, ReviewSpec] = {r.name: r for r in self.lab.reviews}
        self.wake = asyncio.Event()

    # --- events in -----------------------------------------------------------------------

    def enqueue(self, event: ChangeEvent) -> ReviewRun | None:
        run = self.queue.enqueue(event)
        if run is not None:
            log.info("queued run %d: %s change %s patch set %s", run.id, run.connector,
                     run.change, run.patchset)  # fmt: skip
            self.wake.set()
        return run

    async def listen(self, connector: Connector) -> None:
        """Queue every event the connector yields (it reconciles after each (re)connect)."""
        async for event in connector.events():
            self.enqueue(event)

    # --- the queue -----------------------------------------------------------------------

    async def process_once(self) -> list[ReviewRun]:
        """Work on claimable runs until none is left; returns the runs as they ended. Runs of
        a dead controller of this host are taken over at once."""
        for owner in self.queue.running_owners():
            if owner != self.owner and owner_is_dead(owner):
                log.info("taking over the runs of %s (no such process)", owner)
                self.queue.expire_owner(owner)
        done = []
        while (
            run := self.queue.claim(self.owner, self.lease_s, list(self.connectors))
        ) is not None:
            await self.handle(run)
            done.append(self.queue.get(run.id))
        return done

    async def run_forever(self, poll_s: float = 30.0) -> None:
        """Listen to every connector and process the queue as runs arrive (``labgate serve``,
        ``labgate review run``)."""
        listeners = [asyncio.create_task(self.listen(c)) for c in self.connectors.values()]
        try:
            while True:
                self.wake.clear()
                await self.process_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), poll_s)
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)

    async def handle(self, run: ReviewRun) -> None:
        """Test one claimed run and vote, or finish what a dead controller left of it."""
        spec = self.specs[run.connector]
        connector = self.connectors[run.connector]
        if run.vote_state == INTENT:
            await self._finish_intent(connector, run)
            return
        try:
            flight_id = run.flight_id or self._plan(run, spec)
        except Superseded as why:
            log.info("run %d superseded: %s", run.id, why)
            self.queue.finish(run.id, SUPERSEDED, str(why))
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
        self.queue.set_flight(run.id, flight_id)
        run = self.queue.get(run.id)
        if Users(self.store.engine).embargo(flight_id) is not None:
            # an embargoed flight's results are its group's: nothing goes to a public review
            await self._run_flight(run, flight_id)
            self.queue.finish(run.id, EMBARGOED, f"flight {flight_id} is under embargo: no vote")
            return
        try:
            await connector.started(run, flight_url(spec.web_url, flight_id))
        except Exception as error:  # a pending status is a courtesy; the vote is what counts
            log.warning("run %d: could not say testing started: %s", run.id, error)
        flight = await self._run_flight(run, flight_id)
        vote = self._decide(run, spec, flight)
        await self._vote(connector, run, vote)

    def _plan(self, run: ReviewRun, spec: ReviewSpec) -> int:
        """Store the run's review flight: the patch as the tree under test, every other tree
        at the branch's pins."""
        branch = self.lab.branch(spec.branch)
        assert self.flights is not None and self.flights.mirrors is not None
        mirrors = self.flights.mirrors
        refs = self.lab.revision_refs(spec.branch)
        others = resolve_revisions(
            self.lab, mirrors, {k: v for k, v in refs.items() if k != branch.tree}
        )
        sha = mirrors.fetch_ref(branch.tree, run.ref)
        if run.revision and sha != run.revision:
            raise Superseded(f"{run.ref} is at {sha[:12]} now, not {run.revision[:12]}")
        revisions = {tree: sha if tree == branch.tree else others[tree] for tree in refs}
        flight_id = self.flights.plan(spec.branch, revisions=revisions, blessing=Blessing.REVIEW)
        log.info("run %d: flight %d", run.id, flight_id)
        return flight_id

    async def _run_flight(self, run: ReviewRun, flight_id: int) -> FlightResult:
        renewing = asyncio.create_task(
            renew_every(
                self.lease_s, lambda: self.queue.renew(run.id, self.owner, self.lease_s), floor_s=1
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
            # an intent was recorded before (by a run of this loop that died): it stands
            await self._finish_intent(connector, self.queue.get(run.id))
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
        except Exception as error:
            self._postpone(run, f"posting the vote failed: {error}")
            return
        retry = self.queue.mark_voted(run.id, retry=run.event() if vote.retest else None)
        log.info("run %d: voted %+d%s", run.id, vote.verified,
                 f", attempt {retry.attempt} queued" if retry else "")  # fmt: skip

    def _postpone(self, run: ReviewRun, reason: str) -> None:
        log.warning("run %d: %s; trying again in %gs", run.id, reason, RETRY_POST_S)
        self.queue.release(run.id, self.owner, reason, delay_s=RETRY_POST_S)
