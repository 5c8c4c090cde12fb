"""The scheduler is a pure function: ready jobs + hosts → allocations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from labgate.schedule import HostSlots, ReadyJob, allocate

AMD = frozenset({"arch-amd64"})
ARM = frozenset({"arch-arm64"})


def job(i: int, requires: frozenset[str] = AMD, exclusive: bool = False) -> ReadyJob:
    return ReadyJob(i, f"job{i}", requires, exclusive)


def test_jobs_go_only_to_hosts_with_every_required_flag() -> None:
    hosts = [HostSlots("x86", AMD | {"cpu-intel"}, 2), HostSlots("arm", ARM, 2)]
    out = allocate([job(1, AMD | {"cpu-intel"}), job(2, ARM), job(3, frozenset({"gpu"}))], hosts)
    assert {(a.job_id, a.host) for a in out} == {(1, "x86"), (2, "arm")}


def test_slots_limit_parallel_jobs_and_the_rest_wait() -> None:
    out = allocate([job(i) for i in range(5)], [HostSlots("h", AMD, 2, used=1)])
    assert [a.job_id for a in out] == [0]


def test_exclusive_job_takes_every_slot_and_needs_an_idle_host() -> None:
    hosts = [HostSlots("busy", AMD, 4, used=1), HostSlots("idle", AMD, 4)]
    out = allocate([job(1, exclusive=True), job(2)], hosts)
    assert out[0].host == "idle" and out[0].slots == 4
    assert out[1].host == "busy"


def test_exclusive_job_waiting_for_a_host_reserves_it_against_small_jobs() -> None:
    hosts = [HostSlots("h", AMD, 2, used=1)]
    assert allocate([job(1, exclusive=True), job(2)], hosts) == []


def test_prefers_the_host_that_ran_the_job_last() -> None:
    hosts = [HostSlots("a", AMD, 2), HostSlots("b", AMD, 2)]
    out = allocate([job(1)], hosts, last_host={"job1": "b"})
    assert out[0].host == "b"


def test_spreads_load_when_there_is_no_preference() -> None:
    hosts = [HostSlots("a", AMD, 2, used=1), HostSlots("b", AMD, 2)]
    assert allocate([job(1)], hosts)[0].host == "b"


hosts_strategy = st.lists(
    st.builds(
        HostSlots,
        name=st.sampled_from(["h0", "h1", "h2", "h3"]),
        flags=st.frozensets(st.sampled_from(["a", "b", "c"])),
        slots=st.integers(1, 4),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda h: h.name,
)
jobs_strategy = st.lists(
    st.builds(
        ReadyJob,
        id=st.integers(0, 10_000),
        name=st.sampled_from(["j0", "j1", "j2"]),
        requires=st.frozensets(st.sampled_from(["a", "b", "c"]), max_size=2),
        exclusive=st.booleans(),
    ),
    max_size=12,
    unique_by=lambda j: j.id,
)


@settings(max_examples=300, deadline=None)
@given(hosts=hosts_strategy, jobs=jobs_strategy, data=st.data())
def test_never_oversubscribes_and_respects_flags(
    hosts: list[HostSlots], jobs: list[ReadyJob], data: st.DataObject
) -> None:
    hosts = [HostSlots(h.name, h.flags, h.slots, data.draw(st.integers(0, h.slots))) for h in hosts]
    out = allocate(jobs, hosts)
    by_host = {h.name: h for h in hosts}
    by_job = {j.id: j for j in jobs}
    used = {h.name: h.used for h in hosts}
    assert len({a.job_id for a in out}) == len(out)
    for a in out:
        j, h = by_job[a.job_id], by_host[a.host]
        assert j.requires <= h.flags
        if j.exclusive:
            assert used[a.host] == 0 and a.slots == h.slots
        used[a.host] += a.slots
    assert all(used[n] <= by_host[n].slots for n in used)
    # work-conserving: with no exclusive job about, a job is left waiting only when every host
    # that could run it is full
    if not any(j.exclusive for j in jobs):
        placed = {a.job_id for a in out}
        for j in jobs:
            if j.id not in placed:
                assert all(used[h.name] == h.slots for h in hosts if j.requires <= h.flags)


def test_a_job_broken_on_a_host_is_retried_on_another_when_one_is_free() -> None:
    hosts = [HostSlots("a", AMD, 2), HostSlots("b", AMD, 2, used=1)]
    assert allocate([job(1)], hosts, last_host={"job1": "a"}, avoid={"job1": "a"})[0].host == "b"
    full = [HostSlots("a", AMD, 2), HostSlots("b", AMD, 1, used=1)]
    assert allocate([job(1)], full, avoid={"job1": "a"})[0].host == "a"


def test_a_job_is_blocked_only_by_dependencies_that_ended_without_passing() -> None:
    from labgate.model import Outcome
    from labgate.schedule import blocked_reason

    outcomes = {
        "build": Outcome.FAIL,
        "docs": Outcome.SKIP,
        "tools": Outcome.RUNNING,
        "lint": Outcome.BROKEN,
    }
    assert blocked_reason(["docs", "tools"], outcomes) is None
    assert (
        blocked_reason(["build", "docs", "lint", "tools"], outcomes)
        == "dependency did not pass: build fail, lint broken"
    )
