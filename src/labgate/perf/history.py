"""A metric's history: one point a flight (the median of the step's runs there) per host class,
oldest first, cut where it changed (`labgate.perf.changepoint`). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from labgate.perf.changepoint import ChangePoint, change_points
from labgate.perf.metrics import StoredMetric
from labgate.perf.ranks import median


@dataclass(frozen=True)
class Point:
    """One flight's value: the median of its ``runs`` values."""

    flight: int
    value: float
    runs: int


@dataclass(frozen=True)
class MetricSeries:
    """A metric's points on one host class and its change points (``index`` into ``points``)."""

    host_class: str
    unit: str
    points: tuple[Point, ...]
    changes: tuple[ChangePoint, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "host_class": self.host_class,
            "unit": self.unit,
            "flights": [
                {"flight": p.flight, "value": p.value, "runs": p.runs} for p in self.points
            ],
            "change_points": [
                {
                    "flight": self.points[c.index].flight,
                    "index": c.index,
                    "before": c.before,
                    "after": c.after,
                    "change": c.relative_change,
                }
                for c in self.changes
            ],
        }


def metric_series(stored: Sequence[StoredMetric], *, min_change: float = 0.0) -> list[MetricSeries]:
    """The series of each host class in ``stored`` (one metric of one job's step), classes in
    the order first seen, flights oldest first; change points of ``min_change`` and more."""
    by_class: dict[str, dict[int, list[float]]] = {}
    units: dict[str, str] = {}
    for m in sorted(stored, key=lambda m: m.flight):
        by_class.setdefault(m.host_class, {}).setdefault(m.flight, []).append(m.metric.value)
        units[m.host_class] = m.metric.unit
    series = []
    for host_class, flights in by_class.items():
        points = tuple(Point(f, median(v), len(v)) for f, v in flights.items())
        found = change_points([p.value for p in points], min_change=min_change)
        series.append(MetricSeries(host_class, units[host_class], points, found))
    return series


def history_json(
    branch: str, job: str, step: str, metric: str, series: Sequence[MetricSeries]
) -> dict[str, Any]:
    """A metric's history as `labgate perf history --json` prints it and the web's API gives
    it."""
    return {
        "branch": branch,
        "job": job,
        "step": step,
        "metric": metric,
        "series": [one.to_json() for one in series],
    }


def trend_path(branch: str, job: str, step: str, metric: str) -> str:
    """The dashboard's trend page of a metric (``/perf/BRANCH/JOB/STEP/METRIC``, each part
    quoted; a metric's name may hold ``/``, which stays)."""
    parts = (quote(branch, safe=""), quote(job, safe=""), quote(step, safe=""), quote(metric))
    return "/perf/" + "/".join(parts)
