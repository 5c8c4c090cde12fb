"""Performance metrics: each run's values of a step, with the host and its host class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, func, select

from labgate.model import Blessing, FlightState
from labgate.perf.metrics import Metric, StoredMetric
from labgate.store import schema as t
from labgate.store.users import Viewer, visible
from labgate.store.values import Tables


@dataclass(frozen=True)
class StepMetrics:
    """What one attempt of a step measured, and where (``host_class``: see
    ``labgate.perf.metrics.host_class``)."""

    host: str
    host_class: str
    metrics: Sequence[Metric]


def replace_metrics(conn: Connection, step_id: int, measured: StepMetrics) -> None:
    """The step's metrics are ``measured``'s (an earlier attempt's are dropped), in the caller's
    transaction."""
    conn.execute(t.metric.delete().where(t.metric.c.step_id == step_id))
    rows = [
        {
            "step_id": step_id,
            "run": m.run,
            "name": m.name,
            "value": m.value,
            "unit": m.unit,
            "lower_is_better": m.lower_is_better,
            "host": measured.host,
            "host_class": measured.host_class,
        }
        for m in measured.metrics
    ]
    if rows:
        conn.execute(t.metric.insert(), rows)


def _metrics_query() -> Select[Any]:
    return (
        select(
            t.job.c.flight_id,
            t.job.c.name.label("job"),
            t.step.c.name.label("step"),
            t.metric,
        )
        .join(t.step, t.step.c.id == t.metric.c.step_id)
        .join(t.job, t.job.c.id == t.step.c.job_id)
        .order_by(t.job.c.flight_id, t.job.c.seq, t.step.c.seq, t.metric.c.run, t.metric.c.id)
    )


def _stored(row: Any) -> StoredMetric:
    return StoredMetric(
        flight=row.flight_id,
        job=row.job,
        step=row.step,
        host=row.host,
        host_class=row.host_class,
        metric=Metric(row.name, row.value, row.unit, bool(row.lower_is_better), row.run),
    )


class MetricTables(Tables):
    """Each run's metrics of a step."""

    def flight_metrics(self, flight_ids: Sequence[int]) -> list[StoredMetric]:
        """Every metric of these flights, by flight, job, step and run."""
        if not flight_ids:
            return []
        query = _metrics_query().where(t.job.c.flight_id.in_(list(flight_ids)))
        with self.engine.connect() as conn:
            return [_stored(r) for r in conn.execute(query)]

    def metric_history(
        self,
        branch: str,
        job: str,
        step: str,
        name: str,
        *,
        blessings: Sequence[Blessing] = (Blessing.REAL, Blessing.BISECT),
        limit: int = 500,
        viewer: Viewer | None = None,
    ) -> list[StoredMetric]:
        """One metric of one job's step over the branch's finished flights of these blessings
        (the branch's evidence), the newest ``limit`` flights, oldest first; with ``viewer``,
        only flights the viewer may see."""
        flights = (
            select(t.flight.c.id)
            .where(
                t.flight.c.branch == branch,
                t.flight.c.state == str(FlightState.FINISHED),
                t.flight.c.blessing.in_([str(b) for b in blessings]),
            )
            .join(t.job, t.job.c.flight_id == t.flight.c.id)
            .join(t.step, t.step.c.job_id == t.job.c.id)
            .join(t.metric, t.metric.c.step_id == t.step.c.id)
            .where(t.job.c.name == job, t.step.c.name == step, t.metric.c.name == name)
            .group_by(t.flight.c.id)
            .order_by(t.flight.c.id.desc())
            .limit(limit)
        )
        if viewer is not None:
            flights = flights.where(visible(viewer))
        query = _metrics_query().where(
            t.job.c.flight_id.in_(flights),
            t.job.c.name == job,
            t.step.c.name == step,
            t.metric.c.name == name,
        )
        with self.engine.connect() as conn:
            return [_stored(r) for r in conn.execute(query)]

    def branch_metrics(
        self,
        branch: str,
        *,
        viewer: Viewer,
        blessings: Sequence[Blessing] = (Blessing.REAL, Blessing.BISECT),
    ) -> list[MetricSummary]:
        """Each metric measured in the branch's finished flights of these blessings that the
        viewer may see: (job, step, metric), with how many flights measured it and the newest,
        ordered by job, step and metric."""
        query = (
            select(
                t.job.c.name.label("job"),
                t.step.c.name.label("step"),
                t.metric.c.name.label("metric"),
                func.count(func.distinct(t.flight.c.id)).label("flights"),
                func.max(t.flight.c.id).label("newest"),
            )
            .join(t.job, t.job.c.flight_id == t.flight.c.id)
            .join(t.step, t.step.c.job_id == t.job.c.id)
            .join(t.metric, t.metric.c.step_id == t.step.c.id)
            .where(
                t.flight.c.branch == branch,
                t.flight.c.state == str(FlightState.FINISHED),
                t.flight.c.blessing.in_([str(b) for b in blessings]),
                visible(viewer),
            )
            .group_by(t.job.c.name, t.step.c.name, t.metric.c.name)
            .order_by(t.job.c.name, t.step.c.name, t.metric.c.name)
        )
        with self.engine.connect() as conn:
            return [
                MetricSummary(r.job, r.step, r.metric, r.flights, r.newest)
                for r in conn.execute(query)
            ]


@dataclass(frozen=True)
class MetricSummary:
    """A metric of a branch: its job's step and name, the flights that measured it, the newest."""

    job: str
    step: str
    metric: str
    flights: int
    newest: int
