"""A controller of the pool: runs the queued jobs of every flight handed to the pool, on the
lab's hosts, sharing them with every other controller on the same store (``labgate host
worker``; several on several machines, or several processes on one).

The loop: free expired leases (:meth:`Allocator.reap`), move flights along (block the jobs whose
dependency did not pass, finish a flight whose jobs all ended), claim slots for ready jobs, run
each claimed job with the flight runner's job code, give its slots back. Heartbeats renew the
leases; a job whose lease was taken away (this controller was cut off longer than its lease) is
cancelled here, as it runs elsewhere now.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from labgate import schema as t
from labgate.config import Lab
from labgate.executor import Executor, LocalExecutor
from labgate.flight import FlightRun, mirrors_for
from labgate.git import Mirrors
from labgate.hosts.allocation import ACTIVE_FLIGHT_STATES, BLESSING_PRIORITY, Allocator, Claim
from labgate.model import FlightState, Outcome, flight_outcome
from labgate.schedule import blocked_reason
from labgate.store import Store, process_owner

SYNC_ATTEMPTS = 5


@dataclass
class Controller:
    lab: Lab
    store: Store
    owner: str = field(default_factory=process_owner)
    lease_s: float = 30.0
    poll_s: float = 1.0
    executor: Executor = field(default_factory=LocalExecutor)
    priority: tuple[str, ...] = BLESSING_PRIORITY
    jobs_run: int = 0

    async def run(self, *, until_idle: bool = False) -> None:
        """Serve the pool; with ``until_idle``, return once no flight of the pool is active."""
        allocator = Allocator(
            self.store.engine,
            self.lab.hosts,
            self.owner,
            lease_s=self.lease_s,
            priority=self.priority,
        )
        self._sync(allocator)
        mirrors = mirrors_for(self.lab)
        running: dict[asyncio.Task[Outcome], Claim] = {}
        beat = asyncio.create_task(self._heartbeats(allocator, running))
        try:
            while True:
                allocator.reap()
                active = self._advance_flights()
                for claim in allocator.claim():
                    running[asyncio.create_task(self._run(claim, mirrors))] = claim
                if until_idle and not active and not running:
                    return
                if not running:
                    await asyncio.sleep(self.poll_s)  # poll the store for new work
                    continue
                done, _ = await asyncio.wait(
                    running, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    claim = running.pop(task)
                    allocator.release(claim.job_id)
                    self.jobs_run += 1
                    if not task.cancelled():
                        task.result()
        finally:
            beat.cancel()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, beat, return_exceptions=True)
            for claim in running.values():
                allocator.release(claim.job_id)

    def _sync(self, allocator: Allocator) -> None:
        """Record the lab's hosts and their slots; controllers starting together race to insert
        the same rows, and the losers see them on the next try."""
        for attempt in range(SYNC_ATTEMPTS):
            try:
                self.store.sync_hosts(self.lab.hosts)
                allocator.sync()
                return
            except IntegrityError:
                if attempt == SYNC_ATTEMPTS - 1:
                    raise

    async def _heartbeats(
        self, allocator: Allocator, running: dict[asyncio.Task[Outcome], Claim]
    ) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            claimed = list(running.items())  # before: a job claimed meanwhile is not yet held
            held = await asyncio.to_thread(allocator.heartbeat)
            for task, claim in claimed:
                if claim.job_id not in held:  # taken away: it runs elsewhere now
                    task.cancel()

    async def _run(self, claim: Claim, mirrors: Mirrors) -> Outcome:
        jobs = {j.id: j for j in self.store.flight_jobs(claim.flight_id)}
        run = FlightRun(
            self.lab, self.store, claim.flight_id, executor=self.executor, mirrors=mirrors
        )
        return await run.run_job(jobs[claim.job_id], claim.host)

    def _advance_flights(self) -> bool:
        """Block jobs whose dependency did not pass, fail jobs no host can ever run, finish
        flights whose jobs all ended. Returns whether any flight of the pool is still active."""
        with self.store.engine.connect() as conn:
            active = list(
                conn.execute(
                    select(t.flight.c.id, t.flight.c.state)
                    .join(t.pool_flight, t.pool_flight.c.flight_id == t.flight.c.id)
                    .where(t.flight.c.state.in_(ACTIVE_FLIGHT_STATES))
                )
            )
        still = False
        for flight_id, state in active:
            jobs = self.store.flight_jobs(flight_id)
            outcome = {j.spec.name: j.outcome for j in jobs}
            for j in jobs:
                if outcome[j.spec.name] is not Outcome.QUEUED:
                    continue
                why = blocked_reason(j.spec.depends, outcome)
                if why is not None:
                    self.store.block_job(j.id, why)
                    outcome[j.spec.name] = Outcome.BLOCKED
                elif not any(h.flags >= set(j.spec.requires) for h in self.lab.hosts):
                    reason = "no host of the lab has the flags it requires"
                    self.store.finish_job(j.id, Outcome.BROKEN, reason)
                    outcome[j.spec.name] = Outcome.BROKEN
            if all(o.finished for o in outcome.values()):
                final = flight_outcome(list(outcome.values()))
                self.store.set_flight_state(flight_id, FlightState.FINISHED, final)
                continue
            still = True
            if state == FlightState.QUEUED and any(
                o is not Outcome.QUEUED for o in outcome.values()
            ):
                self.store.set_flight_state(flight_id, FlightState.RUNNING)
        return still
