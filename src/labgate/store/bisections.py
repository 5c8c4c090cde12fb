"""Bisections: their state, culprit and tested revision graph."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, update

from labgate.model import (
    BisectionRecord,
)
from labgate.store import schema as t
from labgate.store.users import Viewer, seen_by
from labgate.store.values import (
    StoreError,
    Tables,
    iso,
    now,
)


class BisectionTables(Tables):
    """Bisections of a branch's regressions."""

    # --- bisections -------------------------------------------------------------------------

    def create_bisection(
        self,
        branch: str,
        job: str,
        step: str | None,
        testcase: str | None,
        flight_id: int,
        baseline_flight_id: int | None,
    ) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    t.bisection.insert().values(
                        branch=branch,
                        job=job,
                        step=step,
                        testcase=testcase,
                        flight_id=flight_id,
                        baseline_flight_id=baseline_flight_id,
                        state="running",
                        executions=0,
                        rounds=0,
                        flights="[]",
                        graph=json.dumps({"nodes": [], "edges": []}),
                        created=now(),
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )

    def update_bisection(
        self,
        bisection_id: int,
        *,
        state: str,
        executions: int,
        rounds: int,
        flights: Sequence[int],
        graph: Mapping[str, Any],
        culprit_tree: str | None = None,
        culprit_commit: str | None = None,
        confidence: float | None = None,
        reason: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "state": state,
            "executions": executions,
            "rounds": rounds,
            "flights": json.dumps(list(flights)),
            "graph": json.dumps(graph),
            "culprit_tree": culprit_tree,
            "culprit_commit": culprit_commit,
            "confidence": confidence,
            "reason": reason,
        }
        if state != "running":
            values["finished"] = now()
        with self.engine.begin() as conn:
            conn.execute(
                update(t.bisection).where(t.bisection.c.id == bisection_id).values(**values)
            )

    def bisection(self, bisection_id: int, *, viewer: Viewer | None = None) -> BisectionRecord:
        """One bisection; StoreError when it does not exist or (with ``viewer``) the viewer
        may not see its flight: one message for both."""
        query = seen_by(select(t.bisection), t.bisection.c.flight_id, viewer)
        with self.engine.connect() as conn:
            row = conn.execute(query.where(t.bisection.c.id == bisection_id)).first()
        if row is None:
            raise StoreError(f"bisection {bisection_id} does not exist in this lab's store")
        return bisection_from_row(row)

    def bisections(
        self,
        branch: str | None = None,
        *,
        flight_id: int | None = None,
        limit: int = 50,
        before: int | None = None,
        viewer: Viewer | None = None,
    ) -> list[BisectionRecord]:
        """Bisections, newest first, of a branch or of one flight (``before``: of ids below
        it); with ``viewer``, only those of flights the viewer may see."""
        query = seen_by(select(t.bisection), t.bisection.c.flight_id, viewer)
        query = query.order_by(t.bisection.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(t.bisection.c.id < before)
        if branch is not None:
            query = query.where(t.bisection.c.branch == branch)
        if flight_id is not None:
            query = query.where(t.bisection.c.flight_id == flight_id)
        with self.engine.connect() as conn:
            return [bisection_from_row(r) for r in conn.execute(query)]


def bisection_from_row(row: Any) -> BisectionRecord:
    """A stored bisection (a row of ``bisection``)."""
    return BisectionRecord(
        id=row.id,
        branch=row.branch,
        job=row.job,
        step=row.step,
        testcase=row.testcase,
        flight_id=row.flight_id,
        baseline_flight_id=row.baseline_flight_id,
        state=row.state,
        culprit_tree=row.culprit_tree,
        culprit_commit=row.culprit_commit,
        confidence=row.confidence,
        executions=row.executions,
        rounds=row.rounds,
        reason=row.reason,
        flights=tuple(json.loads(row.flights)),
        graph=json.loads(row.graph),
        created=iso(row.created) or "",
        finished=iso(row.finished),
    )
