"""Reports: the one text renderer of flight verdicts and bisection results, used by the CLI, the
e-mail and (later) the web pages; and the JSON form of a verdict for ``--json``.

The text follows osstest's flight reports, so people who read those read these: a subject
``[<branch> test] <flight>: regressions - FAIL``, sections of failing steps with ``REGR. vs. N``,
``like N``, ``never pass``, ``pass in N``, the versions, the people, a table of jobs, and
``Pushing revision`` or ``Not pushing``.

Pure: no I/O. Everything that comes from outside (commit subjects, author names, tree and job
names, reasons) is inserted as data: never used as a format string, and with control characters
escaped so that a commit subject cannot forge a line of the report or a mail header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labgate.model import FlightResult, Outcome
from labgate.perf.ranks import median
from labgate.perf.verdict import MetricVerdict
from labgate.verdict import Classification, FlakeRate, HistoryRow, Kind, Verdict

__all__ = [
    "BisectionSummary",
    "bisection_subject",
    "data",
    "render_bisection_report",
    "render_flight_report",
    "render_history",
    "render_perf_lines",
    "report_subject",
    "verdict_json",
]

_RULE = "-" * 60
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def data(value: object) -> str:
    """``value`` as one line of plain text: control characters shown as ``\\xNN`` escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


# --- flight reports ------------------------------------------------------------------------


def _overall(flight: FlightResult) -> str:
    """osstest's overall outcome: ``all pass``, ``FAIL``, ``ALL FAIL`` or
    ``trouble: <outcomes>`` when the lab broke something."""
    outcomes = {job.outcome for job in flight.jobs}
    if outcomes <= {Outcome.PASS, Outcome.SKIP} and outcomes:
        return "all pass"
    if Outcome.BROKEN in outcomes or any(not o.finished for o in outcomes):
        return "trouble: " + "/".join(sorted(str(o) for o in outcomes))
    if Outcome.PASS not in outcomes:
        return "ALL FAIL"
    return "FAIL"


def report_subject(flight: FlightResult, verdict: Verdict, *, pushed: bool | None) -> str:
    """``[<branch> test] <flight>: <verdict>`` as osstest writes it, e.g. ``regressions - FAIL``,
    ``tolerable FAIL - PUSHED``, ``all pass - PUSHED``."""
    overall = _overall(flight)
    if verdict.blocking:
        status = f"regressions - {overall}"
    elif overall == "all pass":
        status = overall
    else:
        status = f"tolerable {overall}"
    if pushed:
        status += " - PUSHED"
    elif pushed is False and not verdict.blocking:
        status += " - NOT PUSHED"
    return f"[{data(flight.branch)} test] {flight.id}: {status}"


def _step_number(flight: FlightResult, item: Classification) -> str:
    if item.step is None:
        return ""
    try:
        names = [s.name for s in flight.job(item.job).steps]
    except KeyError:
        return ""
    return str(names.index(item.step) + 1) if item.step in names else ""


_Row = tuple[str, str, str, str]


def _item_rows(flight: FlightResult, items: Sequence[Classification]) -> list[_Row]:
    rows: list[_Row] = []
    for item in items:
        what = "" if item.step is None else data(item.step)
        if item.testcase is not None:
            what += "/" + data(item.testcase)
        result = f"{item.outcome} {data(item.reason)}".rstrip()
        rows.append((data(item.job), _step_number(flight, item), what, result))
    return rows


def _item_lines(rows: list[_Row], widths: tuple[int, int]) -> list[str]:
    """One line per item: `` job  3 step[/testcase]  outcome reason``, aligned."""
    job_w, what_w = widths
    return [f" {j:<{job_w}} {n:>2} {w:<{what_w}} {r}".rstrip() for j, n, w, r in rows]


def _section(title: str, lines: list[str]) -> list[str]:
    return [title, *lines, ""] if lines else []


def _versions(title: str, revisions: Mapping[str, str]) -> list[str]:
    lines = [f" {data(tree):<20} {data(sha)}" for tree, sha in sorted(revisions.items())]
    return [title, *lines] if lines else [title, " (none)"]


def render_flight_report(
    flight: FlightResult,
    verdict: Verdict,
    baseline: FlightResult | None,
    *,
    pushed: bool | None,
    pushed_revision: str | None = None,
    people: Sequence[str] = (),
    lab_name: str = "labgate",
    same_since: int | None = None,
    push_failure: tuple[str, str] | None = None,
    perf: Sequence[MetricVerdict] = (),
) -> str:
    """The text of a flight report (the body of the mail; ``labgate report`` prints it).

    ``pushed``: True when the gate pushed ``pushed_revision``, False when it did not, None when
    the flight could not push (not ``real``). ``people``: who touched the revisions under test.
    ``same_since``: the first flight of this revision tuple, when the caller knows it.
    ``push_failure``: (one line with the fix, git's own text) when the push was allowed and
    failed. ``perf``: the flight's metrics judged against the baseline's."""
    details = verdict.details
    not_tested = list(verdict.not_tested)
    tolerated = (Kind.FAIL_LIKE_BASELINE, Kind.FAIL_NEVER_PASSED, Kind.ALLOWED, Kind.BLOCKED)
    sections = [
        (
            "Tests which did not succeed and are blocking:",
            [c for c in details if c.kind is Kind.REGRESSION],
        ),
        ("Tests which could not be run (the lab failed; not tested, to be retested):", not_tested),
        (
            "Tests which are failing intermittently (not blocking):",
            [c for c in details if c.kind is Kind.FLAKY],
        ),
        (
            "Tests which did not succeed, but are not blocking:",
            [c for c in details if c.kind in tolerated and c not in not_tested],
        ),
    ]
    rows = [_item_rows(flight, items) for _, items in sections]
    widths = (
        max((len(r[0]) for section in rows for r in section), default=0),
        max((len(r[2]) for section in rows for r in section), default=0),
    )
    lines = [f"flight {flight.id} {data(flight.branch)} {flight.blessing} [{flight.blessing}]"]
    lines += [f"{data(lab_name)}", ""]
    if verdict.blocking or any(v.blocking for v in perf):
        lines += ["Regressions :-(", ""]
    for (title, _), section_rows in zip(sections, rows, strict=True):
        lines += _section(title, _item_lines(section_rows, widths))
    lines += render_perf_lines(perf)
    lines += _versions("version targeted for testing:", flight.revisions)
    lines += _versions("baseline version:", baseline.revisions if baseline else {})
    lines += [""]
    if baseline is not None:
        lines += [f"Last test of basis   {baseline.id:>8}  {data(baseline.started or '')}".rstrip()]
    if same_since is not None:
        lines += [f"Testing same since   {same_since:>8}"]
    lines += [""]
    if people:
        lines += ["People who touched revisions under test:"]
        lines += [f"  {data(person)}" for person in people]
        lines += [""]
    lines += _jobs_table(flight)
    lines += ["", _RULE, f"labgate on {data(lab_name)}", ""]
    if push_failure is not None:
        summary, detail = push_failure
        lines += [f"Not pushing: the push failed: {data(summary)}", "", "git said:"]
        lines += [f"  {data(line)}" for line in detail.splitlines()]
        lines += ["", "The next cycle pushes this tested revision without testing it again."]
    else:
        slower = sum(v.blocking for v in perf)
        lines += _push_paragraph(flight, verdict, pushed, pushed_revision, slower)
    return "\n".join(lines) + "\n"


def render_perf_lines(verdicts: Sequence[MetricVerdict]) -> list[str]:
    """The flight report's performance sections (none when nothing is worth saying)."""
    sections = [
        ("Performance regressions, blocking:", [v for v in verdicts if v.blocking]),
        (
            "Performance regressions, not blocking (lab.toml: block = false):",
            [v for v in verdicts if v.word == "regression" and not v.blocking],
        ),
        ("Performance improvements:", [v for v in verdicts if v.word == "improvement"]),
        (
            "Performance not decided (no more runs allowed: max_repeats):",
            [v for v in verdicts if v.word == "unknown"],
        ),
        ("Performance without a baseline:", [v for v in verdicts if v.word == "no-baseline"]),
    ]
    lines: list[str] = []
    for title, items in sections:
        if items:
            lines += [title, *(f" {data(metric_line(v))}" for v in items), ""]
    return lines


def metric_line(v: MetricVerdict) -> str:
    """``job step metric [class]  +12.0% (10 -> 11.2 s, p=0.0004, 5 vs 5 runs)``."""
    where = f"{v.job} {v.step} {v.metric} [{v.host_class}]"
    now = median(v.current)
    if v.comparison is None:
        return f"{where}  {now:g} {v.unit} ({len(v.current)} runs; {v.note})"
    c = v.comparison
    return (
        f"{where}  {c.change:+.1%} ({median(v.baseline):g} -> {now:g} {v.unit}, "
        f"p={c.p_value:.2g}, {len(v.baseline)} vs {len(v.current)} runs)"
    )


def _jobs_table(flight: FlightResult) -> list[str]:
    width = max([len(data(j.name)) for j in flight.jobs] + [40])
    return ["jobs:", *(f" {data(j.name):<{width}} {j.outcome}" for j in flight.jobs)]


def _push_paragraph(
    flight: FlightResult,
    verdict: Verdict,
    pushed: bool | None,
    revision: str | None,
    perf_regressions: int = 0,
) -> list[str]:
    if pushed is None:
        return [f"Not pushing ({flight.blessing} flight: only real flights push)."]
    if pushed:
        return ["Pushing revision :", "", f" {data(revision or '')}".rstrip()]
    why = []
    if verdict.blocking:
        why.append(f"{len(verdict.blocking)} regression(s)")
    if perf_regressions:
        why.append(f"{perf_regressions} performance regression(s)")
    if verdict.not_tested:
        why.append(f"{len(verdict.not_tested)} not tested")
    if verdict.retest:
        why.append("retest: " + " ".join(data(j) for j in verdict.retest))
    return ["Not pushing." + (f" ({'; '.join(why)})" if why else "")]


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    """The stable JSON form of a verdict (``--json``): keep these names."""
    return {
        "flight": verdict.flight,
        "baseline": verdict.baseline,
        "push_allowed": verdict.push_allowed,
        "retest": list(verdict.retest),
        "blocking": [c.to_json() for c in verdict.blocking],
        "not_tested": [c.to_json() for c in verdict.not_tested],
        "details": [c.to_json() for c in verdict.details],
        "items": [c.to_json() for c in verdict.items],
    }


# --- history -------------------------------------------------------------------------------


def render_history(
    job: str,
    step: str | None,
    rows: Sequence[HistoryRow],
    rates: Mapping[str, FlakeRate],
) -> str:
    """``labgate history``: one line per flight (newest first) with blessing, host, outcome and
    revisions, then the flake rate of each step in ``rates`` with its evidence."""
    title = data(job) if step is None else f"{data(job)} {data(step)}"
    lines = [f"history of {title}", ""]
    if rows:
        lines.append(
            f" {'flight':>8} {'started (UTC)':<19} {'blessing':<8} {'host':<16} "
            f"{'outcome':<9} revisions"
        )
    for row in rows:
        revisions = " ".join(f"{data(t)}={data(s)[:12]}" for t, s in sorted(row.revisions.items()))
        started = (row.started or "-")[:19].replace("T", " ")
        line = (
            f" {row.flight:>8} {started:<19} {row.blessing:<8} {data(row.host or '-'):<16} "
            f"{row.outcome:<9} {revisions}"
        )
        if step is None and row.outcome is not Outcome.PASS:
            ended = [f"{data(n)}:{o}" for n, o in row.steps if o is not Outcome.PASS]
            line += "  " + " ".join(ended[:1])
        lines.append(line.rstrip())
    if not rows:
        lines.append(" (no flight ran it)")
    if rates:
        lines += ["", "flake rate (failures in runs at revisions that passed it):"]
        lines += [f" {data(name):<30} {rate}" for name, rate in rates.items()]
    return "\n".join(lines) + "\n"


# --- bisection reports ---------------------------------------------------------------------


@dataclass(frozen=True)
class BisectionSummary:
    """What a bisection found for one regressed step. The culprit fields (``tree``, ``commit``,
    ``author``, ``email``, ``subject``) are None when it found none, and ``reason`` says why."""

    job: str
    step: str | None
    tree: str | None
    commit: str | None
    author: str | None
    email: str | None
    subject: str | None
    confidence: float | None
    executions: int
    flights: tuple[int, ...]
    branch: str | None = None
    reason: str | None = None

    @property
    def found(self) -> bool:
        return self.commit is not None


def bisection_subject(summary: BisectionSummary) -> str:
    """``[<branch> bisection] complete <job>`` (or ``incomplete``), as osstest writes it."""
    branch = data(summary.branch or "labgate")
    state = "complete" if summary.found else "incomplete"
    return f"[{branch} bisection] {state} {data(summary.job)}"


def render_bisection_report(summary: BisectionSummary) -> str:
    """The text of a bisection report: the first bad commit with its author, subject and our
    confidence, or why none was found; then the flights it used."""
    lines = []
    if summary.branch:
        lines.append(f"branch {data(summary.branch)}")
    lines.append(f"job {data(summary.job)}")
    if summary.step:
        lines.append(f"testid {data(summary.step)}")
    lines.append("")
    if summary.found:
        lines += [
            "*** Found and reproduced problem changeset ***",
            "",
            f"  Bug is in tree:  {data(summary.tree or '?')}",
            f"  Bug introduced:  {data(summary.commit)}",
            "",
            f"{data(summary.tree or '?')} {data(summary.commit)} is the first bad commit",
        ]
        author = data(summary.author or "")
        if summary.email:
            author = f"{author} <{data(summary.email)}>".strip()
        lines += [f"Author: {author or '(unknown)'}", f"Subject: {data(summary.subject or '')}"]
    else:
        lines += [
            "*** No culprit found ***",
            "",
            f"  Reason: {data(summary.reason or 'not given')}",
        ]
    lines.append("")
    if summary.confidence is not None:
        lines.append(f"Confidence: {summary.confidence:.3f} after {summary.executions} runs")
    else:
        lines.append(f"Runs: {summary.executions}")
    flights = ", ".join(str(f) for f in summary.flights) or "(none)"
    lines += [f"Flights used: {flights}", ""]
    lines += [_RULE, "labgate bisection", ""]
    return "\n".join(lines)
