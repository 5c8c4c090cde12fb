"""Static analysis findings: per flight's step, their triage by identity, the commits blamed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, true

from labgate.findings.model import Finding, Level, Triage, TriageState
from labgate.model import Blessing, FlightState
from labgate.store import schema as t
from labgate.store.users import Viewer, visible
from labgate.store.values import Tables, iso, now


class FindingTables(Tables):
    """A step's SARIF findings, triage, blame, per-rule trends."""

    def record_findings(self, step_id: int, findings: Iterable[Finding]) -> None:
        """Store a step's findings, replacing any an earlier attempt left (one transaction)."""
        with self.engine.begin() as conn:
            flight_id = conn.execute(
                select(t.job.c.flight_id)
                .join(t.step, t.step.c.job_id == t.job.c.id)
                .where(t.step.c.id == step_id)
            ).scalar_one()
            conn.execute(t.finding.delete().where(t.finding.c.step_id == step_id))
            rows = [_row(flight_id, step_id, f) for f in findings]
            if rows:
                conn.execute(t.finding.insert(), rows)

    def flight_findings(self, flight_id: int) -> list[Finding]:
        """Every finding stored for a flight, in the order its steps recorded them."""
        query = (
            select(*(t.finding.c[name] for name in _COLUMNS))
            .where(t.finding.c.flight_id == flight_id)
            .order_by(t.finding.c.id)
        )
        with self.engine.connect() as conn:
            return [_finding(r) for r in conn.execute(query)]

    def count_findings(self, flight_id: int) -> int:
        """How many findings a flight's steps recorded."""
        query = select(func.count()).where(t.finding.c.flight_id == flight_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def findings_baseline(self, flight_id: int) -> int | None:
        """The flight a flight's findings are compared with: its verdict's baseline; else the
        branch's baseline when it is an earlier flight; else the branch's newest earlier
        finished ``real`` flight that ran an analysis step (``results = "sarif:..."``) or has
        findings."""
        with self.engine.connect() as conn:
            given = conn.execute(
                select(t.verdict.c.baseline_flight_id).where(t.verdict.c.flight_id == flight_id)
            ).scalar()
            if given is not None:
                return int(given)
            branch = conn.execute(
                select(t.flight.c.branch).where(t.flight.c.id == flight_id)
            ).scalar()
            base = conn.execute(
                select(t.branch_state.c.baseline_flight_id).where(t.branch_state.c.branch == branch)
            ).scalar()
            if base is not None and base < flight_id:
                return int(base)
            analysed = (
                select(t.step.c.id)
                .join(t.job, t.job.c.id == t.step.c.job_id)
                .where(t.job.c.flight_id == t.flight.c.id, t.step.c.results.like("sarif:%"))
            )
            has_findings = select(t.finding.c.id).where(t.finding.c.flight_id == t.flight.c.id)
            # newest first, stopping at the first that qualifies (never a scan of every finding)
            earlier = conn.execute(
                select(t.flight.c.id)
                .where(
                    t.flight.c.branch == branch,
                    t.flight.c.id < flight_id,
                    t.flight.c.blessing == str(Blessing.REAL),
                    t.flight.c.state == str(FlightState.FINISHED),
                    analysed.exists() | has_findings.exists(),
                )
                .order_by(t.flight.c.id.desc())
                .limit(1)
            ).scalar()
            return int(earlier) if earlier is not None else None

    def identities_like(self, prefix: str, limit: int = 10) -> list[str]:
        """Stored finding identities starting with ``prefix`` (at most ``limit``)."""
        query = (
            select(t.finding.c.identity)
            .where(t.finding.c.identity.startswith(prefix, autoescape=True))
            .distinct()
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    # --- triage -----------------------------------------------------------------------------

    def set_triage(self, identity: str, state: TriageState, reason: str, by: str) -> Triage:
        """Say a finding (every finding of this identity, in every revision) is not a defect
        or is meant so; replaces what was said before."""
        at = now()
        with self.engine.begin() as conn:
            conn.execute(t.finding_triage.delete().where(t.finding_triage.c.identity == identity))
            conn.execute(
                t.finding_triage.insert().values(
                    identity=identity, state=str(state), reason=reason, by=by, at=at
                )
            )
        return Triage(identity, state, reason, by, iso(at) or "")

    def clear_triage(self, identity: str) -> bool:
        """Forget a finding's triage; False when it had none."""
        with self.engine.begin() as conn:
            gone = conn.execute(
                t.finding_triage.delete().where(t.finding_triage.c.identity == identity)
            )
        return bool(gone.rowcount)

    def triage_of(self, identities: Iterable[str]) -> dict[str, Triage]:
        """The triage given to any of these identities."""
        wanted = set(identities)
        query = select(t.finding_triage)
        if len(wanted) <= 500:
            query = query.where(t.finding_triage.c.identity.in_(sorted(wanted)))
        # else: every triage (people triage far fewer findings than a flight has), kept below
        with self.engine.connect() as conn:
            return {
                r.identity: Triage(
                    r.identity, TriageState(r.state), r.reason, r.by, iso(r.at) or ""
                )
                for r in conn.execute(query)
                if r.identity in wanted
            }

    def carry_triage(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Give each new identity the triage of the old one it was matched to (a finding whose
        identity changed keeps what people said of it), unless it has its own."""
        pairs = [(new, old) for new, old in pairs if new != old]
        if not pairs:
            return
        known = self.triage_of([old for _, old in pairs] + [new for new, _ in pairs])
        with self.engine.begin() as conn:
            for new, old in pairs:
                if new in known or old not in known:
                    continue
                said = known[old]
                conn.execute(
                    t.finding_triage.insert().values(
                        identity=new, state=str(said.state), reason=said.reason, by=said.by,
                        at=now(),
                    )
                )  # fmt: skip
                known[new] = said

    # --- blame ------------------------------------------------------------------------------

    def record_blame(
        self, flight_id: int, identity: str, culprit: Mapping[str, str], confidence: float,
        flights: Sequence[int],
    ) -> None:  # fmt: skip
        """The commit a flight's new finding was introduced by (``culprit``: tree, commit,
        author, email, subject), found by a bisection with these flights."""
        with self.engine.begin() as conn:
            conn.execute(
                t.finding_blame.delete().where(
                    t.finding_blame.c.flight_id == flight_id,
                    t.finding_blame.c.identity == identity,
                )
            )
            conn.execute(
                t.finding_blame.insert().values(
                    flight_id=flight_id,
                    identity=identity,
                    **{k: culprit[k] for k in ("tree", "commit", "author", "email", "subject")},
                    confidence=confidence,
                    flights=json.dumps(list(flights)),
                    created=now(),
                )
            )

    def blames(self, flight_id: int) -> dict[str, dict[str, str]]:
        """The commit blamed for each new finding of a flight (by identity)."""
        query = select(t.finding_blame).where(t.finding_blame.c.flight_id == flight_id)
        with self.engine.connect() as conn:
            return {
                r.identity: {
                    "tree": r.tree,
                    "commit": r.commit,
                    "author": r.author,
                    "email": r.email,
                    "subject": r.subject,
                    "confidence": f"{r.confidence:.3f}",
                }
                for r in conn.execute(query)
            }

    # --- trend ------------------------------------------------------------------------------

    def rule_counts(
        self, branch: str, limit: int = 50, *, viewer: Viewer | None = None
    ) -> list[tuple[int, str, int]]:
        """(flight, rule, findings) for the branch's newest ``limit`` real flights that have
        findings (with ``viewer``, those it may see), oldest first: each rule's count over
        history."""
        flights = (
            select(t.finding.c.flight_id)
            .join(t.flight, t.flight.c.id == t.finding.c.flight_id)
            .where(
                t.flight.c.branch == branch,
                t.flight.c.blessing == str(Blessing.REAL),
                visible(viewer) if viewer is not None else true(),
            )
            .group_by(t.finding.c.flight_id)
            .order_by(t.finding.c.flight_id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            ids = list(conn.execute(flights).scalars())
            if not ids:
                return []
            rows = conn.execute(
                select(t.finding.c.flight_id, t.finding.c.rule, func.count())
                .where(t.finding.c.flight_id.in_(ids))
                .group_by(t.finding.c.flight_id, t.finding.c.rule)
                .order_by(t.finding.c.flight_id, t.finding.c.rule)
            )
            return [(int(f), str(rule), int(n)) for f, rule, n in rows]


def _row(flight_id: int, step_id: int, f: Finding) -> dict[str, Any]:
    return {
        "flight_id": flight_id,
        "step_id": step_id,
        "job": f.job,
        "step": f.step,
        "tool": f.tool,
        "rule": f.rule,
        "level": str(f.level),
        "message": f.message,
        "path": f.path,
        "line": f.line,
        "col": f.column,
        "function": f.function,
        "identity": f.identity,
        "snippet_key": f.snippet_key,
    }


_LEVELS = {str(level): level for level in Level}
_COLUMNS = ("job", "step", "rule", "level", "message", "path", "line", "col", "function",
            "identity", "snippet_key", "tool")  # fmt: skip
_FIELDS = tuple("column" if c == "col" else c for c in _COLUMNS)  # Finding's, in that order


def _finding(r: Any) -> Finding:
    # Rows of our own table need no checks: filling the frozen value's fields directly is about
    # five times quicker than its __init__, which counts when a flight has 10,000 findings.
    finding = object.__new__(Finding)
    finding.__dict__.update(zip(_FIELDS, r, strict=True))
    finding.__dict__["level"] = _LEVELS[r.level]
    return finding
