"""The pool's allocation on both stores: priorities by blessing, fairness among branches, the
regression's host preferred by a bisection, hosts avoided, quarantine respected, leases reaped.
(Several real controller processes racing: tests/integration/test_controllers.py.)"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest

from labgate.model import Blessing, HostSpec, JobSpec, Outcome, StepSpec
from labgate.store import Store
from labgate.store.hosts import HostRegistry
from labgate.store.slots import Allocator


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store.open(database_url) as opened:
        yield opened


def flight(store: Store, branch: str, blessing: Blessing, names: Sequence[str]) -> int:
    jobs = [JobSpec(n, (StepSpec("s", "true"),)) for n in names]
    flight_id = store.create_flight(branch, blessing, {"xen": "0" * 40}, jobs)
    store.submit_flight(flight_id)
    return flight_id


def host(name: str, slots: int = 1, flags: Sequence[str] = ()) -> HostSpec:
    return HostSpec(name, frozenset(flags), slots)


def allocator(store: Store, hosts: Sequence[HostSpec], owner: str = "c0") -> Allocator:
    pool = Allocator(store.engine, hosts, owner, lease_s=60)
    pool.sync()
    return pool


def run_through(pool: Allocator, store: Store) -> list[tuple[int, str]]:
    """Claim one job at a time on a one-slot host until none is left: (flight, job) in order."""
    order = []
    while claims := pool.claim():
        for c in claims:
            order.append((c.flight_id, c.job))
            store.finish_job(c.job_id, Outcome.PASS)
            pool.release(c.job_id)
    return order


def test_blessings_go_in_priority_order_and_branches_take_turns(store: Store) -> None:
    bisect = flight(store, "a", Blessing.BISECT, ["b1"])
    adhoc = flight(store, "a", Blessing.ADHOC, ["d1"])
    real_a = flight(store, "a", Blessing.REAL, ["r1", "r2", "r3"])
    real_b = flight(store, "b", Blessing.REAL, ["s1", "s2"])
    review = flight(store, "c", Blessing.REVIEW, ["v1"])
    order = run_through(allocator(store, [host("h0")]), store)
    assert order == [
        (real_a, "r1"),
        (real_b, "s1"),
        (real_a, "r2"),
        (real_b, "s2"),
        (real_a, "r3"),
        (review, "v1"),
        (adhoc, "d1"),
        (bisect, "b1"),
    ]


def test_a_configured_priority_puts_bisection_first(store: Store) -> None:
    real = flight(store, "a", Blessing.REAL, ["r1"])
    bisect = flight(store, "a", Blessing.BISECT, ["b1"])
    pool = Allocator(store.engine, [host("h0")], "c0", priority=("bisect", "real"))
    pool.sync()
    assert run_through(pool, store) == [(bisect, "b1"), (real, "r1")]


def test_no_slot_is_given_twice_and_an_exclusive_job_takes_the_host(store: Store) -> None:
    jobs = [JobSpec(f"j{i}", (StepSpec("s", "true"),)) for i in range(5)]
    jobs.append(JobSpec("x", (StepSpec("s", "true"),), exclusive=True))
    flight_id = store.create_flight("a", Blessing.REAL, {}, jobs)
    store.submit_flight(flight_id)
    one, two = (allocator(store, [host("h0", slots=2)], owner) for owner in ("c1", "c2"))
    first = one.claim()
    assert [c.job for c in first] == ["j0", "j1"]
    assert two.claim() == []  # both slots are held
    for c in first:
        store.finish_job(c.job_id, Outcome.PASS)
        one.release(c.job_id)
    order = [c.job for c in two.claim()]
    assert order == ["j2", "j3"]


def test_a_bisection_prefers_the_host_where_the_regression_was_seen(store: Store) -> None:
    hosts = [host("h0"), host("h1"), host("h2")]
    failed = flight(store, "a", Blessing.REAL, ["test"])
    job = store.flight_jobs(failed)[0]
    store.start_job(job.id, "h2")
    store.finish_job(job.id, Outcome.FAIL)
    flight(store, "a", Blessing.BISECT, ["test"])
    [claim] = allocator(store, hosts).claim()
    assert claim.host == "h2"


def test_hosts_lost_under_a_job_quarantined_or_reserved_are_not_given(store: Store) -> None:
    hosts = [host("h0"), host("h1"), host("h2"), host("h3")]
    flight_id = flight(store, "a", Blessing.REAL, ["t"])
    job = store.flight_jobs(flight_id)[0]
    attempt = store.start_job(job.id, "h0")
    store.end_job(
        job.id, Outcome.BROKEN, "host lost", host="h0", attempt=attempt, quarantine_after=9,
        queue_again="host lost; queued again",
    )  # fmt: skip
    registry = HostRegistry(store.engine)
    registry.quarantine("h1", "fan noise")
    registry.reserve("h2", "ian", "debugging", timedelta(hours=2))
    [claim] = allocator(store, hosts).claim()
    assert claim.host == "h3"


def test_an_expired_lease_puts_the_job_back_in_the_queue(store: Store) -> None:
    flight_id = flight(store, "a", Blessing.REAL, ["t"])
    dead = Allocator(store.engine, [host("h0")], "dead", lease_s=-1)  # already expired
    dead.sync()
    [claim] = dead.claim()
    assert store.flight_jobs(flight_id)[0].outcome is Outcome.PREPARING  # the claim started it
    alive = allocator(store, [host("h0")], "alive")
    assert alive.claim() == []  # the slot is held until the lease is reaped
    assert alive.reap() == [claim.job_id]
    assert store.flight_jobs(flight_id)[0].outcome is Outcome.QUEUED
    [again] = alive.claim()
    assert (again.job_id, again.host) == (claim.job_id, "h0")
    assert alive.heartbeat() == {claim.job_id}
    assert dead.heartbeat() == set()
    [event] = [e for e in HostRegistry(store.engine).history("h0") if e.kind == "lease-expired"]
    assert event.reason == "controller dead stopped renewing its lease on h0"


@pytest.mark.parametrize("batch", [1, 32])
def test_a_claim_finds_a_startable_job_behind_many_that_wait(store: Store, batch: int) -> None:
    """A claim reads each flight's oldest queued jobs, enough to fill its candidates; when those
    wait for a dependency, it reads the rest of the queue: the job at the end that waits for
    nothing still gets the slot left free."""
    pool = Allocator(store.engine, [host("h0", slots=2)], "c0", lease_s=60, batch=batch)
    pool.sync()
    step = (StepSpec("s", "true"),)
    jobs = [JobSpec("build", step)]
    jobs += [JobSpec(f"test-{i}", step, depends=("build",)) for i in range(300)]
    jobs.append(JobSpec("lone", step))
    flight_id = store.create_flight("a", Blessing.REAL, {"xen": "0" * 40}, jobs)
    store.submit_flight(flight_id)
    claimed = sorted(c.job for c in pool.claim() + pool.claim())
    assert claimed == ["build", "lone"]


def test_a_jobs_last_step_ends_with_the_job_in_one_write(store: Store) -> None:
    """Store.end_job with ``last_step`` records the step's end as finish_step would, on both of
    end_job's paths (a transaction; on PostgreSQL one statement for a usual end on a host seen
    before), and gives the slot back."""
    from labgate.store.flights import StepEnd

    pool = allocator(store, [host("h0")])
    flight_id = flight(store, "a", Blessing.REAL, ["j0", "j1", "j2"])
    expected = {}
    # the first two ends make the host known; the third takes the one-statement path
    ends = ((Outcome.BROKEN, 2, "disk full"), (Outcome.PASS, 0, None), (Outcome.FAIL, 3, "x"))
    for outcome, status, reason in ends:
        [claim] = pool.claim()  # the slot the job before gave back
        [step_id] = next(j for j in store.flight_jobs(flight_id) if j.id == claim.job_id).step_ids
        store.start_step(step_id, f"{claim.job}.log", job_running=claim.job_id)
        store.end_job(
            claim.job_id, outcome, reason, host="h0", attempt=claim.attempt, quarantine_after=9,
            last_step=StepEnd(step_id, outcome, status, 0.25, reason),
        )  # fmt: skip
        expected[claim.job] = (outcome, (outcome, status, 0.25, reason))
    ended = store.get_flight(flight_id)
    got = {
        j.name: (j.outcome, (j.steps[0].outcome, j.steps[0].exit_status, j.steps[0].duration_s,
                             j.steps[0].reason))
        for j in ended.jobs
    }  # fmt: skip
    assert got == expected
    assert all(j.steps[0].finished for j in ended.jobs)
    assert pool.claim() == []  # nothing queued; the slot is free again:
    assert flight(store, "a", Blessing.REAL, ["j3"]) and len(pool.claim()) == 1


def test_each_end_of_a_job_records_it_gives_its_slot_back_and_ends_the_broken_streak(
    store: Store,
) -> None:
    """Store.end_job's one-statement path (PostgreSQL, a host already seen) does what the
    transaction of several statements does: a job's end is recorded only while its attempt is
    live, and only then are its slots given back; every end is in the host's history."""
    pool = allocator(store, [host("h0")])
    flight_id = flight(store, "a", Blessing.REAL, ["j0", "j1", "j2"])

    def end(job_id: int, outcome: Outcome, reason: str | None = None) -> None:
        store.end_job(job_id, outcome, reason, host="h0", attempt=1, quarantine_after=9)

    def streak() -> int:
        return store.hosts.statuses(["h0"])["h0"].broken_streak

    [first] = pool.claim()
    end(first.job_id, Outcome.BROKEN, "disk full")
    assert streak() == 1
    [second] = pool.claim()  # the broken job gave its slot back
    end(second.job_id, Outcome.PASS)
    assert streak() == 0
    [third] = pool.claim()
    end(first.job_id, Outcome.PASS, "a late end")  # no longer live: nothing changes but history
    assert pool.claim() == []  # the third job still holds the one slot
    end(third.job_id, Outcome.FAIL, "exit status 1")
    jobs = {j.spec.name: j.outcome for j in store.flight_jobs(flight_id)}
    assert jobs == {"j0": Outcome.BROKEN, "j1": Outcome.PASS, "j2": Outcome.FAIL}
    history = [
        (e.job_id, e.outcome, e.reason) for e in store.hosts.history("h0") if e.kind == "job"
    ]
    assert sorted(history, key=str) == sorted(
        [
            (first.job_id, "broken", "disk full"),
            (second.job_id, "pass", None),
            (first.job_id, "pass", "a late end"),
            (third.job_id, "fail", "exit status 1"),
        ],
        key=str,
    )
    assert streak() == 0
    follow = flight(store, "a", Blessing.REAL, ["j3"])
    [fourth] = pool.claim()  # the third job's end gave the slot back
    assert fourth.flight_id == follow
