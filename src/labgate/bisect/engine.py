"""The bisection engine: commit graph + observations -> next test points, or the culprit.

Pure, no I/O. See :class:`Search`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from labgate.bisect.graph import BisectError, Graph, TreeRange

__all__ = [
    "BisectError",
    "Culprit",
    "Decision",
    "Observation",
    "Outcome",
    "Search",
    "TestPoint",
    "TreeRange",
]

Outcome = Literal["good", "bad", "skip"]
TestPoint = Mapping[str, str]


@dataclass(frozen=True)
class Observation:
    """One run of the test at a revision tuple (tree -> commit) and what it gave."""

    point: Mapping[str, str]
    outcome: Outcome


@dataclass(frozen=True)
class Culprit:
    tree: str
    commit: str


@dataclass(frozen=True)
class Decision:
    """What to do next: run ``tests``, or the ``culprit`` is found, or the search is stuck."""

    kind: Literal["test", "culprit", "undecided"]
    tests: tuple[Mapping[str, str], ...] = ()
    culprit: Culprit | None = None
    confidence: float = 0.0
    candidates: tuple[tuple[Culprit, float], ...] = ()
    reason: str | None = None
    flake_rate: float = 0.0
    detection_rate: float = 1.0
    executions: int = 0


class Search:
    """A bisection over one or more trees; holds the precomputed graph so each round is cheap."""

    def __init__(
        self,
        ranges: Sequence[TreeRange],
        *,
        first_parent: bool = False,
        confidence: float = 0.99,
        max_executions: int | None = None,
        seed: int = 0,
    ) -> None:
        self.graph = Graph(ranges, first_parent=first_parent)
        self.confidence = confidence
        self.max_executions = 1000 if max_executions is None else max_executions
        self.seed = seed

    def decide(
        self,
        observations: Sequence[Observation],
        *,
        k: int = 1,
        pending: Sequence[Mapping[str, str]] = (),
    ) -> Decision:
        g = self.graph
        cand = g.all
        skipped: set[int] = set()
        runs = 0
        for o in observations:
            i = g.locate(o.point)
            runs += 1
            if i is None:
                continue
            if o.outcome == "skip":
                if i >= 0:
                    skipped.add(i)
            elif o.outcome == "good":
                if i >= 0:
                    cand &= ~g.anc[i]
            elif i >= 0:
                cand &= g.anc[i]
            else:
                cand = 0
        busy = {g.locate(p) for p in pending}
        n = cand.bit_count()
        cands = tuple((Culprit(*g.commits[i]), 1.0 / n) for i in _bits(cand))[:5] if n else ()
        if n == 0:
            return Decision("undecided", reason="the observations contradict each other")
        if n == 1:
            top = next(iter(_bits(cand)))
            return Decision(
                "culprit",
                culprit=Culprit(*g.commits[top]),
                confidence=1.0,
                candidates=cands,
                executions=runs,
            )
        scored = []
        for i in _bits(cand):
            if i in skipped or i in busy:
                continue
            m = (g.anc[i] & cand).bit_count()
            scored.append((-min(m, n - m), i))
        scored.sort()
        tests = tuple(dict(g.points[i]) for _, i in scored[:k] if _ < 0)
        if not tests:
            return Decision(
                "undecided",
                candidates=cands,
                confidence=1.0 / n,
                reason="untestable commits hide the culprit",
                executions=runs,
            )
        return Decision("test", tests=tests, confidence=1.0 / n, candidates=cands, executions=runs)


def _bits(x: int) -> list[int]:
    out = []
    while x:
        low = x & -x
        out.append(low.bit_length() - 1)
        x ^= low
    return out
