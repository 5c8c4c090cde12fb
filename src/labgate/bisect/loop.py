"""The one search loop: drive the engine with up to k tests at once until it decides.

``labgate bisect run`` (tests are commands in worktrees) and the lab's bisection (tests are
flights) both use :func:`drive`; they differ only in the ``test`` they pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from labgate.bisect.engine import Answer, Decision, Observation, Search

__all__ = ["LoopResult", "LoopState", "drive"]

NO_ANSWER_LIMIT = 2  # a point the tester could not answer this often is recorded as skip

Point = Mapping[str, str]


@dataclass(frozen=True)
class LoopState:
    """The search after an event: the engine's latest decision, every observation so far (the
    given ones first), those this event added, the points being tested, the runs started so far
    and the rounds reached."""

    decision: Decision
    observations: tuple[Observation, ...]
    added: tuple[Observation, ...]
    running: tuple[Point, ...]
    runs: int
    rounds: int


@dataclass(frozen=True)
class LoopResult:
    """The end of a search.

    ``decision`` is the engine's last word ("culprit" or "undecided"); ``observations`` holds
    every observation (the given ones first); ``runs`` counts the tests this loop started, those
    cancelled when a culprit was named included (``cancelled`` of them), and ``rounds`` the
    longest chain of tests each started after the result of the one before.
    """

    decision: Decision
    observations: tuple[Observation, ...]
    runs: int
    rounds: int
    cancelled: int


async def drive(
    search: Search,
    observations: Sequence[Observation],
    test: Callable[[Point], Awaitable[Answer | None]],
    *,
    k: int = 1,
    known: Callable[[Point], Sequence[Answer]] | None = None,
    on_round: Callable[[LoopState], None] | None = None,
) -> LoopResult:
    """Run the search to its end and return the last decision with the run and round counts.

    - ``observations``: what is known already (stored or resumed runs); never tested again.
    - ``test(point)``: run the test at ``point`` (tree -> commit) and return ``"good"``,
      ``"bad"`` or ``"skip"``, or None when it could not answer (a lab failure): the point is
      tested again when the engine asks for it, and after ``NO_ANSWER_LIMIT`` such answers at one
      point it is recorded as ``skip``. An exception from ``test`` ends the search: the other
      tests are cancelled and the exception propagates.
    - ``known(point)``: answers already stored for ``point`` that this search was not given yet
      (each stored answer must be returned once only); they are used instead of a test.
    - ``k``: tests at once. As soon as one ends the engine is asked again with the others
      pending, so a slot never waits for the slowest test of a batch.
    - ``on_round(state)``: called when tests start and each time results come in (a place to
      save progress or show it).

    The rule for the end, the same for every caller: a culprit ends the search at once and the
    tests still running are cancelled (their results cannot change a named culprit's guarantee);
    "undecided" waits for the tests still running, whose results may decide it, and ends the
    search only when nothing is running.
    """
    observed = list(observations)
    running: dict[asyncio.Task[Answer | None], tuple[Point, int]] = {}
    no_answer: dict[tuple[tuple[str, str], ...], int] = {}
    runs = rounds = 0

    def report(decision: Decision, added: Sequence[Observation]) -> None:
        if on_round is not None:
            points = tuple(point for point, _ in running.values())
            on_round(LoopState(decision, tuple(observed), tuple(added), points, runs, rounds))

    try:
        while True:
            free = max(1, k - len(running))
            pending = [point for point, _ in running.values()]
            decision = search.decide(observed, k=free, pending=pending)
            if decision.kind == "culprit" or (decision.kind != "test" and not running):
                break
            stored: list[Observation] = []
            for point in decision.tests[: k - len(running)]:
                answers = list(known(point)) if known is not None else []
                if answers:
                    stored += [Observation(dict(point), answer) for answer in answers]
                    continue
                task = asyncio.ensure_future(test(point))
                running[task] = (dict(point), rounds + 1)
                runs += 1
            if stored:
                observed += stored
                report(decision, stored)
                continue  # the engine may want other points now
            if not running:
                decision = _nothing_to_test(decision)
                break
            report(decision, ())
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            added: list[Observation] = []
            for task in sorted(done, key=lambda t: running[t][1]):
                point, level = running.pop(task)
                answer = task.result()
                rounds = max(rounds, level)
                if answer is None:
                    key = tuple(sorted(point.items()))
                    no_answer[key] = no_answer.get(key, 0) + 1
                    if no_answer[key] < NO_ANSWER_LIMIT:
                        continue
                    answer = "skip"
                added.append(Observation(point, answer))
            observed += added
            report(decision, added)
    finally:
        cancelled = len(running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return LoopResult(decision, tuple(observed), runs, rounds, cancelled)


def _nothing_to_test(decision: Decision) -> Decision:
    return replace(
        decision,
        kind="undecided",
        tests=(),
        reason=decision.reason or "the engine proposed nothing new to test",
        reason_code=decision.reason_code or "nothing-to-test",
    )
