"""The push gate: test staging, push exactly the tested revision when nothing regressed, bisect
every blocking regression, report.

One cycle (``labgate gate BRANCH --once``):

1. Take the branch's gate lease in the store (two gate processes never work one branch at once;
   a killed holder's lease expires), fetch the trees.
2. ``staging`` equal to ``tested``: nothing to do. No baseline yet: run a ``real`` flight of the
   ``tested`` revision tuple and make it the baseline.
3. Run a ``real`` flight of staging's revision tuple (resuming one a killed gate left unfinished),
   classify it against the baseline and the branch's history (``verdict.classify``); flaky and
   broken jobs are run again (up to ``[gate] retests`` times) before their result may block.
4. Nothing blocks: push exactly the flight's commit of the tree under test to ``tested``,
   fast-forward only, and make the flight the baseline in the same transaction. Whatever staging
   did meanwhile, the tested commit is what is pushed.
5. Each blocking regression (grouped by step and test case across jobs) is bisected between the
   baseline tuple and the flight's tuple over every tree that changed, with ``bisect`` flights of
   the failing job (and the jobs it depends on); results already stored for a tuple are reused.
6. Reports: the flight report and each bisection report, as text, and by mail when ``[mail]`` is
   configured (kept in the outbox while the mail server is down).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labgate.bisect.lab import BisectionResult, LabBisection
from labgate.config import Lab
from labgate.embargo import mail_recipients
from labgate.evidence import branch_evidence, judge
from labgate.findings.blame import Blame, FindingBlame, blame_findings
from labgate.findings.compare import Action, Comparison, State
from labgate.findings.report import findings_json, flight_comparison
from labgate.findings.report import lines as findings_lines
from labgate.flight import FlightWatcher, mirrors_for
from labgate.flights import Flights
from labgate.git import GitError, Mirrors, PushResult, authors, push_fast_forward
from labgate.heartbeat import renew_every
from labgate.mail import Outbox, build_bisection_mail, build_flight_mail
from labgate.model import Blessing, FlightResult, FlightState, Outcome
from labgate.perf.bisect import bisect_slowdown
from labgate.perf.trend import found_changes, found_changes_lines
from labgate.perf.verdict import MetricVerdict, judge_metrics, retest_jobs
from labgate.report import (
    BisectionSummary,
    render_bisection_report,
    render_flight_report,
    report_subject,
    verdict_json,
)
from labgate.store import Store, process_owner
from labgate.verdict import Classification, Verdict


class GateError(Exception):
    """The gate cannot work on a branch (unknown ref, unreachable tree)."""


@dataclass(frozen=True)
class GateResult:
    """What one gate cycle did; ``to_json`` is ``labgate gate --json``."""

    branch: str
    action: str
    """``nothing-to-do``, ``busy`` (another gate holds the branch), ``pushed``, ``not-pushed``."""
    flight: int | None = None
    baseline_flight: int | None = None
    pushed: bool = False
    pushed_revision: str | None = None
    revisions: Mapping[str, str] = field(default_factory=dict)
    verdict: str = "none"
    regressions: tuple[Classification, ...] = ()
    bisections: tuple[BisectionResult, ...] = ()
    perf: tuple[MetricVerdict, ...] = ()
    """The flight's metrics judged against the baseline's."""
    message: str = ""
    report: str = ""

    @property
    def exit_status(self) -> int:
        return 0 if self.action in ("pushed", "nothing-to-do") else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "branch": self.branch,
            "action": self.action,
            "flight": self.flight,
            "baseline_flight": self.baseline_flight,
            "pushed": self.pushed,
            "pushed_revision": self.pushed_revision,
            "revisions": dict(self.revisions),
            "verdict": self.verdict,
            "regressions": [
                {"job": c.job, "step": c.step, "testcase": c.testcase} for c in self.regressions
            ],
            "bisections": [b.to_json() for b in self.bisections],
            "perf": [v.to_json() for v in self.perf],
            "message": self.message,
        }


def verdict_word(verdict: Verdict) -> str:
    """One word for the whole flight: ``pass``, ``regression``, ``not-tested``, ``tolerable``."""
    if verdict.blocking:
        return "regression"
    if verdict.not_tested or verdict.retest:
        return "not-tested"
    if any(c.kind.value != "pass" and c.kind.value != "skip" for c in verdict.details):
        return "tolerable"
    return "pass"


def take_retest(flight: FlightResult, retest: FlightResult, untested: set[str]) -> FlightResult:
    """``flight`` with the retest's result for each job in ``untested`` (the lab did not test it)
    that the retest ran to an end."""
    retested = {j.name: j for j in retest.jobs if j.outcome.finished}
    jobs = tuple(
        retested[j.name] if j.name in untested and j.name in retested else j for j in flight.jobs
    )
    return dataclasses.replace(flight, jobs=jobs)


def group_regressions(verdict: Verdict) -> list[list[Classification]]:
    """Blocking regressions grouped when several jobs fail the same step (and test case): one
    bisection serves the group."""
    groups: dict[tuple[str | None, str | None], list[Classification]] = {}
    for c in verdict.blocking:
        groups.setdefault((c.step, c.testcase), []).append(c)
    return list(groups.values())


def default_owner() -> str:
    """This process, and which gate in it (a test runs two in one process)."""
    return f"{process_owner()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Gate:
    """Runs gate cycles of a lab's branches. ``say`` receives one line per event (the CLI prints
    them; ``labgate serve`` logs them)."""

    lab: Lab
    store: Store
    say: Callable[[str], None] = lambda _line: None
    progress: Callable[[str], FlightWatcher] | None = None
    owner: str = field(default_factory=default_owner)
    flights: Flights | None = None
    """The flights service its flights run on (``labgate serve`` shares one); default: its own."""
    mirrors: Mirrors | None = None

    def __post_init__(self) -> None:
        self.mirrors = self.mirrors or mirrors_for(self.lab)
        if self.flights is None:
            self.flights = Flights(self.lab, self.store, mirrors=self.mirrors)

    def _service(self) -> Flights:
        assert self.flights is not None
        return self.flights

    # --- one cycle ------------------------------------------------------------------------

    async def cycles(self, branch: str) -> AsyncIterator[GateResult | GateError]:
        """Cycle after cycle of ``branch``, ``poll_interval`` apart: each one's result, or the
        error that ended it (the next cycle comes all the same)."""
        while True:
            try:
                yield await self.cycle(branch)
            except GateError as error:
                yield error
            await asyncio.sleep(self.lab.poll_interval)

    async def cycle(self, branch: str) -> GateResult:
        settings = self.lab.gate
        if not self.store.acquire_gate(branch, self.owner, settings.lease_s):
            return GateResult(branch, "busy", message="another gate process holds this branch")
        lease = settings.lease_s

        def renew() -> None:
            if not self.store.acquire_gate(branch, self.owner, lease):
                self.say(f"{branch}: lost the gate lease")

        heartbeat = asyncio.create_task(renew_every(lease, renew))
        try:
            return await self._cycle(branch)
        finally:
            heartbeat.cancel()
            self.store.release_gate(branch, self.owner)

    def _tuples(self, branch: str) -> tuple[dict[str, str], dict[str, str]]:
        """(staging tuple, tested tuple), every tree fetched."""
        spec = self.lab.branch(branch)
        refs = self.lab.revision_refs(branch)
        mirrors = self._mirrors()
        staging: dict[str, str] = {}
        try:
            for tree, ref in refs.items():
                mirrors.update(tree)
                staging[tree] = mirrors.resolve(tree, ref)
            tested = {**staging, spec.tree: mirrors.resolve(spec.tree, spec.tested)}
        except GitError as error:
            raise GateError(f"branch {branch}: {error}") from error
        return staging, tested

    def _mirrors(self) -> Mirrors:
        assert self.mirrors is not None
        return self.mirrors

    async def _cycle(self, branch: str) -> GateResult:
        spec = self.lab.branch(branch)
        staging, tested = await asyncio.to_thread(self._tuples, branch)
        if staging[spec.tree] == tested[spec.tree]:
            self.say(f"{branch}: staging is tested ({tested[spec.tree][:12]}): nothing to do")
            return GateResult(
                branch,
                "nothing-to-do",
                baseline_flight=self.store.baseline(branch),
                revisions=staging,
                message="staging equals tested",
            )
        baseline_id = self.store.baseline(branch)
        if baseline_id is None:
            self.say(f"{branch}: no baseline yet: testing {spec.tested} first")
            base = await self._real_flight(branch, tested, "baseline")
            self.store.set_baseline(branch, base.id)
            baseline_id = base.id
        baseline = self.store.get_flight(baseline_id)
        flight = await self._real_flight(branch, staging, "staging")
        verdict = await self._judge(branch, flight, baseline)
        findings = flight_comparison(self.store, flight.id, self.lab.findings)
        perf, measured = await self._judge_perf(branch, flight, baseline)
        slower = any(v.blocking for v in perf)
        push_allowed = verdict.push_allowed and not findings.blocking and not slower
        word = verdict_word(verdict)  # one word for the flight; what else stops its push
        if verdict.push_allowed and slower:
            word = "regression"
        elif verdict.push_allowed and findings.blocking:
            word = "new findings"
        judged = {**verdict_json(verdict), "push_allowed": push_allowed}
        self.store.record_verdict(
            flight.id,
            baseline.id,
            push_allowed,
            {
                **judged,
                "findings": findings_json(findings),
                "perf": [v.to_json() for v in perf],
                "perf_flights": measured,
            },
        )
        pushed, pushed_revision, message = False, None, ""
        push_failure: PushResult | None = None
        bisections: list[BisectionResult] = []
        if push_allowed:
            push = await asyncio.to_thread(self._push, branch, flight)
            pushed = push.status == "pushed"
            pushed_revision = flight.revisions[spec.tree] if pushed else None
            message = push.message if pushed else f"{push.status}: {push.summary}"
            push_failure = None if pushed else push
        else:
            message = f"not pushing: {word}"
            self.say(f"{branch}: flight {flight.id}: {message}")
            for group in group_regressions(verdict):
                bisections.append(await self.bisect(branch, flight, baseline, group))
            for regressed in (v for v in perf if v.blocking):
                bisections.append(
                    await bisect_slowdown(self._bisection(), branch, flight, baseline, regressed)
                )
        blames = await self._blame(branch, flight, baseline, findings)
        if blames:  # the report names the commits blamed
            findings = flight_comparison(self.store, flight.id, self.lab.findings)
        people = self._people(baseline, flight)
        report = render_flight_report(
            flight,
            verdict,
            baseline,
            pushed=pushed,
            pushed_revision=pushed_revision,
            people=people,
            lab_name=self.lab.name,
            push_failure=(push_failure.summary, push_failure.message) if push_failure else None,
            perf=perf,
        )
        changes = found_changes_lines(
            found_changes(self.store, self.lab, branch, flight.id), self.lab.web_url
        )
        if changes:
            report += "\n" + "\n".join(changes)
        if findings.rows:
            report += "\n" + "\n".join(
                findings_lines(findings, flight.revisions, baseline.revisions)
            )
            report += "\n"
        bisections_and_blames = [*(b.summary(branch) for b in bisections),
                                 *(b.summary(branch) for b in blames)]  # fmt: skip
        self._mail(flight, verdict, pushed, report, bisections_and_blames, branch)
        return GateResult(
            branch,
            "pushed" if pushed else "not-pushed",
            flight=flight.id,
            baseline_flight=baseline.id,
            pushed=pushed,
            pushed_revision=pushed_revision,
            revisions=dict(flight.revisions),
            verdict=word,
            regressions=verdict.blocking,
            perf=perf,
            bisections=tuple(bisections),
            message=message,
            report=report
            + "".join("\n" + render_bisection_report(b) for b in bisections_and_blames),
        )

    async def _real_flight(
        self, branch: str, revisions: Mapping[str, str], what: str
    ) -> FlightResult:
        """A finished ``real`` flight of every job at this tuple: an unfinished one a killed gate
        left is resumed, a finished one not yet judged is reused; otherwise a new one runs."""
        all_jobs = {j.name for j in self.lab.jobs_for(branch)}
        recent = self.store.list_flights(branch, blessing=Blessing.REAL, limit=20)
        same_tuple = [f.id for f in recent if dict(f.revisions) == dict(revisions)]
        baseline = self.store.baseline(branch)
        for f in self.store.get_flights(same_tuple):
            if {j.name for j in f.jobs} != all_jobs:
                continue
            if f.state is not FlightState.FINISHED:
                self.say(f"{branch}: resuming flight {f.id} ({what})")
                return await self._run(f.id, what)
            if self.store.verdict(f.id) is None and f.id != baseline:
                self.say(f"{branch}: reusing finished flight {f.id} ({what})")
                return f
            if self._push_failed(f.id):
                self.say(f"{branch}: flight {f.id} passed at these revisions; pushing it again")
                return f
        flight_id = self._service().plan(branch, revisions=revisions, blessing=Blessing.REAL)
        return await self._run(flight_id, what)

    async def _run(
        self, flight_id: int, what: str, avoid: Mapping[str, str] | None = None
    ) -> FlightResult:
        flight = self.store.get_flight(flight_id)
        self.say(
            f"flight {flight_id} ({flight.blessing}, {what}): "
            + " ".join(f"{t}={s[:12]}" for t, s in sorted(flight.revisions.items()))
        )
        progress = self.progress(what) if self.progress else None
        result = await self._service().run(flight_id, progress=progress, avoid=avoid)
        self.say(f"flight {flight_id} ({what}): {result.outcome}")
        return result

    async def _judge(self, branch: str, flight: FlightResult, baseline: FlightResult) -> Verdict:
        """Classify the flight; retest flaky and broken jobs before their result may count.

        A job the lab broke (and the jobs it blocked) takes the result of its retest: the lab
        failed, so the retest is the only test of it. A flaky failure keeps its own result and
        the retest is the history that shows it flaky."""
        settings = self.lab.gate
        current = flight

        def judged() -> Verdict:
            return judge(self.lab, branch, current, baseline, branch_evidence(self.store, branch))

        verdict = judged()
        for attempt in range(settings.retests):
            if not verdict.retest:
                break
            self.say(
                f"{branch}: retesting {' '.join(verdict.retest)} (attempt {attempt + 1}) "
                f"at flight {flight.id}'s revisions"
            )
            retest_id = self._service().plan(
                branch,
                revisions=flight.revisions,
                job_globs=list(verdict.retest),
                blessing=Blessing.REAL,
            )
            # a job the lab broke is retried on another host when one can take it
            broken = {
                j.name: j.host for j in current.jobs if j.outcome is Outcome.BROKEN and j.host
            }
            retest = await self._run(retest_id, "retest", avoid=broken)
            untested = {c.job for c in verdict.not_tested}
            current = take_retest(current, retest, untested)
            verdict = judged()
        return verdict

    async def _judge_perf(
        self, branch: str, flight: FlightResult, baseline: FlightResult
    ) -> tuple[tuple[MetricVerdict, ...], list[int]]:
        """The flight's metrics against the baseline's, per host class; a metric that more runs
        would decide has its job run again (a retest flight at the same revisions) until it is
        decided or has ``max_repeats`` values. Returns the verdicts and the flights measured
        (the flight, then its retests)."""
        before = self.store.flight_metrics([baseline.id])
        flights = [flight.id]
        measured = self.store.flight_metrics(flights)
        verdicts = judge_metrics(measured, before, self.lab.perf_for)
        while jobs := retest_jobs(verdicts):
            self.say(f"{branch}: measuring {' '.join(jobs)} again (performance not decided)")
            retest_id = self._service().plan(
                branch, revisions=flight.revisions, job_globs=jobs, blessing=Blessing.REAL
            )
            await self._run(retest_id, "perf retest")
            flights.append(retest_id)
            more = self.store.flight_metrics(flights)
            if len(more) == len(measured):  # the retest measured nothing: stop asking
                break
            measured = more
            verdicts = judge_metrics(measured, before, self.lab.perf_for)
        return verdicts, flights

    async def bisect(
        self,
        branch: str,
        flight: FlightResult,
        baseline: FlightResult,
        group: Sequence[Classification],
    ) -> BisectionResult:
        """Find the culprit of one regression (the first item of ``group`` stands for all) with
        bisect flights (:mod:`labgate.bisect.lab`)."""
        return await self._bisection().run(branch, flight, baseline, group)

    def _bisection(self) -> LabBisection:
        return LabBisection(
            self.lab, self.store, self._service(), self._mirrors(), self.say, self._run
        )

    def _push_failed(self, flight_id: int) -> bool:
        """Whether the flight was allowed to push and its last push failed: its revision is
        tested, so the next cycle pushes it without testing it again."""
        verdict = self.store.verdict(flight_id)
        pushes = self.store.pushes(flight_id=flight_id, limit=1)
        return bool(verdict and verdict["push_allowed"] and pushes and pushes[0].status != "pushed")

    def _push(self, branch: str, flight: FlightResult) -> PushResult:
        spec = self.lab.branch(branch)
        sha = flight.revisions[spec.tree]
        result = push_fast_forward(self._mirrors(), spec.tree, sha, spec.tested)
        self.store.record_push(
            branch, flight.id, spec.tree, sha, result.previous, result.status, result.message
        )
        if result.status == "pushed":
            self.say(f"{branch}: pushed {sha[:12]} to {spec.tree} {spec.tested}")
        else:
            self.say(f"{branch}: NOT pushed ({result.status}): {result.summary}")
        return result

    def _people(self, baseline: FlightResult, flight: FlightResult) -> list[str]:
        people: list[str] = []
        for tree, sha in flight.revisions.items():
            good = baseline.revisions.get(tree)
            if good and good != sha:
                try:
                    people += authors(self._mirrors(), tree, good, sha)
                except GitError:
                    continue
        return list(dict.fromkeys(people))

    async def _blame(
        self, branch: str, flight: FlightResult, baseline: FlightResult, findings: Comparison
    ) -> list[Blame]:
        """Blame each new finding (not triaged, not ignored) on the commit that introduced it."""
        wanted = [
            r.finding
            for r in findings.of(State.NEW)
            if r.triage is None and r.action is not Action.IGNORE and not r.blamed
        ]
        if not wanted:
            return []
        blame = FindingBlame(
            self.lab, self.store, self._service(), self._mirrors(), self.say, self._run
        )
        return await blame_findings(blame, branch, flight, baseline, wanted)

    def _mail(
        self,
        flight: FlightResult,
        verdict: Verdict,
        pushed: bool,
        report: str,
        bisections: Sequence[BisectionSummary],
        branch: str,
    ) -> None:
        config = self.lab.mail
        if config is None:
            return
        only_to = mail_recipients(self.store, flight.id)  # an embargo's group, or None
        if only_to == []:
            self.say(f"mail: flight {flight.id} is under embargo and its group has no address")
            return
        outbox = Outbox(self.lab.dir / "outbox")
        subject = report_subject(flight, verdict, pushed=pushed)
        outbox.enqueue(
            build_flight_mail(
                config, flight=flight.id, subject=subject, body=report, only_to=only_to
            )
        )
        for b in bisections:
            outbox.enqueue(build_bisection_mail(config, b, flight=flight.id, only_to=only_to))
        result = outbox.flush(config)
        if result.kept:
            self.say(
                f"mail: {result.kept} report(s) kept in the outbox: {'; '.join(result.errors)}"
            )

    # --- bisection ------------------------------------------------------------------------
