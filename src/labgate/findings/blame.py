"""Blame: the commit that introduced each new finding of a flight spanning many commits.

A finding present or absent at a revision is a deterministic test, so the bisection engine runs
with no flake (``flaky="no", intermittent="no"``) on the one search loop
(:func:`labgate.bisect.loop.drive`), the lab's ``bisect`` flights of the analysis job as its tests
(every flight already stored at a tuple of the search is reused, so the findings of one flight
share their bisect flights). A flight answers ``bad`` when the finding is among its findings of
the same job's step (matched as `labgate.findings.compare.match` matches), ``good`` when the step
ran and it is not, ``skip`` when the step did not run, and nothing when the lab broke it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from labgate.bisect.engine import Answer, BisectError, Observation, TreeRange
from labgate.bisect.lab import LabBisection
from labgate.bisect.loop import drive
from labgate.evidence import EVIDENCE
from labgate.findings.compare import match
from labgate.findings.model import Finding
from labgate.git import GitError
from labgate.model import Blessing, FlightResult
from labgate.model import Outcome as StepOutcome
from labgate.report import BisectionSummary

__all__ = ["Blame", "FindingBlame", "blame_findings"]


@dataclass(frozen=True)
class Blame:
    """The commit a new finding was blamed on (``culprit`` None: undecided, ``reason`` says
    why), with the bisect flights it took."""

    finding: Finding
    culprit: Mapping[str, str] | None
    confidence: float
    flights: tuple[int, ...]
    reason: str | None = None

    def summary(self, branch: str) -> BisectionSummary:
        """As a bisection report (mailed to the commit's author like a regression's culprit)."""
        f, c = self.finding, self.culprit or {}
        return BisectionSummary(
            job=f.job,
            step=f"{f.step}: new {f.rule} finding {f.identity[:12]} at {f.where}: {f.message}",
            tree=c.get("tree"),
            commit=c.get("commit"),
            author=c.get("author"),
            email=c.get("email"),
            subject=c.get("subject"),
            confidence=self.confidence if self.culprit else None,
            executions=len(self.flights),
            flights=self.flights,
            branch=branch,
            reason=self.reason,
        )


def present(flight: FlightResult, found: Sequence[Finding], finding: Finding) -> Answer | None:
    """Whether ``finding`` shows in a flight whose findings are ``found``: ``bad`` (it does),
    ``good`` (its step ran and it does not), ``skip`` (the step did not run), None (the lab
    broke it: no answer)."""
    try:
        job = flight.job(finding.job)
    except KeyError:
        return None
    steps = [s for s in job.steps if s.name == finding.step]
    if not steps or steps[0].outcome in (StepOutcome.SKIP, StepOutcome.BLOCKED):
        return "skip"
    if steps[0].outcome not in (StepOutcome.PASS, StepOutcome.FAIL):
        return None
    same_step = [f for f in found if f.job == finding.job and f.step == finding.step]
    pairs, _, _ = match([finding], same_step)
    return "bad" if pairs else "good"


@dataclass
class FindingBlame(LabBisection):
    """Blames a flight's new findings on commits with bisect flights (the gate's, after its
    verdict): the lab's bisection, with "does the finding show" as its test."""

    async def blame(
        self, branch: str, flight: FlightResult, baseline: FlightResult, finding: Finding
    ) -> Blame:
        """Find the commit that introduced ``finding`` between the baseline and the flight."""
        try:  # a finding is there or not: a deterministic test
            ranges, search = await self.search_between(
                baseline, flight, flaky="no", intermittent="no"
            )
        except (BisectError, GitError) as error:
            return Blame(finding, None, 0.0, (), f"cannot bisect: {error}")
        run = _Search(self, branch, flight, finding, ranges)
        given = [
            Observation(run.point_of(f.revisions), answer)
            for f in (flight, baseline)
            if (answer := run.answer(f)) is not None
        ]
        result = await drive(search, given, run.test, k=self.lab.gate.bisect_parallel,
                             known=run.known)  # fmt: skip
        decision = result.decision
        if decision.kind != "culprit" or decision.culprit is None:
            self.say(f"{branch}: blame of finding {finding.identity[:12]} undecided")
            return Blame(finding, None, decision.confidence, tuple(run.used_bisect),
                         decision.reason)  # fmt: skip
        tree, commit = decision.culprit.tree, decision.culprit.commit
        info = self.mirrors.commit(tree, commit)
        culprit = {"tree": tree, "commit": commit, "author": info.author, "email": info.email,
                   "subject": info.subject}  # fmt: skip
        self.store.record_blame(flight.id, finding.identity, culprit, decision.confidence,
                                run.used_bisect)  # fmt: skip
        self.say(
            f"{branch}: finding {finding.identity[:12]} ({finding.rule} at {finding.where}) was "
            f"introduced by {tree} {commit[:12]}: {info.author} <{info.email}>: {info.subject}"
        )
        return Blame(finding, culprit, decision.confidence, tuple(run.used_bisect))


@dataclass
class _Search:
    owner: FindingBlame
    branch: str
    flight: FlightResult
    finding: Finding
    ranges: list[TreeRange]
    used: set[int] = field(default_factory=set)
    used_bisect: list[int] = field(default_factory=list)

    def point_of(self, revisions: Mapping[str, str]) -> dict[str, str]:
        return {r.tree: revisions[r.tree] for r in self.ranges}

    def answer(self, flight: FlightResult) -> Answer | None:
        """The flight's answer, once per flight."""
        if flight.id in self.used:
            return None
        self.used.add(flight.id)
        if flight.blessing is Blessing.BISECT:
            self.used_bisect.append(flight.id)
        return present(flight, self.owner.store.flight_findings(flight.id), self.finding)

    def known(self, point: Mapping[str, str]) -> list[Answer]:
        full = {**self.flight.revisions, **point}
        stored = self.owner.store.flights_at(self.branch, full)
        usable = [f for f in stored if f.blessing in EVIDENCE]
        return [a for f in usable if (a := self.answer(f)) is not None]

    async def test(self, point: Mapping[str, str]) -> Answer | None:
        owner = self.owner
        flight_id = owner.flights.plan(
            self.branch,
            revisions={**self.flight.revisions, **point},
            job_globs=[self.finding.job],
            blessing=Blessing.BISECT,
        )
        done = await owner.run_flight(flight_id, f"blame finding {self.finding.identity[:12]}")
        return self.answer(done)


async def blame_findings(
    blame: FindingBlame,
    branch: str,
    flight: FlightResult,
    baseline: FlightResult,
    findings: Sequence[Finding],
) -> list[Blame]:
    """Blame each finding in turn (later ones reuse the bisect flights of earlier ones)."""
    return [await blame.blame(branch, flight, baseline, f) for f in findings]
