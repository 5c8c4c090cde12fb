"""A flight's findings against its baseline, as the CLI, the web, the gate and mail show them.

`flight_comparison` reads what the store holds (the flight's findings and its baseline's, the
triage, the commits blamed) and compares them; a finding whose identity changed but that matched a
triaged one takes its triage for good (`labgate.store.findings.FindingTables.carry_triage`).
`lines` is the one text form (the CLI and the flight report's mail).
"""

from __future__ import annotations

from collections.abc import Mapping

from labgate.findings.compare import Comparison, Policy, Row, State, compare
from labgate.model import Outcome as StepOutcome
from labgate.store import Store

__all__ = ["findings_json", "flight_comparison", "lines", "location"]


def flight_comparison(store: Store, flight_id: int, policy: Policy | None = None) -> Comparison:
    """The findings of a stored flight against its baseline (see ``findings_baseline``)."""
    store.get_flight(flight_id)  # FlightNotFound for an unknown flight
    current = store.flight_findings(flight_id)
    baseline = store.findings_baseline(flight_id)
    before = store.flight_findings(baseline) if baseline is not None else []
    analysed = None
    if baseline is not None:
        ran = (StepOutcome.PASS, StepOutcome.FAIL)
        analysed = {
            (j.name, s.name)
            for j in store.get_flight(baseline).jobs
            for s in j.steps
            if s.outcome in ran
        }
    triage = store.triage_of([f.identity for f in current] + [f.identity for f in before])
    comparison = compare(
        flight_id, current, baseline, before,
        policy=policy, triage=triage, blamed=store.blames(flight_id), analysed_before=analysed,
    )  # fmt: skip
    store.carry_triage(
        (r.finding.identity, r.before.identity)
        for r in comparison.rows
        if r.before is not None and r.triage is not None and r.finding.identity not in triage
    )
    return comparison


def findings_json(comparison: Comparison) -> dict[str, object]:
    """The findings part of a stored verdict: counts, and the identities of the blocking ones."""
    return {
        "baseline": comparison.baseline,
        "counts": comparison.counts(),
        "blocking": [r.finding.identity for r in comparison.blocking],
    }


def location(row: Row, revisions: Mapping[str, str]) -> str:
    """``file:line`` at the flight's revision (the baseline's for a fixed finding), with the
    tree's commit: ``xen/common/sched.c:120 @ 3f2a1b2c0d``."""
    f = row.finding
    sha = revisions.get(f.tree or "", "")
    return f"{f.where} @ {sha[:12]}" if sha else f.where


def lines(
    comparison: Comparison,
    revisions: Mapping[str, str],
    baseline_revisions: Mapping[str, str] | None = None,
) -> list[str]:
    """The text form: a summary line, then one line a new or fixed finding (unchanged ones are
    counted), each with its identity, rule, level, place, message, triage and blame."""
    counts = comparison.counts()
    base = f"baseline flight {comparison.baseline}" if comparison.baseline else "no baseline"
    out = [
        f"findings of flight {comparison.flight} against {base}: {counts['new']} new"
        f" ({len(comparison.blocking)} blocking), {counts['fixed']} fixed,"
        f" {counts['unchanged']} unchanged"
    ]
    for row in comparison.rows:
        if row.state is State.UNCHANGED:
            continue
        at = revisions if row.state is State.NEW else (baseline_revisions or {})
        f = row.finding
        text = (
            f"  {row.state:<5} {f.identity[:12]} {f.rule} ({f.level}) {location(row, at)}:"
            f" {f.message}"
        )
        if row.state is State.NEW:
            text += " [blocks]" if row.blocks else f" [{row.action}]"
        if row.triage is not None:
            text += f" [{row.triage.state} by {row.triage.by}: {row.triage.reason}]"
        if row.blamed:
            b = row.blamed
            text += f" [introduced by {b['tree']} {b['commit'][:12]} {b['author']}: {b['subject']}]"
        out.append(text)
    return out
