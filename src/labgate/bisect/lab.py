"""The lab's bisection: the culprit of a regression the gate found, found with bisect flights.

The engine (:mod:`labgate.bisect.engine`) decides which revision tuples to test; each test is a
``bisect`` flight of the failing job (and the jobs it depends on) run through the flights service,
and every result already stored for a tuple of the search (the branch's evidence) is reused
instead. The culprit is named with its tree, commit, author, subject and confidence; the search's
progress and its tested revision graph are saved in the store for the web page.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labgate.bisect.engine import (
    Answer,
    BisectError,
    Decision,
    Observation,
    Search,
    TreeRange,
)
from labgate.bisect.gitgraph import read_range
from labgate.bisect.loop import LoopState, drive
from labgate.bisect.outline import outline
from labgate.bisect.posterior import Noise, history_noise_prior
from labgate.config import Lab
from labgate.evidence import EVIDENCE, branch_evidence
from labgate.flights import Flights
from labgate.git import GitError, Mirrors, subjects
from labgate.model import Blessing, FlightResult, Outcome
from labgate.report import BisectionSummary
from labgate.store import Store
from labgate.verdict import Classification, flake_evidence

GRAPH_NODE_LIMIT = 400


@dataclass(frozen=True)
class CulpritReport:
    """The culprit of a regression, as reported: its tree and commit, author and subject."""

    tree: str
    commit: str
    author: str
    email: str
    subject: str

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BisectionResult:
    id: int
    job: str
    step: str | None
    testcase: str | None
    culprit: CulpritReport | None
    confidence: float
    executions: int
    rounds: int
    flights: tuple[int, ...]
    reason: str | None = None
    jobs: tuple[str, ...] = ()
    """Every job of the group this bisection stands for (jobs failing the same step)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job": self.job,
            "step": self.step,
            "testcase": self.testcase,
            "culprit": self.culprit.to_json() if self.culprit else None,
            "confidence": round(self.confidence, 6),
            "executions": self.executions,
            "rounds": self.rounds,
            "flights": list(self.flights),
            "reason": self.reason,
        }

    def summary(self, branch: str) -> BisectionSummary:
        c = self.culprit
        return BisectionSummary(
            job=self.job,
            step=self.step,
            tree=c.tree if c else None,
            commit=c.commit if c else None,
            author=c.author if c else None,
            email=c.email if c else None,
            subject=c.subject if c else None,
            confidence=self.confidence,
            executions=self.executions,
            flights=self.flights,
            branch=branch,
            reason=self.reason,
        )


def item_outcome(
    flight: FlightResult, job: str, step: str | None, testcase: str | None
) -> Answer | None:
    """How a (bisect) flight answers "does the regression show?": ``bad`` when the item fails,
    ``good`` when it passes, ``skip`` when it could not be tested at this revision (a dependency or
    an earlier step failed: git bisect's 125), None when the lab failed (broken: run it again)."""
    try:
        j = flight.job(job)
    except KeyError:
        return None
    if step is None:
        return _answer(j.outcome)
    steps = [s for s in j.steps if s.name == step]
    if not steps:
        return "skip"
    s = steps[0]
    if testcase is None or s.outcome not in (Outcome.PASS, Outcome.FAIL):
        return _answer(s.outcome)
    cases = [c for c in s.testcases if c.name == testcase]
    return _answer(cases[0].outcome) if cases else "skip"


def _answer(outcome: Outcome) -> Answer | None:
    if outcome is Outcome.PASS:
        return "good"
    if outcome is Outcome.FAIL:
        return "bad"
    if outcome in (Outcome.SKIP, Outcome.BLOCKED):
        return "skip"
    return None  # broken, cancelled, unfinished: the lab did not answer


@dataclass
class LabBisection:
    """Bisects the regressions of a branch's flights on the lab (the gate's step 5)."""

    lab: Lab
    store: Store
    flights: Flights
    mirrors: Mirrors
    say: Callable[[str], None]
    run_flight: Callable[[int, str], Awaitable[FlightResult]]
    """Runs a planned flight to its end (the gate's, which reports progress), given what for."""

    async def run(
        self,
        branch: str,
        flight: FlightResult,
        baseline: FlightResult,
        group: Sequence[Classification],
        classify: Callable[[FlightResult], Answer | None] | None = None,
    ) -> BisectionResult:
        """Find the culprit of one regression (the first item of ``group`` stands for all).
        ``classify`` reads a flight's answer when the item's outcome does not (a slowdown:
        ``labgate.perf.bisect``)."""
        item = group[0]
        jobs = tuple(c.job for c in group)
        bisection_id = self.store.create_bisection(
            branch, item.job, item.step, item.testcase, flight.id, baseline.id
        )
        what = f"{item.job} {item.step or ''} {item.testcase or ''}".strip()
        self.say(f"{branch}: bisecting {what} between flights {baseline.id} and {flight.id}")
        try:
            ranges, search = await self.search_between(
                baseline, flight, noise=self._noise(branch, item)
            )
        except (BisectError, GitError) as error:
            reason = f"cannot bisect: {error}"
            self.store.update_bisection(
                bisection_id, state="undecided", executions=0, rounds=0, flights=[],
                graph={"nodes": [], "edges": []}, reason=reason,
            )  # fmt: skip
            self.say(f"{branch}: {reason}")
            return BisectionResult(bisection_id, item.job, item.step, item.testcase, None, 0.0,
                                   0, 0, (), reason, jobs)  # fmt: skip
        run = _Search(self, branch, flight, baseline, item, search, ranges, bisection_id, classify)
        return await run.search(jobs)

    async def search_between(
        self, baseline: FlightResult, flight: FlightResult, **knowledge: Any
    ) -> tuple[list[TreeRange], Search]:
        """The ranges between the two flights' revisions and the engine's search over them,
        with the lab's confidence and budget; ``knowledge``: what the engine is told of the
        test's noise (``noise``, or ``flaky`` and ``intermittent``). BisectError or GitError
        when there is nothing to bisect."""
        ranges = await asyncio.to_thread(self._ranges, baseline, flight)
        search = Search(
            ranges,
            confidence=self.lab.gate.bisect_confidence,
            max_executions=self.lab.gate.bisect_max_flights + 2,
            **knowledge,
        )
        return ranges, search

    def _noise(self, branch: str, item: Classification) -> tuple[Noise, ...]:
        """What the lab knows of the test's noise: ``[gate] bisect_flaky`` and
        ``bisect_intermittent``, and the item's own history on the branch, which rules out the
        flake rates it contradicts (see :func:`history_noise_prior`)."""
        history = branch_evidence(self.store, branch)
        evidence = flake_evidence(history, item.job, item.step, item.testcase)
        gate = self.lab.gate
        noise = history_noise_prior(
            evidence.flakes, evidence.runs, gate.bisect_flaky, gate.bisect_intermittent
        )
        rates = ", ".join(f"{p:g}" for p in sorted({h.p for h in noise}))
        self.say(
            f"{branch}: flake rate at revisions that pass it: {evidence}; "
            f"flake rates the bisection still allows: {rates}"
        )
        return noise

    def _ranges(self, baseline: FlightResult, flight: FlightResult) -> list[TreeRange]:
        ranges = []
        for tree in sorted(flight.revisions):
            good = baseline.revisions.get(tree)
            bad = flight.revisions[tree]
            if good is None or good == bad:
                continue
            ranges.append(read_range(self.mirrors.path(tree), [good], bad, tree=tree))
        if not ranges:
            raise BisectError(
                "the failing flight tested the baseline's revisions: nothing to bisect"
            )
        return ranges


@dataclass
class _Search:
    """One bisection's search: the engine's decisions through the one search loop
    (:func:`labgate.bisect.loop.drive`), the lab's flights as its tests."""

    lab_bisection: LabBisection
    branch: str
    flight: FlightResult
    baseline: FlightResult
    item: Classification
    engine: Search
    ranges: list[TreeRange]
    bisection_id: int
    classify: Callable[[FlightResult], Answer | None] | None = None
    observations: list[Observation] = field(default_factory=list)
    flights: list[int] = field(default_factory=list)
    used: set[int] = field(default_factory=set)
    rounds: int = 0

    def point_of(self, revisions: Mapping[str, str]) -> dict[str, str]:
        return {r.tree: revisions[r.tree] for r in self.ranges}

    def full(self, point: Mapping[str, str]) -> dict[str, str]:
        return {**self.flight.revisions, **point}

    def answer(self, flight: FlightResult) -> Answer | None:
        """The flight's answer for the regressed item, once per flight (None: no answer)."""
        if flight.id in self.used:
            return None
        self.used.add(flight.id)
        if self.classify is not None:
            return self.classify(flight)
        return item_outcome(flight, self.item.job, self.item.step, self.item.testcase)

    def stored_answer(self, stored: FlightResult) -> Answer | None:
        """The answer of a stored flight of the branch's evidence that ran the job, once (a bisect
        flight it answers from counts among the bisection's flights)."""
        if stored.id in self.used or stored.blessing not in EVIDENCE:
            return None
        if not any(j.name == self.item.job for j in stored.jobs):
            return None
        answer = self.answer(stored)
        bisecting = stored.blessing is Blessing.BISECT
        if answer is not None and bisecting and stored.id not in self.flights:
            self.flights.append(stored.id)
        return answer

    def known(self, point: Mapping[str, str]) -> list[Answer]:
        """Every stored answer at this tuple not used yet (the loop uses them, not a test)."""
        found = self.lab_bisection.store.flights_at(self.branch, self.full(point))
        return [a for stored in found if (a := self.stored_answer(stored)) is not None]

    def given(self) -> list[Observation]:
        """The evidence already there: the regression's flight (bad), the baseline (good), and
        every stored flight of the branch that ran the job on a tuple of this search (the trees
        outside the ranges as in the failing flight, the others at a point of the chain)."""
        out = []
        for seed in (self.flight, self.baseline):
            if (answer := self.answer(seed)) is not None:
                out.append(Observation(self.point_of(seed.revisions), answer))
        for stored in branch_evidence(self.lab_bisection.store, self.branch):
            point = self.point_of(stored.revisions)
            if dict(stored.revisions) != self.full(point):
                continue
            if self.engine.graph.locate(point) is not None and (
                answer := self.stored_answer(stored)
            ):
                out.append(Observation(point, answer))
        return out

    async def test(self, point: Mapping[str, str]) -> Answer | None:
        """A bisect flight of the job (and what it depends on) at this point; None when the lab
        did not answer (broken: the loop tries again, then takes it as skip)."""
        owner = self.lab_bisection
        flight_id = owner.flights.plan(
            self.branch,
            revisions=self.full(point),
            job_globs=[self.item.job],
            blessing=Blessing.BISECT,
        )
        self.flights.append(flight_id)
        return self.answer(await owner.run_flight(flight_id, f"bisect {self.item.job}"))

    def progress(self, state: LoopState) -> None:
        self.observations = list(state.observations)
        self.rounds = state.rounds
        self._save("running", state.decision)

    async def search(self, jobs: tuple[str, ...]) -> BisectionResult:
        result = await drive(
            self.engine,
            self.given(),
            self.test,
            k=self.lab_bisection.lab.gate.bisect_parallel,
            known=self.known,
            on_round=self.progress,
        )
        self.observations = list(result.observations)
        self.rounds = result.rounds
        return self._finish(result.decision, jobs)

    def _finish(self, decision: Decision, jobs: tuple[str, ...]) -> BisectionResult:
        culprit = None
        reason = decision.reason
        if decision.kind == "culprit" and decision.culprit is not None:
            tree, commit = decision.culprit.tree, decision.culprit.commit
            info = self.lab_bisection.mirrors.commit(tree, commit)
            culprit = CulpritReport(tree, commit, info.author, info.email, info.subject)
            self.lab_bisection.say(
                f"{self.branch}: {tree} {commit} is the first bad commit "
                f"(confidence {decision.confidence:.3f} after {len(self.observations)} runs, "
                f"{len(self.flights)} bisect flights): "
                f"{info.author} <{info.email}>: {info.subject}"
            )
        else:
            self.lab_bisection.say(f"{self.branch}: bisection undecided: {reason}")
        self._save("found" if culprit else "undecided", decision, culprit, reason)
        return BisectionResult(
            self.bisection_id,
            self.item.job,
            self.item.step,
            self.item.testcase,
            culprit,
            decision.confidence,
            len(self.observations),
            self.rounds,
            tuple(self.flights),
            reason,
            jobs,
        )

    def _save(
        self,
        state: str,
        decision: Decision,
        culprit: CulpritReport | None = None,
        reason: str | None = None,
    ) -> None:
        self.lab_bisection.store.update_bisection(
            self.bisection_id,
            state=state,
            executions=len(self.observations),
            rounds=self.rounds,
            flights=self.flights,
            graph=self._graph(decision),
            culprit_tree=culprit.tree if culprit else None,
            culprit_commit=culprit.commit if culprit else None,
            confidence=decision.confidence if culprit else None,
            reason=reason,
        )

    def _graph(self, decision: Decision) -> dict[str, Any]:
        """The tested revision graph for the web page: every commit of the ranges with its
        outcomes and probability, outlined past GRAPH_NODE_LIMIT (untested stretches
        collapsed, see :func:`labgate.bisect.outline.outline`)."""
        outcomes: dict[tuple[str, str], list[str]] = {}
        for o in self.observations:
            changed = [
                (r.tree, o.point[r.tree]) for r in self.ranges if o.point[r.tree] not in r.good
            ]
            key = changed[-1] if changed else ("", "good")
            outcomes.setdefault(key, []).append(o.outcome)
        probability = {(c.tree, c.commit): p for c, p in decision.candidates}
        nodes, edges = [], []
        for r in self.ranges:
            for c in r.parents:
                nodes.append(
                    {
                        "id": f"{r.tree}:{c}",
                        "tree": r.tree,
                        "commit": c,
                        "outcomes": outcomes.get((r.tree, c), []),
                        "probability": round(probability.get((r.tree, c), 0.0), 6),
                    }
                )
                edges += [
                    [f"{r.tree}:{c}", f"{r.tree}:{p}"] for p in r.parents[c] if p in r.parents
                ]
        leader = decision.candidates[0][0].commit if decision.candidates else None
        graph = outline({"nodes": nodes, "edges": edges}, leader, limit=GRAPH_NODE_LIMIT)
        mirrors = self.lab_bisection.mirrors
        for tree in {n["tree"] for n in graph["nodes"]}:
            shown = [n for n in graph["nodes"] if n["tree"] == tree and "gap" not in n]
            names = subjects(mirrors, tree, [n["commit"] for n in shown])
            for n in shown:
                n["subject"] = names.get(n["commit"], "")
        return graph
