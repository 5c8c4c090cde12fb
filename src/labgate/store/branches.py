"""A branch's state: its baseline, the gate's lease, pushes and verdicts."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from labgate.model import (
    PushRecord,
)
from labgate.store import schema as t
from labgate.store.leases import GATE
from labgate.store.users import Viewer, seen_by
from labgate.store.values import (
    Tables,
    iso,
    now,
)


class BranchTables(Tables):
    """Baselines, the gate's lease, push decisions, verdicts."""

    # --- the push gate ----------------------------------------------------------------------

    def baseline(self, branch: str) -> int | None:
        """The flight the branch's new flights are compared with (the last one pushed)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(t.branch_state.c.baseline_flight_id).where(t.branch_state.c.branch == branch)
            ).scalar()

    def _ensure_branch_state(self, conn: Connection, branch: str) -> None:
        exists = conn.execute(
            select(t.branch_state.c.branch).where(t.branch_state.c.branch == branch)
        ).first()
        if exists is None:
            try:
                with conn.begin_nested():
                    conn.execute(t.branch_state.insert().values(branch=branch, updated=now()))
            except IntegrityError:  # another controller inserted it first: fine
                pass

    def set_baseline(self, branch: str, flight_id: int) -> None:
        with self.engine.begin() as conn:
            self._set_baseline(conn, branch, flight_id)

    def _set_baseline(self, conn: Connection, branch: str, flight_id: int) -> None:
        self._ensure_branch_state(conn, branch)
        conn.execute(
            update(t.branch_state)
            .where(t.branch_state.c.branch == branch)
            .values(baseline_flight_id=flight_id, updated=now())
        )

    def acquire_gate(self, branch: str, owner: str, lease_s: float) -> bool:
        """Take (or renew) the branch's gate lease for ``owner``; False if another live owner
        holds it. Two gate processes on one branch never run it at once."""
        stamp = now()
        with self.engine.begin() as conn:
            self._ensure_branch_state(conn, branch)
            result = conn.execute(
                update(t.branch_state)
                .where(t.branch_state.c.branch == branch, GATE.free(owner, stamp))
                .values(GATE.take(owner, lease_s, stamp))
            )
            return result.rowcount == 1

    def release_gate(self, branch: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.branch_state)
                .where(t.branch_state.c.branch == branch, GATE.held_by(owner))
                .values(GATE.cleared())
            )

    def record_push(
        self,
        branch: str,
        flight_id: int,
        tree: str,
        sha: str,
        previous_sha: str | None,
        status: str,
        message: str | None = None,
    ) -> int:
        """Record a push decision; a successful push makes the flight the branch's baseline in
        the same transaction."""
        with self.engine.begin() as conn:
            push_id = conn.execute(
                t.push.insert().values(
                    branch=branch,
                    flight_id=flight_id,
                    tree=tree,
                    sha=sha,
                    previous_sha=previous_sha,
                    status=status,
                    message=message,
                    created=now(),
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            if status == "pushed":
                self._set_baseline(conn, branch, flight_id)
        return int(push_id)

    def pushes(
        self,
        branch: str | None = None,
        *,
        flight_id: int | None = None,
        limit: int = 50,
        before: int | None = None,
        viewer: Viewer | None = None,
    ) -> list[PushRecord]:
        """Push decisions, newest first, of a branch or of one flight (``before``: of ids below
        it); with ``viewer``, only those of flights the viewer may see."""
        query = seen_by(select(t.push), t.push.c.flight_id, viewer)
        query = query.order_by(t.push.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(t.push.c.id < before)
        if branch is not None:
            query = query.where(t.push.c.branch == branch)
        if flight_id is not None:
            query = query.where(t.push.c.flight_id == flight_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [push_from_row(r) for r in rows]

    def record_verdict(
        self, flight_id: int, baseline_flight_id: int | None, push_allowed: bool, data: Any
    ) -> None:
        """Store the verdict of a flight (its JSON form), replacing an earlier one."""
        with self.engine.begin() as conn:
            conn.execute(t.verdict.delete().where(t.verdict.c.flight_id == flight_id))
            conn.execute(
                t.verdict.insert().values(
                    flight_id=flight_id,
                    baseline_flight_id=baseline_flight_id,
                    push_allowed=push_allowed,
                    data=json.dumps(data),
                    created=now(),
                    regressions=regressions_of(data),
                )
            )

    def verdict(self, flight_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.verdict).where(t.verdict.c.flight_id == flight_id)).first()
        if row is None:
            return None
        return {
            "flight": row.flight_id,
            "baseline_flight": row.baseline_flight_id,
            "push_allowed": bool(row.push_allowed),
            "data": json.loads(row.data),
        }


def regressions_of(data: Any) -> int:
    """How many regressions stop a verdict's push: its blocking items and blocking slowdowns
    (``perf``)."""
    if not isinstance(data, dict):
        return 0
    perf = data.get("perf") or []
    slower = sum(1 for v in perf if isinstance(v, dict) and v.get("blocking"))
    return len(data.get("blocking") or []) + slower


def push_from_row(r: Any) -> PushRecord:
    """A stored push decision (a row of ``push``)."""
    return PushRecord(
        r.id,
        r.branch,
        r.flight_id,
        r.tree,
        r.sha,
        r.previous_sha,
        r.status,
        r.message,
        iso(r.created) or "",
    )
