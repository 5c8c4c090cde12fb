"""Verdicts: a finished flight, its baseline and the branch's history → a classification of every
job, step and test case, and whether the push gate may push.

Pure: no I/O. The gate (a later integration) fetches the flights from the store and acts on the
`Verdict`.

Items and kinds
---------------
An *item* is a job, a job's step, or a test case a step reported (``results = "junit:..."``). Each
gets a `Classification` whose ``kind`` is one of `Kind`:

- ``pass`` / ``skip``: nothing to say.
- ``regression``: passed on the baseline and fails now. Blocks the push. "Passed on the baseline"
  means: passed in the baseline flight or in another flight of the same revision tuple; when the
  baseline did not test the item, the latest pass/fail in a flight before the baseline decides; when
  nothing before the baseline tested it but a later flight of the branch passed it, the failure is
  still a regression ("baseline untested"), as osstest counts it.
- ``fail-like-baseline``: failed on the baseline too. Reported, not blocking.
- ``fail-never-passed``: no pass anywhere in the branch's history. Reported, not blocking.
- ``flaky``: either the same revision tuple already passed this item (``pass in N``: proof the code
  can pass it; never blamed on code, never retested), or the item would be a regression but its
  learned flake rate is above the threshold and it has not yet failed on this tuple before (it is
  *retested*; a second failure on the same tuple with no pass is a regression).
- ``broken``: the lab failed (also cancelled or unfinished items): *not tested*, retested, never a
  regression.
- ``allowed``: a failure the branch allows in lab.toml (`labgate.model.AllowedFailure`, globs).
  The step glob matches a step's name, or ``step/testcase`` for a test case. An allowance whose
  step glob is ``*`` covers the whole job: the job does not matter to the push, so even its broken
  or blocked outcome is ``allowed``; a narrower allowance never excuses the lab breaking.
- ``blocked``: a job whose dependency did not pass (or a step after one that did not). It is never
  a regression itself: the dependency that failed is the item reported (and blocks when it
  regressed). A job blocked by a broken or retested dependency is *not tested* and is retested with
  it; a job blocked by a non-blocking failure is reported as ``blocked n/a`` and does not block.

Parents are explained by their children: a failed step whose test cases failed takes the most severe
kind of those test cases (a step that fails only because of a new, never-passing test is not a
regression), and likewise a failed job takes the most severe kind of its steps. When nothing below
explains a failure, the item is classified from its own outcome. A child worse than its passing
parent (a test case regressing in a step that exited 0) still makes the parent that kind.

Flake rate
----------
`flake_rate` estimates P(fail | the code passes this item) from the only failures known to be
spurious: a revision tuple that passed an item at least once is *good* for it (the code under test
is fixed by the tuple), so every failure of the item at a good tuple is a flake. With ``f`` such
failures among ``n`` pass/fail runs at good tuples, the rate is the Beta-smoothed
``(f + 1) / (n + 20)``: a prior of one flake in twenty runs (mean 0.05) that keeps a handful of runs
from swinging the estimate, and stays under the default threshold (0.1) until the history shows
repeated flakes. It undercounts flakes at tuples that were never rerun, so it errs towards blocking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from labgate.model import AllowedFailure, Blessing, FlightResult, JobResult, Outcome

__all__ = [
    "FLAKE_PRIOR",
    "AllowedFailure",
    "Classification",
    "FlakeRate",
    "HistoryRow",
    "Kind",
    "Verdict",
    "classify",
    "flake_evidence",
    "flake_rate",
    "flake_rates",
    "history_rows",
    "step_flake_rates",
]

FLAKE_PRIOR = (1.0, 19.0)
"""Beta prior (flakes, clean runs) of the flake-rate estimate: mean 0.05, weight 20 runs."""


class Kind(StrEnum):
    """How an item of a flight is judged against its baseline and history."""

    PASS = "pass"
    REGRESSION = "regression"
    FAIL_NEVER_PASSED = "fail-never-passed"
    FAIL_LIKE_BASELINE = "fail-like-baseline"
    FLAKY = "flaky"
    BROKEN = "broken"
    ALLOWED = "allowed"
    SKIP = "skip"
    BLOCKED = "blocked"


# Which kind a parent takes from its children: the most severe. At or above ALLOWED, a kind
# "explains" a failure; below, it is the aftermath of one (or nothing).
_SEVERITY = {
    Kind.PASS: 0,
    Kind.SKIP: 1,
    Kind.BLOCKED: 2,
    Kind.ALLOWED: 3,
    Kind.FAIL_NEVER_PASSED: 4,
    Kind.FAIL_LIKE_BASELINE: 5,
    Kind.FLAKY: 6,
    Kind.BROKEN: 7,
    Kind.REGRESSION: 8,
}
_EXPLAINS = _SEVERITY[Kind.ALLOWED]

Key = tuple[str, str | None, str | None]
"""An item: (job, step or None, test case or None)."""


@dataclass(frozen=True)
class Classification:
    """The judgement of one item. ``reason`` is osstest's short form after the outcome
    (``REGR. vs. 40``, ``like 40``, ``never pass``, ``pass in 41``, ``n/a``...); ``flight_ref`` is
    the flight it refers to, if any; ``retest`` is True when more evidence is needed first."""

    job: str
    step: str | None
    testcase: str | None
    kind: Kind
    outcome: Outcome
    baseline_outcome: Outcome | None
    reason: str
    flake_rate: float
    retest: bool = False
    flight_ref: int | None = None

    @property
    def key(self) -> Key:
        return (self.job, self.step, self.testcase)

    @property
    def level(self) -> str:
        """``job``, ``step`` or ``testcase``."""
        if self.testcase is not None:
            return "testcase"
        return "job" if self.step is None else "step"

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "step": self.step,
            "testcase": self.testcase,
            "kind": str(self.kind),
            "outcome": str(self.outcome),
            "baseline_outcome": None
            if self.baseline_outcome is None
            else str(self.baseline_outcome),
            "reason": self.reason,
            "flake_rate": round(self.flake_rate, 6),
            "retest": self.retest,
            "flight_ref": self.flight_ref,
        }


@dataclass(frozen=True)
class Verdict:
    """Every item of a flight classified, and what the gate may do.

    ``items``: job, then its steps each followed by its test cases, in flight order.
    ``details``: the most specific items worth reporting (what a report lists).
    ``blocking``: regressions (details). ``not_tested``: broken details and jobs blocked by them.
    ``retest``: jobs to run again before their result may block or pass (broken, flaky by rate,
    and jobs blocked by those; the planner adds their dependencies).
    ``push_allowed``: the flight has jobs, nothing blocks, nothing is untested, nothing awaits a
    retest. The gate also requires a ``real`` flight of the revision it pushes.
    """

    flight: int
    baseline: int | None
    items: tuple[Classification, ...]
    details: tuple[Classification, ...]
    blocking: tuple[Classification, ...]
    not_tested: tuple[Classification, ...]
    retest: tuple[str, ...]
    push_allowed: bool

    def item(
        self, job: str, step: str | None = None, testcase: str | None = None
    ) -> Classification:
        for c in self.items:
            if c.key == (job, step, testcase):
                return c
        raise KeyError((job, step, testcase))

    def jobs(self) -> tuple[Classification, ...]:
        return tuple(c for c in self.items if c.level == "job")


@dataclass(frozen=True)
class HistoryRow:
    """One flight's result for a job (or one step of it), for ``labgate history``.

    ``steps`` holds every step's outcome when no step was asked for, else just that step."""

    flight: int
    blessing: Blessing
    started: str | None
    revisions: Mapping[str, str]
    host: str | None
    outcome: Outcome
    steps: tuple[tuple[str, Outcome], ...] = ()
    reason: str | None = None


# --- evidence ------------------------------------------------------------------------------


def _index(flight: FlightResult) -> dict[Key, Outcome]:
    index: dict[Key, Outcome] = {}
    for job in flight.jobs:
        index[(job.name, None, None)] = job.outcome
        for step in job.steps:
            index[(job.name, step.name, None)] = step.outcome
            for case in step.testcases:
                index.setdefault((job.name, step.name, case.name), case.outcome)
    return index


def _tuple(flight: FlightResult) -> frozenset[tuple[str, str]]:
    return frozenset(flight.revisions.items())


StepKey = tuple[str, str]  # (job, step)


@dataclass
class _Observed:
    flight: FlightResult
    tuple: frozenset[tuple[str, str]]
    index: dict[Key, Outcome]
    commands: dict[StepKey, str | None]  # the command each step ran


def _observe(flights: Iterable[FlightResult]) -> list[_Observed]:
    seen: dict[int, FlightResult] = {}
    for f in flights:
        seen.setdefault(f.id, f)
    return [
        _Observed(f, _tuple(f), _index(f), _commands(f))
        for f in sorted(seen.values(), key=lambda f: f.id)
    ]


def _commands(flight: FlightResult) -> dict[StepKey, str | None]:
    return {(j.name, s.name): s.command for j in flight.jobs for s in j.steps}


@dataclass(frozen=True)
class FlakeRate:
    """An item's flake rate with its evidence: among its pass/fail runs at revision tuples that
    passed it (``runs``), how many failed (``flakes``). A step's history starts again when its
    command changes: runs of an older command do not count."""

    flakes: int
    runs: int

    @property
    def known(self) -> bool:
        """Whether any run is evidence (with none, the rate is unknown, not the prior's 5%)."""
        return self.runs > 0

    @property
    def estimate(self) -> float:
        """The Beta-smoothed rate the gate judges with (see the module docstring): the prior's
        mean, 0.05, without evidence."""
        prior_flakes, prior_clean = FLAKE_PRIOR
        return (self.flakes + prior_flakes) / (self.runs + prior_flakes + prior_clean)

    def __str__(self) -> str:
        if not self.known:
            return "unknown (no run where it passes)"
        runs = "1 run" if self.runs == 1 else f"{self.runs} runs"
        return f"{self.flakes / self.runs:.1%} ({self.flakes} of {runs})"

    def to_json(self) -> dict[str, Any]:
        return {
            "flakes": self.flakes,
            "runs": self.runs,
            "rate": round(self.flakes / self.runs, 6) if self.known else None,
            "estimate": round(self.estimate, 6),
        }


def _rate(observed: Sequence[_Observed], key: Key) -> float:
    return _evidence(observed, key).estimate


def _evidence(observed: Sequence[_Observed], key: Key) -> FlakeRate:
    job, step, _ = key
    ran = [o.commands[(job, step)] for o in observed if step and (job, step) in o.commands]
    command = ran[-1] if ran else None  # a step's runs count from its current command on
    by_tuple: dict[frozenset[tuple[str, str]], list[Outcome]] = {}
    for o in observed:
        outcome = o.index.get(key)
        if step and command is not None and o.commands.get((job, step)) not in (command, None):
            continue
        if outcome in (Outcome.PASS, Outcome.FAIL):
            by_tuple.setdefault(o.tuple, []).append(outcome)
    runs = flakes = 0
    for outcomes in by_tuple.values():
        if Outcome.PASS in outcomes:
            runs += len(outcomes)
            flakes += outcomes.count(Outcome.FAIL)
    return FlakeRate(flakes, runs)


def flake_rate(
    history: Sequence[FlightResult],
    job: str,
    step: str | None = None,
    testcase: str | None = None,
) -> float:
    """The learned flake rate of a job (or step, or test case) over ``history``: the
    Beta-smoothed share of its runs at revision tuples that passed it which failed (see the
    module docstring). A job with no history gets the prior mean, 0.05."""
    return _rate(_observe(history), (job, step, testcase))


def flake_evidence(
    history: Sequence[FlightResult],
    job: str,
    step: str | None = None,
    testcase: str | None = None,
) -> FlakeRate:
    """The evidence behind :func:`flake_rate`: the item's runs at revision tuples that passed
    it, and how many of them failed."""
    return _evidence(_observe(history), (job, step, testcase))


def flake_rates(history: Sequence[FlightResult], job: str) -> dict[str, FlakeRate]:
    """The flake rate of the job (key ``""``) and of each of its steps, with their evidence."""
    observed = _observe(history)
    return {"": _evidence(observed, (job, None, None)), **_step_rates(observed, job)}


def step_flake_rates(history: Sequence[FlightResult], job: str) -> dict[str, FlakeRate]:
    """The flake rate of every step the job ever had in ``history``, in first-seen order."""
    return _step_rates(_observe(history), job)


def _step_rates(observed: Sequence[_Observed], job: str) -> dict[str, FlakeRate]:
    names: dict[str, None] = {}
    for o in observed:
        for key in o.index:
            if key[0] == job and key[1] is not None and key[2] is None:
                names.setdefault(key[1], None)
    return {name: _evidence(observed, (job, name, None)) for name in names}


def history_rows(
    history: Sequence[FlightResult], job: str, step: str | None = None
) -> tuple[HistoryRow, ...]:
    """The job's (or step's) outcome in every flight of ``history`` that ran it, newest first."""
    rows = []
    for o in reversed(_observe(history)):
        try:
            result = o.flight.job(job)
        except KeyError:
            continue
        steps = tuple((s.name, s.outcome) for s in result.steps)
        if step is None:
            outcome, reason = result.outcome, result.reason
        else:
            found = [s for s in result.steps if s.name == step]
            if not found:
                continue
            outcome, reason, steps = found[0].outcome, found[0].reason, ((step, found[0].outcome),)
        rows.append(
            HistoryRow(
                flight=o.flight.id,
                blessing=o.flight.blessing,
                started=o.flight.started,
                revisions=dict(o.flight.revisions),
                host=result.host,
                outcome=outcome,
                steps=steps,
                reason=reason,
            )
        )
    return tuple(rows)


# --- classification ------------------------------------------------------------------------


@dataclass
class _Context:
    flight: FlightResult
    tuple: frozenset[tuple[str, str]]
    baseline: FlightResult | None
    observed: list[_Observed]  # history and baseline, without this flight, oldest first
    allowed: Sequence[AllowedFailure]
    flake_threshold: float
    rates: dict[Key, float] = field(default_factory=dict)

    def rate(self, key: Key) -> float:
        if key not in self.rates:
            self.rates[key] = _rate(self.observed, key)
        return self.rates[key]


def _allowance(ctx: _Context, key: Key) -> AllowedFailure | None:
    """The allowance covering a failed item: the step glob matches the step name, or
    ``step/testcase`` for a test case; a job-level item needs a step glob matching anything."""
    job, step, testcase = key
    for allowance in ctx.allowed:
        if not fnmatchcase(job, allowance.job):
            continue
        if step is None:
            if _covers_job(allowance):
                return allowance
        elif fnmatchcase(step, allowance.step) or (
            testcase is not None and fnmatchcase(f"{step}/{testcase}", allowance.step)
        ):
            return allowance
    return None


def _covers_job(allowance: AllowedFailure) -> bool:
    return allowance.step in ("*", "**")


def _baseline_evidence(ctx: _Context, key: Key) -> tuple[Outcome | None, int | None]:
    """The item's outcome on the baseline and the flight that shows it (see module docstring)."""
    base = ctx.baseline
    if base is None:
        return None, None
    base_tuple = _tuple(base)
    for wanted in (Outcome.PASS, Outcome.FAIL):
        shown = [
            o.flight.id
            for o in ctx.observed
            if o.tuple == base_tuple and o.index.get(key) is wanted
        ]
        if shown:
            return wanted, base.id if base.id in shown else shown[-1]
    for o in reversed(ctx.observed):
        if o.flight.id < base.id and o.index.get(key) in (Outcome.PASS, Outcome.FAIL):
            return o.index[key], o.flight.id
    return None, None


def _classify_fail(ctx: _Context, key: Key) -> Classification:
    rate = ctx.rate(key)
    base_outcome, base_flight = _baseline_evidence(ctx, key)

    def make(
        kind: Kind, reason: str, ref: int | None = None, retest: bool = False
    ) -> Classification:
        job, step, testcase = key
        return Classification(
            job, step, testcase, kind, Outcome.FAIL, base_outcome, reason, rate, retest, ref
        )

    allowance = _allowance(ctx, key)
    if allowance is not None:
        return make(Kind.ALLOWED, f"allowed: {allowance.reason}")
    same_tuple = [o for o in ctx.observed if o.tuple == ctx.tuple]
    for o in reversed(same_tuple):
        if o.index.get(key) is Outcome.PASS:
            return make(Kind.FLAKY, f"pass in {o.flight.id}", o.flight.id)
    if base_outcome is Outcome.FAIL:
        return make(Kind.FAIL_LIKE_BASELINE, f"like {base_flight}", base_flight)
    reference, untested = base_flight, ""
    if base_outcome is None:
        passes = [o.flight.id for o in ctx.observed if o.index.get(key) is Outcome.PASS]
        if not passes:
            return make(Kind.FAIL_NEVER_PASSED, "never pass")
        reference, untested = passes[-1], " (baseline untested)"
    failed_here = any(o.index.get(key) is Outcome.FAIL for o in same_tuple)
    if rate > ctx.flake_threshold and not failed_here:
        return make(
            Kind.FLAKY,
            f"flake rate {rate:.2f} > {ctx.flake_threshold:.2f}, retest",
            reference,
            retest=True,
        )
    return make(Kind.REGRESSION, f"REGR. vs. {reference}{untested}", reference)


def _classify_one(
    ctx: _Context, key: Key, outcome: Outcome, why: str | None = None
) -> Classification:
    """An item from its own outcome, before its children are taken into account; ``why`` is the
    stored reason of a broken item."""
    job, step, testcase = key
    if outcome is Outcome.FAIL:
        return _classify_fail(ctx, key)
    base_outcome, _ = _baseline_evidence(ctx, key)
    rate = ctx.rate(key)

    def make(kind: Kind, reason: str, retest: bool = False) -> Classification:
        return Classification(
            job, step, testcase, kind, outcome, base_outcome, reason, rate, retest
        )

    if outcome is Outcome.PASS:
        return make(Kind.PASS, "")
    if outcome is Outcome.SKIP:
        return make(Kind.SKIP, "")
    whole_job = [a for a in ctx.allowed if fnmatchcase(job, a.job) and _covers_job(a)]
    if whole_job:
        return make(Kind.ALLOWED, f"{outcome}, allowed: {whole_job[0].reason}")
    if outcome is Outcome.BLOCKED:
        return make(Kind.BLOCKED, "n/a")
    if outcome is Outcome.BROKEN:
        return make(Kind.BROKEN, f"not tested: {why}" if why else "not tested", retest=True)
    if outcome is Outcome.CANCELLED:
        return make(Kind.BROKEN, "cancelled, not tested", retest=True)
    return make(Kind.BROKEN, f"{outcome}, not finished", retest=True)


def _worst(items: Iterable[Classification]) -> Classification | None:
    worst: Classification | None = None
    for item in items:
        if worst is None or _SEVERITY[item.kind] > _SEVERITY[worst.kind]:
            worst = item
    return worst


def _explained(own: Classification, children: Sequence[Classification]) -> Classification:
    """``own`` as its children explain it (see "Parents are explained by their children")."""
    worst = _worst(children)
    if worst is None or _SEVERITY[worst.kind] < _EXPLAINS:
        return own
    if own.outcome is not Outcome.FAIL and _SEVERITY[worst.kind] <= _SEVERITY[own.kind]:
        return own
    label = worst.step if own.step is None else worst.testcase
    return Classification(
        own.job,
        own.step,
        own.testcase,
        worst.kind,
        own.outcome,
        own.baseline_outcome,
        f"{label}: {worst.reason}",
        own.flake_rate,
        worst.retest,
        worst.flight_ref,
    )


def _step_details(step: Classification, cases: Sequence[Classification]) -> list[Classification]:
    if step.kind in (Kind.PASS, Kind.SKIP, Kind.BLOCKED):
        return []
    failing = [c for c in cases if _SEVERITY[c.kind] >= _EXPLAINS]
    return failing or [step]


def _classify_job(
    ctx: _Context, job: JobResult, done: Mapping[str, Classification]
) -> tuple[Classification, list[Classification], list[Classification]]:
    """The job's classification, all its items (job first) and its details.

    A job the lab broke is not tested as a whole: its broken steps (or the job) are its details,
    and failures of its steps before the break are kept in ``items`` but block nothing."""
    step_items: list[Classification] = []
    details: list[Classification] = []
    steps: list[Classification] = []
    for step in job.steps:
        own = _classify_one(ctx, (job.name, step.name, None), step.outcome, step.reason)
        cases: list[Classification] = []
        if step.outcome is not Outcome.BROKEN:
            cases = [
                _classify_one(ctx, (job.name, step.name, c.name), c.outcome) for c in step.testcases
            ]
        classified = _explained(own, cases)
        steps.append(classified)
        step_items += [classified, *cases]
        details += _step_details(classified, cases)
    own = _classify_one(ctx, (job.name, None, None), job.outcome, job.reason)
    if own.kind is Kind.BLOCKED:
        own = _blocked(own, job, done)
        return own, [own, *step_items], [own]
    if own.kind is Kind.BROKEN:
        broken = [s for s in steps if s.kind is Kind.BROKEN]
        if broken:
            own = _explained(own, broken)
        return own, [own, *step_items], broken or [own]
    classified = _explained(own, steps)
    if classified.kind not in (Kind.PASS, Kind.SKIP) and not details:
        details = [classified]
    return classified, [classified, *step_items], details


def _blocked(
    own: Classification, job: JobResult, done: Mapping[str, Classification]
) -> Classification:
    causes = [
        done[d] for d in job.depends if d in done and done[d].kind not in (Kind.PASS, Kind.SKIP)
    ]
    cause = _worst(causes)
    if cause is None:
        return own
    untested = cause.retest or cause.kind is Kind.BROKEN
    return Classification(
        own.job,
        None,
        None,
        Kind.BLOCKED,
        own.outcome,
        own.baseline_outcome,
        f"n/a (blocked by {cause.job}: {cause.kind})",
        own.flake_rate,
        retest=untested,
    )


def _job_order(flight: FlightResult) -> list[JobResult]:
    """Jobs with every dependency before its dependants (flight order otherwise)."""
    by_name = {j.name: j for j in flight.jobs}
    ordered: list[JobResult] = []
    state: dict[str, int] = {}

    def visit(job: JobResult) -> None:
        if state.get(job.name):
            return
        state[job.name] = 1
        for dep in job.depends:
            if dep in by_name:
                visit(by_name[dep])
        ordered.append(job)

    for job in flight.jobs:
        visit(job)
    return ordered


def classify(
    flight: FlightResult,
    baseline: FlightResult | None,
    history: Sequence[FlightResult],
    *,
    allowed: Sequence[AllowedFailure] = (),
    flake_threshold: float = 0.1,
) -> Verdict:
    """Classify every job, step and test case of a finished ``flight``.

    ``baseline`` is the flight of the last pushed revision tuple (None on a new branch);
    ``history`` is the branch's earlier flights of any blessing (the baseline and the flight itself
    may be among them: they are told apart by id). ``allowed`` are the branch's allowed failures
    (globs). A learned flake rate above ``flake_threshold`` makes a would-be regression a retest.
    """
    others = [f for f in (*history, *([baseline] if baseline else [])) if f.id != flight.id]
    ctx = _Context(
        flight=flight,
        tuple=_tuple(flight),
        baseline=baseline,
        observed=_observe(others),
        allowed=allowed,
        flake_threshold=flake_threshold,
    )
    done: dict[str, Classification] = {}
    items_of: dict[str, list[Classification]] = {}
    details_of: dict[str, list[Classification]] = {}
    for job in _job_order(flight):
        done[job.name], items_of[job.name], details_of[job.name] = _classify_job(ctx, job, done)
    items = tuple(c for j in flight.jobs for c in items_of[j.name])
    details = tuple(c for j in flight.jobs for c in details_of[j.name])
    blocking = tuple(c for c in details if c.kind is Kind.REGRESSION)
    not_tested = tuple(
        c for c in details if c.kind is Kind.BROKEN or (c.kind is Kind.BLOCKED and c.retest)
    )
    retest = tuple(j.name for j in flight.jobs if any(c.retest for c in details_of[j.name]))
    return Verdict(
        flight=flight.id,
        baseline=baseline.id if baseline else None,
        items=items,
        details=details,
        blocking=blocking,
        not_tested=not_tested,
        retest=retest,
        push_allowed=bool(flight.jobs) and not blocking and not not_tested and not retest,
    )
