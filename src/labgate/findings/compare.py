"""A flight's findings against its baseline's: which are new, which unchanged, which fixed.

Pure. Findings are compared within one job's step. Each is matched to at most one of the
baseline's, in passes from the most exact key to the loosest, each pass over what the earlier ones
left: (file, identity, snippet key), (file, identity), (file, snippet key), (identity, snippet
key) in any file, then (identity) in any file. So a finding whose lines shifted keeps its
identity and matches in the first pass; one whose function was renamed, or whose function a tool's
fingerprint hashes was edited elsewhere, matches on its snippet; one whose file was renamed
matches in the last passes. Within a key, findings pair in the order of their lines, so of two
alike findings the one left unmatched is the one nearest the end.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from labgate.findings.model import Finding, Level, Triage

__all__ = ["Comparison", "Policy", "Row", "State", "compare"]


class State(StrEnum):
    NEW = "new"
    UNCHANGED = "unchanged"
    FIXED = "fixed"


class Action(StrEnum):
    """What a new finding does to the push: ``block`` it, ``report`` it, or ``ignore`` it."""

    BLOCK = "block"
    REPORT = "report"
    IGNORE = "ignore"


@dataclass(frozen=True)
class Policy:
    """What new findings do: by rule (``rules``), else by level (``block`` lists the levels that
    block; the others are reported)."""

    block: frozenset[Level] = frozenset({Level.ERROR})
    rules: Mapping[str, Action] = field(default_factory=dict)

    def action(self, finding: Finding) -> Action:
        given = self.rules.get(finding.rule)
        if given is not None:
            return given
        return Action.BLOCK if finding.level in self.block else Action.REPORT


@dataclass(frozen=True)
class Row:
    """One finding's line in a comparison. ``finding`` is the flight's (the baseline's for a
    fixed one); ``before`` the baseline finding it matched (unchanged ones)."""

    state: State
    finding: Finding
    before: Finding | None = None
    triage: Triage | None = None
    action: Action = Action.REPORT
    blamed: Mapping[str, str] | None = None

    @property
    def blocks(self) -> bool:
        return self.state is State.NEW and self.triage is None and self.action is Action.BLOCK

    def to_json(self) -> dict[str, Any]:
        return {
            **self.finding.to_json(),
            "state": str(self.state),
            "action": str(self.action) if self.state is State.NEW else None,
            "blocks": self.blocks,
            "triage": self.triage.to_json() if self.triage else None,
            "blamed": dict(self.blamed) if self.blamed else None,
        }


@dataclass(frozen=True)
class Comparison:
    """Every finding of a flight and of its baseline, each with its state."""

    flight: int
    baseline: int | None
    rows: tuple[Row, ...]

    def of(self, state: State | str) -> list[Row]:
        """The rows in ``state`` (``new``, ``unchanged`` or ``fixed``)."""
        wanted = State(state)
        return [r for r in self.rows if r.state is wanted]

    @property
    def blocking(self) -> list[Row]:
        return [r for r in self.rows if r.blocks]

    def counts(self) -> dict[str, int]:
        return {str(s): len(self.of(s)) for s in State}

    def to_json(self) -> dict[str, Any]:
        return {
            "flight": self.flight,
            "baseline": self.baseline,
            "counts": self.counts(),
            "blocking": len(self.blocking),
            "findings": [r.to_json() for r in self.rows],
        }


Key = Callable[[Finding], Hashable]

PASSES: tuple[Key, ...] = (
    lambda f: (f.path, f.identity, f.snippet_key),
    lambda f: (f.path, f.identity),
    lambda f: (f.path, f.snippet_key),
    lambda f: (f.identity, f.snippet_key),
    lambda f: f.identity,
)


def match(
    current: Sequence[Finding], before: Sequence[Finding]
) -> tuple[list[tuple[Finding, Finding]], list[Finding], list[Finding]]:
    """Pairs (current, before) of the same finding, then the current ones unmatched (new) and
    the earlier ones unmatched (fixed); all within one job's step, each list in file and line
    order (the pairs by the current finding's place)."""
    pairs: list[tuple[Finding, Finding]] = []
    left_now = sorted(current, key=_place)
    left_before = sorted(before, key=_place)
    passes_matched = 0
    for key in PASSES:
        waiting: dict[Hashable, deque[Finding]] = defaultdict(deque)
        for f in left_before:
            waiting[key(f)].append(f)
        unmatched = []
        matched: set[int] = set()
        for f in left_now:
            queue = waiting.get(key(f))
            if queue:
                was = queue.popleft()
                pairs.append((f, was))
                matched.add(id(was))
            else:
                unmatched.append(f)
        passes_matched += bool(matched)
        left_now = unmatched
        left_before = [f for f in left_before if id(f) not in matched]
        if not left_now or not left_before:
            break
    if passes_matched > 1:  # each pass's pairs are in order; together they are not
        pairs.sort(key=lambda pair: _place(pair[0]))
    return pairs, left_now, left_before


def _place(f: Finding) -> tuple[str, int, int]:
    return (f.path, f.line or 0, f.column or 0)


def compare(
    flight: int,
    current: Iterable[Finding],
    baseline: int | None,
    before: Iterable[Finding],
    *,
    policy: Policy | None = None,
    triage: Mapping[str, Triage] | None = None,
    blamed: Mapping[str, Mapping[str, str]] | None = None,
    analysed_before: Collection[tuple[str, str]] | None = None,
) -> Comparison:
    """Compare a flight's findings with its baseline's (none: every finding is new).

    ``triage`` (by identity) applies to a finding through its own identity or that of the
    baseline finding it matched (so a triage survives the identity changing); ``blamed`` gives
    the commit blamed for a new finding, by identity. ``analysed_before`` names the (job, step)s
    the baseline ran (None: all): a step it did not run (an analysis just added to the lab) has
    nothing to compare with, so its findings are new but reported, never blocking."""
    policy, triage, blamed = policy or Policy(), triage or {}, blamed or {}
    by_step_now: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    by_step_before: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for f in current:
        by_step_now[(f.job, f.step)].append(f)
    for f in before:
        by_step_before[(f.job, f.step)].append(f)
    rows: dict[State, list[Row]] = {State.NEW: [], State.FIXED: [], State.UNCHANGED: []}
    for step in sorted(set(by_step_now) | set(by_step_before)):
        pairs, new, fixed = match(by_step_now.get(step, []), by_step_before.get(step, []))
        first_time = analysed_before is not None and step not in analysed_before
        for now, was in pairs:
            said = triage.get(now.identity) or triage.get(was.identity)
            rows[State.UNCHANGED].append(Row(State.UNCHANGED, now, was, said, policy.action(now)))
        for f in new:
            action = policy.action(f)
            if first_time and action is Action.BLOCK:
                action = Action.REPORT
            rows[State.NEW].append(
                Row(State.NEW, f, None, triage.get(f.identity), action, blamed.get(f.identity))
            )
        for f in fixed:
            said = triage.get(f.identity)
            rows[State.FIXED].append(Row(State.FIXED, f, None, said, policy.action(f)))
    # new first, then fixed, then unchanged; each by job, step, file and line
    return Comparison(flight, baseline, (*rows[State.NEW], *rows[State.FIXED],
                                         *rows[State.UNCHANGED]))  # fmt: skip
