"""From a review flight's verdict to a vote: pure, no I/O.

+1 when nothing regressed, -1 on a regression, 0 when the lab failed (``broken``: not tested, never
blamed on the patch; the loop tests it again). The message names every job's outcome, links the
flight's page and lists the disabled tests, whatever the vote.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from labgate.model import DisabledTest, FlightResult, Outcome
from labgate.report import data
from labgate.review.base import Vote, VoteValue
from labgate.verdict import Classification, Kind, Verdict

SUMMARY_MAX = 140  # GitHub's limit for a commit status description


def flight_url(web_url: str | None, flight_id: int) -> str | None:
    """The flight's page on the lab's web dashboard, when the lab has a web URL."""
    return f"{web_url.rstrip('/')}/flights/{flight_id}" if web_url else None


_HEAD = re.compile(r"labgate(?: \(non-voting, would give (?P<label>[^)]*)\))?: ")


def summary_of(message: str) -> str:
    """A vote's one-line summary (a commit status's description): the message's first line
    without its ``labgate:`` tag, cut to ``SUMMARY_MAX`` characters, an ellipsis marking the cut.
    Derived from the message alone, so a vote recovered after a crash says the same."""
    first = message.split("\n", 1)[0]
    head = _HEAD.match(first)
    if head is not None:
        rest = first[head.end() :]
        first = f"{head['label']}: {rest}" if head["label"] else rest
    return first if len(first) <= SUMMARY_MAX else first[: SUMMARY_MAX - 1] + "…"


def _item(c: Classification) -> str:
    where = " / ".join(data(p) for p in (c.job, c.step, c.testcase) if p is not None)
    return f"  {where}: {c.outcome}, {data(c.reason)}" if c.reason else f"  {where}: {c.outcome}"


def _job_lines(flight: FlightResult, verdict: Verdict) -> list[str]:
    lines = []
    for job in flight.jobs:
        try:
            reason = verdict.item(job.name).reason
        except KeyError:
            reason = ""
        shown = f" ({data(reason)})" if reason and job.outcome is not Outcome.PASS else ""
        lines.append(f"  {data(job.name)}: {job.outcome}{shown}")
    return lines


def disabled_lines(disabled: Sequence[DisabledTest]) -> list[str]:
    """The ``[[disable]]`` entries as a vote lists them."""
    if not disabled:
        return ["Disabled tests: none"]
    lines = ["Disabled tests (not run, not counted):"]
    for d in disabled:
        bug = f" [{data(d.bug)}]" if d.bug else ""
        lines.append(f"  {data(d.job)} / {data(d.step)}: {data(d.reason)}{bug}")
    return lines


def _decide(
    flight: FlightResult, verdict: Verdict, attempts_left: bool
) -> tuple[VoteValue, str, bool]:
    """The vote, its headline and whether to test again."""
    if not flight.jobs:
        return 0, "not tested: the flight has no job (are they all disabled?)", False
    if verdict.blocking:
        first = verdict.blocking[0]
        where = "/".join(p for p in (first.job, first.step, first.testcase) if p)
        more = f" and {len(verdict.blocking) - 1} more" if len(verdict.blocking) > 1 else ""
        return -1, f"regression in {where}{more}", False
    lab_failed = bool(verdict.not_tested) or flight.outcome in (Outcome.BROKEN, Outcome.CANCELLED)
    if lab_failed or verdict.retest:
        why = "the lab failed" if lab_failed else "a flaky result needs a retest"
        if attempts_left:
            return 0, f"not tested, will retry ({why}; never blamed on the patch)", True
        return 0, f"not tested, gave up retrying ({why}; never blamed on the patch)", False
    passed = sum(1 for j in flight.jobs if j.outcome.succeeded)
    return 1, f"nothing regressed ({passed} of {len(flight.jobs)} jobs passed)", False


def vote_for(
    verdict: Verdict,
    flight: FlightResult,
    disabled: Sequence[DisabledTest],
    voting: bool,
    *,
    web_url: str | None = None,
    attempts_left: bool = True,
    marker: str = "",
) -> Vote:
    """The vote on a patch set from its review flight's verdict (see the module docstring).

    ``voting`` False keeps the decision in the message but asks the connector to comment only.
    ``attempts_left`` False turns "will retry" into "gave up". ``marker`` ends the message (the
    loop's run marker, see :attr:`labgate.review.base.ReviewRun.marker`)."""
    value, headline, retest = _decide(flight, verdict, attempts_left)
    url = flight_url(web_url, flight.id)
    label = f"Verified{value:+d}" if value else "Verified 0"
    first = f"labgate: {label}: {headline}"
    if not voting:
        first = f"labgate (non-voting, would give {label}): {headline}"
    lines = [first, ""]
    lines.append(f"Flight {flight.id} of {data(flight.branch)} ({flight.outcome or flight.state})")
    if url:
        lines.append(url)
    lines.append(
        "Revisions: " + ", ".join(f"{data(k)} {v[:12]}" for k, v in flight.revisions.items())
    )
    lines += ["", "Jobs:", *(_job_lines(flight, verdict) or ["  (none)"])]
    sections = [
        ("Regressions (blocking):", [c for c in verdict.details if c.kind is Kind.REGRESSION]),
        ("Not tested (the lab failed):", list(verdict.not_tested)),
        ("Failing intermittently:", [c for c in verdict.details if c.kind is Kind.FLAKY]),
    ]
    for title, items in sections:
        if items:
            lines += ["", title, *(_item(c) for c in items)]
    lines += ["", *disabled_lines(disabled)]
    if marker:
        lines += ["", marker]
    message = "\n".join(lines) + "\n"
    return Vote(value, message, voting, summary_of(message), target_url=url, retest=retest)


def error_vote(
    reason: str,
    disabled: Sequence[DisabledTest],
    voting: bool,
    marker: str,
    *,
    attempts_left: bool = True,
) -> Vote:
    """A run that could not be tested at all (its ref cannot be fetched, a pinned tree cannot
    be resolved): 0, said so, and tested again while attempts are left (the lab's failure)."""
    then = "will retry" if attempts_left else "gave up retrying"
    headline = f"not tested, {then}: {data(reason)}"
    lines = [f"labgate: Verified 0: {headline}", "", *disabled_lines(disabled), "", marker]
    message = "\n".join(lines) + "\n"
    return Vote(0, message, voting, summary_of(message), retest=attempts_left)


def patch_vote(reason: str, disabled: Sequence[DisabledTest], voting: bool, marker: str) -> Vote:
    """A patch that does not apply to its base commit: the patch's failure, -1, never retried
    (``reason``: one line naming the file or hunk)."""
    headline = f"the patch does not apply: {data(reason)}"
    lines = [f"labgate: Verified-1: {headline}", "", *disabled_lines(disabled), "", marker]
    message = "\n".join(lines) + "\n"
    return Vote(-1, message, voting, summary_of(message))
