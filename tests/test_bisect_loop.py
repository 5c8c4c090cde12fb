"""The one search loop (bisect/loop.py) with the real engine and asynchronous tests."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence

import pytest

from labgate.bisect.engine import Answer, Observation, Search, TreeRange
from labgate.bisect.loop import NO_ANSWER_LIMIT, LoopResult, LoopState, drive


def linear(n: int) -> TreeRange:
    """good = c0, then c1 .. cn (bad)."""
    return TreeRange("", {f"c{i}": (f"c{i - 1}",) for i in range(1, n + 1)}, ("c0",), f"c{n}")


async def bounded(search: Awaitable[LoopResult]) -> LoopResult:
    """The search, or TimeoutError if it hangs (a bug): a test never waits for ever."""
    async with asyncio.timeout(60):
        return await search


def index(point: Mapping[str, str]) -> int:
    return int(point[""][1:])


def deterministic() -> Search:
    """A search over c0..c64 told the test is deterministic (--flaky no --intermittent no)."""
    return Search([linear(64)], flaky="no", intermittent="no")


def test_finds_the_culprit_counting_runs_and_rounds() -> None:
    tested: list[int] = []

    async def test(point: Mapping[str, str]) -> Answer:
        tested.append(index(point))
        await asyncio.sleep(0)
        return "bad" if index(point) >= 40 else "good"

    result = asyncio.run(bounded(drive(deterministic(), [], test, k=1)))
    assert result.decision.kind == "culprit"
    assert result.decision.culprit is not None and result.decision.culprit.commit == "c40"
    assert result.runs == len(tested) == len(result.observations) == result.rounds
    assert result.cancelled == 0


def test_an_unanswered_point_is_retried_then_recorded_as_skip() -> None:
    asked: Counter[int] = Counter()

    async def test(point: Mapping[str, str]) -> Answer | None:
        asked[index(point)] += 1
        if index(point) == 20:
            return None  # the lab could not answer there, every time
        return "bad" if index(point) >= 40 else "good"

    search = Search([linear(64)], flaky="no", intermittent="no")
    first = search.decide([]).tests[0]
    assert index(first) != 20
    # make c20 a point the search wants: everything above it bad, below it good so far
    seen = [Observation({"": "c19"}, "good"), Observation({"": "c21"}, "bad")]
    result = asyncio.run(bounded(drive(search, seen, test, k=1)))
    assert asked[20] == NO_ANSWER_LIMIT
    assert Observation({"": "c20"}, "skip") in result.observations
    assert result.runs == sum(asked.values())  # the unanswered runs were runs too
    assert result.decision.kind == "undecided"
    assert result.decision.reason_code == "skipped-commits"


def test_known_answers_are_used_instead_of_tests() -> None:
    stored = {i: ("bad" if i >= 40 else "good") for i in range(0, 65, 2)}
    given: set[int] = set()
    tested: list[int] = []

    def known(point: Mapping[str, str]) -> Sequence[Answer]:
        i = index(point)
        if i in stored and i not in given:
            given.add(i)
            return [stored[i]]  # type: ignore[list-item]
        return []

    async def test(point: Mapping[str, str]) -> Answer:
        tested.append(index(point))
        return "bad" if index(point) >= 40 else "good"

    result = asyncio.run(bounded(drive(deterministic(), [], test, k=2, known=known)))
    assert result.decision.culprit is not None and result.decision.culprit.commit == "c40"
    assert all(i % 2 == 1 for i in tested)  # every even point came from the store
    assert result.runs == len(tested)
    assert len(result.observations) == len(tested) + len(given)


def test_a_culprit_cancels_the_tests_still_running() -> None:
    cancelled: list[int] = []
    search = deterministic()
    seen = [Observation({"": "c39"}, "good")]
    first = sorted(index(p) for p in search.decide(seen, k=4).tests)
    assert len(first) == 4

    async def test(point: Mapping[str, str]) -> Answer:
        if index(point) in first[1:]:  # the first batch but its lowest never finishes alone
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(index(point))
                raise
        return "bad" if index(point) >= 40 else "good"

    result = asyncio.run(bounded(drive(search, seen, test, k=4)))
    assert result.decision.culprit is not None and result.decision.culprit.commit == "c40"
    assert sorted(cancelled) == first[1:]
    assert result.cancelled == 3


def test_an_error_in_a_test_cancels_the_others_and_propagates() -> None:
    cancelled: list[int] = []

    async def test(point: Mapping[str, str]) -> Answer:
        if index(point) == min(waiting):
            raise RuntimeError("the tester broke")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(index(point))
            raise
        return "good"

    search = Search([linear(64)])
    waiting = [index(p) for p in search.decide([], k=3).tests]
    with pytest.raises(RuntimeError, match="the tester broke"):
        asyncio.run(bounded(drive(search, [], test, k=3)))
    assert sorted(cancelled) == sorted(waiting)[1:]


def test_undecided_waits_for_the_tests_still_running() -> None:
    """The bad end passing makes the search undecided while another run goes on: that run is
    waited for and recorded, not cancelled."""
    release = asyncio.Event()
    states: list[LoopState] = []

    async def test(point: Mapping[str, str]) -> Answer:
        if index(point) != 64:
            await release.wait()
        return "good"

    def on_round(state: LoopState) -> None:
        states.append(state)
        if state.decision.kind == "undecided" or any(index(o.point) == 64 for o in state.added):
            release.set()

    # every run passes; told the test is deterministic, one pass at the bad end settles it
    search = Search([linear(64)], flaky="no", intermittent="no")
    seen = [Observation({"": f"c{i}"}, "good") for i in range(1, 63)]
    result = asyncio.run(bounded(drive(search, seen, test, k=2, on_round=on_round)))
    assert result.decision.reason_code == "bad-end-passes"
    assert result.runs == 2 and result.cancelled == 0
    assert len(result.observations) == len(seen) + 2
