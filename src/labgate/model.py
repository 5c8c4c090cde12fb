"""The values every part of labgate shares: outcomes, planned jobs, stored results.

Small frozen dataclasses with no I/O. The names follow docs/architecture.md: a *flight* runs a
branch's *jobs* against a *revision tuple*; a job is an ordered list of *steps*; every job and step
ends with an *outcome*.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from labgate.bisect.posterior import Knowledge


class Outcome(StrEnum):
    """The outcome of a step, a job or a flight, and the live states before it.

    ``pass``/``fail``/``skip`` come from the code under test; ``broken`` is the lab's own failure
    (host lost, checkout impossible, executor error) and is never blamed on code; ``blocked`` is a
    job whose dependency did not pass; ``cancelled`` is work stopped by a person (Ctrl-C).
    """

    PASS = "pass"
    FAIL = "fail"
    BROKEN = "broken"
    BLOCKED = "blocked"
    SKIP = "skip"
    CANCELLED = "cancelled"
    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"

    @property
    def finished(self) -> bool:
        """True for a final outcome, False for a live state."""
        return self not in LIVE_OUTCOMES

    @property
    def succeeded(self) -> bool:
        """True when dependants may run and the flight is not failed by it (pass or skip)."""
        return self in (Outcome.PASS, Outcome.SKIP)


LIVE_OUTCOMES = frozenset({Outcome.QUEUED, Outcome.PREPARING, Outcome.RUNNING})


class Blessing(StrEnum):
    """Why a flight was run, which decides what its results may do (only ``real`` may push)."""

    REAL = "real"
    ADHOC = "adhoc"
    BISECT = "bisect"
    REVIEW = "review"
    PLAY = "play"


class FlightState(StrEnum):
    """Where a flight is in its life; its ``outcome`` is set once it is ``finished``."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"


# --- the job matrix: what lab.toml asks to run ---------------------------------------------------


@dataclass(frozen=True)
class StepSpec:
    """One step of a job: a shell command run in the job's work dir."""

    name: str
    run: str
    timeout: float | None = None
    results: str | None = None
    """Where the step leaves test case results: ``"junit:<glob>"`` or ``"tap:<glob>"``."""
    metrics: str | None = None
    """Where the step leaves metric files: ``"json:<glob>"`` (see ``labgate.perf.metrics``);
    ``LABGATE-METRIC`` lines in its output are read whatever this says."""
    repeat: int = 1
    """How many times the step runs in one job (each run's metrics are kept)."""
    perf: PerfSettings | None = None
    """The step's own ``min_change``/``alpha``/``max_repeats``/``block``; None: ``[perf]``'s."""


@dataclass(frozen=True)
class JobSpec:
    """One planned job, every ``{var}`` already expanded.

    ``requires`` are host flags the host must have; ``depends`` names jobs of the same flight that
    must pass first (their artifacts are given to this one); ``exclusive`` holds the whole host.
    """

    name: str
    steps: tuple[StepSpec, ...]
    requires: tuple[str, ...] = ()
    depends: tuple[str, ...] = ()
    runvars: tuple[tuple[str, str], ...] = ()
    exclusive: bool = False

    @property
    def runvar_dict(self) -> dict[str, str]:
        return dict(self.runvars)


@dataclass(frozen=True)
class Lifecycle:
    """A host's lifecycle commands, run on the controller (None: not declared): power, a console
    captured while a job runs, an install before an exclusive job, a health check before any;
    ``quarantine_after`` broken jobs in a row quarantine the host."""

    power_on: str | None = None
    power_off: str | None = None
    power_cycle: str | None = None
    console: str | None = None
    install: str | None = None
    health: str | None = None
    quarantine_after: int = 3


@dataclass(frozen=True)
class HostSpec:
    """A host from lab.toml. ``slots`` jobs may run at once; an exclusive job takes them all.
    ``connection`` is the executor's own typed settings (None for a local host; an SSH host's
    ``SshTarget``), ``address`` where lifecycle commands find the host, if it has one."""

    name: str
    flags: frozenset[str]
    slots: int = 1
    executor: str = "local"
    lifecycle: Lifecycle = Lifecycle()
    connection: object | None = None
    address: str | None = None


@dataclass(frozen=True)
class TreeSpec:
    """A git repository the lab tests."""

    name: str
    url: str
    private: bool = False
    """An undisclosed repository (lab.toml ``private = true``): only flights under embargo check
    it out, and only the branches that test or pin it have it in their revision tuple."""


@dataclass(frozen=True)
class AllowedFailure:
    """A failure a branch accepts: jobs and steps matching the globs do not block its push."""

    job: str
    step: str
    reason: str


EMBARGO_HOST_FLAG = "embargo-ok"
"""The host flag of hosts that may run embargoed jobs: every job of an embargoed flight
requires it, so a shared host never holds one."""


@dataclass(frozen=True)
class Embargo:
    """Work seen only by ``group``'s members until ``until`` (an aware time), then public."""

    group: str
    until: datetime


@dataclass(frozen=True)
class Owner:
    """The community user an on-demand flight is for; ``only``: no one else sees it (but the lab
    admin) until they make it public."""

    user: str
    only: bool = True


@dataclass(frozen=True)
class BranchSpec:
    """A test stream: ``tree`` is under test (``staging`` is tested, ``tested`` is pushed to);
    every other tree is taken at the ref ``pin`` gives it (default: its ``tested`` ref name is not
    assumed; a tree without a pin is taken at its remote HEAD)."""

    name: str
    tree: str
    staging: str = "staging"
    tested: str = "master"
    pin: tuple[tuple[str, str], ...] = ()
    allow: tuple[AllowedFailure, ...] = ()
    embargo: Embargo | None = None
    """Every flight of the branch is planned under this embargo (lab.toml ``embargo``)."""

    @property
    def pin_dict(self) -> dict[str, str]:
        return dict(self.pin)


# --- results: what the store gives back -----------------------------------------------------


@dataclass(frozen=True)
class TestCaseResult:
    """One test case a step reported through its ``results`` (JUnit or TAP)."""

    __test__ = False  # not a pytest class, whatever its name says

    name: str
    outcome: Outcome
    duration_s: float | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": str(self.outcome),
            "duration_s": self.duration_s,
            "message": self.message,
        }


@dataclass(frozen=True)
class StepResult:
    """A stored step: its outcome and what it took. ``log`` is a path under the lab's log dir."""

    id: int
    name: str
    outcome: Outcome
    exit_status: int | None = None
    duration_s: float | None = None
    log: str | None = None
    reason: str | None = None
    started: str | None = None
    finished: str | None = None
    testcases: tuple[TestCaseResult, ...] = ()
    command: str | None = None
    """The command it ran (as planned), None when not read: a changed command starts a new
    history for the step's flake rate."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": str(self.outcome),
            "exit_status": self.exit_status,
            "duration_s": self.duration_s,
            "log": self.log,
            "reason": self.reason,
            "testcases": [t.to_json() for t in self.testcases],
        }


@dataclass(frozen=True)
class JobResult:
    """A stored job with its steps in order."""

    id: int
    name: str
    outcome: Outcome
    host: str | None = None
    runvars: Mapping[str, str] = field(default_factory=dict)
    steps: tuple[StepResult, ...] = ()
    depends: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    exclusive: bool = False
    reason: str | None = None
    started: str | None = None
    finished: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": str(self.outcome),
            "host": self.host,
            "runvars": dict(self.runvars),
            "reason": self.reason,
            "steps": [s.to_json() for s in self.steps],
        }


@dataclass(frozen=True)
class FlightResult:
    """A stored flight. ``revisions`` maps each tree to the full sha tested."""

    id: int
    branch: str
    blessing: Blessing
    revisions: Mapping[str, str]
    state: FlightState
    outcome: Outcome | None
    started: str | None
    finished: str | None
    jobs: tuple[JobResult, ...] = ()

    def job(self, name: str) -> JobResult:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form (``labgate flight show --json``): keep these names."""
        return {
            "id": self.id,
            "branch": self.branch,
            "blessing": str(self.blessing),
            "revisions": dict(self.revisions),
            "state": str(self.state),
            "started": self.started,
            "finished": self.finished,
            "outcome": str(self.outcome) if self.outcome is not None else None,
            "jobs": [j.to_json() for j in self.jobs],
        }


def flight_outcome(job_outcomes: list[Outcome]) -> Outcome:
    """The outcome of a finished flight from its jobs' outcomes: pass when every job passed or
    skipped; otherwise the worst, in the order fail > broken > blocked > cancelled."""
    for worst in (Outcome.FAIL, Outcome.BROKEN, Outcome.BLOCKED, Outcome.CANCELLED):
        if worst in job_outcomes:
            return worst
    return Outcome.PASS


def step_outcome(exit_status: int) -> Outcome:
    """The outcome of a step from its exit status, as ``git bisect run`` reads one: 0 pass,
    125 skip, anything else fail (a lab failure is reported separately: see the executor)."""
    if exit_status == 0:
        return Outcome.PASS
    if exit_status == 125:
        return Outcome.SKIP
    return Outcome.FAIL


@dataclass(frozen=True)
class PushRecord:
    """One decision of the push gate to move a branch's ``tested`` ref, and how it went.

    ``status``: ``pushed``, ``not-fast-forward`` (someone moved ``tested`` by hand: reported,
    never overwritten) or ``error``."""

    id: int
    branch: str
    flight_id: int
    tree: str
    sha: str
    previous_sha: str | None
    status: str
    message: str | None
    created: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "branch": self.branch,
            "flight": self.flight_id,
            "tree": self.tree,
            "sha": self.sha,
            "previous_sha": self.previous_sha,
            "status": self.status,
            "message": self.message,
            "created": self.created,
        }


@dataclass(frozen=True)
class BisectionRecord:
    """A bisection of one regression (job, step, optional test case) of a branch.

    ``state`` is ``running``, ``found`` (culprit named) or ``undecided``. ``graph`` is what the web
    page draws: ``{"nodes": [{"id", "tree", "commit", "subject", "outcomes": [...],
    "probability"}], "edges": [[child, parent], ...]}``; ``flights`` are the bisect flights used."""

    id: int
    branch: str
    job: str
    step: str | None
    testcase: str | None
    flight_id: int
    baseline_flight_id: int | None
    state: str
    culprit_tree: str | None
    culprit_commit: str | None
    confidence: float | None
    executions: int
    rounds: int
    reason: str | None
    flights: tuple[int, ...]
    graph: Mapping[str, Any]
    created: str
    finished: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "branch": self.branch,
            "job": self.job,
            "step": self.step,
            "testcase": self.testcase,
            "flight": self.flight_id,
            "baseline_flight": self.baseline_flight_id,
            "state": self.state,
            "culprit": (
                {"tree": self.culprit_tree, "commit": self.culprit_commit}
                if self.culprit_commit
                else None
            ),
            "confidence": self.confidence,
            "executions": self.executions,
            "rounds": self.rounds,
            "reason": self.reason,
            "flights": list(self.flights),
            "created": self.created,
            "finished": self.finished,
        }


@dataclass(frozen=True)
class GateSettings:
    """``[gate]`` in lab.toml: how the push gate judges, retests and bisects."""

    flake_threshold: float = 0.1
    """A would-be regression whose learned flake rate is above this is retested first."""
    retests: int = 2
    """How many times a flaky or broken job is run again before its result stands."""
    bisect_parallel: int = 2
    """Bisect flights run at once (k candidates tested together)."""
    bisect_confidence: float = 0.99
    bisect_flaky: Knowledge = "auto"
    """Can a bisected test fail at a good commit? ``auto``: as far as its history allows."""
    bisect_intermittent: Knowledge = "auto"
    """Can a regression's test pass at a bad commit? ``auto``: learn it from the runs."""
    bisect_max_flights: int = 60
    """Bisect flights one bisection may run before it gives up undecided."""
    lease_s: float = 60.0
    """How long a gate's hold on a branch lasts without a heartbeat (another gate may take over
    after that, when the holder was killed)."""


@dataclass(frozen=True)
class PerfSettings:
    """``[perf]`` in lab.toml (or a step's own keys): how a step's metrics are judged against the
    baseline's on the same host class (see ``labgate.perf.compare``)."""

    min_change: float = 0.05
    """The smallest relative change that matters (0.05: 5%)."""
    alpha: float = 0.01
    """The largest doubled p-value of a difference."""
    max_repeats: int = 20
    """The most values the gate gathers for one metric (retests included) before it reports
    the metric unknown."""
    block: bool = False
    """Whether a performance regression stops the push (default: report only)."""


# --- code review: lab.toml's [[review]] and [[disable]] --------------------------------------


@dataclass(frozen=True)
class DisabledTest:
    """A test the lab does not run (``[[disable]]``): jobs matching ``job`` are left out of every
    flight (with the jobs that depend on them), or only their steps matching ``step``; each vote
    lists it with its ``reason`` and ``bug`` link."""

    job: str
    step: str = "*"
    reason: str = ""
    bug: str | None = None

    @property
    def whole_job(self) -> bool:
        return self.step in ("*", "**")


class ReviewSettings(Protocol):
    """A code review driver's own typed settings (``ReviewSpec.settings``): credentials, how it
    reports. Each driver defines its own, with its ``[[review]]`` keys."""

    def secret_envs(self) -> tuple[str | None, ...]:
        """The environment variables it reads secrets from (never given to a step)."""
        ...


@dataclass(frozen=True)
class ReviewSpec:
    """A code review system labgate tests proposed patches of (``[[review]]``).

    ``driver`` names its driver (``gerrit``, ``github``...); ``server`` its base URL (GitHub: the
    REST API's); ``project`` the project there (GitHub: ``owner/repo``); ``branch`` the lab
    branch whose jobs run, with the patch as its tree under test; ``target`` limits it to
    changes for that review branch (None: any). ``voting = false`` comments without voting.
    ``settings``: the driver's own (credentials are read from the environment variables they
    name, never from lab.toml)."""

    name: str
    driver: str
    server: str
    project: str
    branch: str
    settings: ReviewSettings
    target: str | None = None
    voting: bool = True
    recheck: str = r"^recheck( labgate)?$"
    web_url: str | None = None
    retries: int = 2
    ci_accounts: tuple[str, ...] = ()
    """Other CI accounts (Gerrit user names, GitHub status contexts) whose votes are recorded
    for ``labgate review discrepancies``; empty: every other account that votes Verified."""
