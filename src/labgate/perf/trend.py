"""The change points a flight's metrics newly show, for the gate's report: each (job, step,
metric, host class) measured by the flight whose history on the branch, with this flight, has a
change point that the history without it did not have. A change point needs ``min_segment``
flights after it, so it is found some flights after the flight that brought the change; the
report names that flight and links to the metric's trend page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from labgate.config import Lab
from labgate.perf.history import metric_series, trend_path
from labgate.store import Store
from labgate.store.users import ANONYMOUS, Users, Viewer


@dataclass(frozen=True)
class FoundChange:
    """A change point of a metric's history on one host class, first found with a flight."""

    job: str
    step: str
    metric: str
    host_class: str
    flight: int
    """The first flight after the change."""
    change: float
    before: float
    after: float
    unit: str
    path: str
    """The metric's trend page on the dashboard."""

    def line(self, web_url: str | None) -> str:
        """``perf bench time [equiv-small]  +29.4% at flight 8 (102 -> 132 s)  URL``; the
        trend page's path alone without ``[web] url``."""
        link = f"{web_url.rstrip('/')}{self.path}" if web_url else self.path
        return (
            f"{self.job} {self.step} {self.metric} [{self.host_class}]  {self.change:+.1%} at"
            f" flight {self.flight} ({self.before:g} -> {self.after:g} {self.unit})  {link}"
        )


def found_changes(store: Store, lab: Lab, branch: str, flight_id: int) -> list[FoundChange]:
    """The change points that the flight's metrics add to their histories on ``branch``, as
    seen by whoever may read the flight's report (the public, or the flight's embargo group)."""
    embargo = Users(store.engine).embargo(flight_id)
    viewer = Viewer(groups=frozenset({embargo.group})) if embargo else ANONYMOUS
    keys = dict.fromkeys((m.job, m.step, m.metric.name) for m in store.flight_metrics([flight_id]))
    found: list[FoundChange] = []
    for job, step, metric in keys:
        stored = store.metric_history(branch, job, step, metric, viewer=viewer)
        if all(m.flight != flight_id for m in stored):
            continue  # not in the branch's evidence (another blessing, not finished)
        min_change = lab.perf_for(job, step).min_change
        before = {
            (s.host_class, s.points[c.index].flight)
            for s in metric_series(
                [m for m in stored if m.flight != flight_id], min_change=min_change
            )
            for c in s.changes
        }
        for series in metric_series(stored, min_change=min_change):
            if all(p.flight != flight_id for p in series.points):
                continue
            for c in series.changes:
                first = series.points[c.index].flight
                if (series.host_class, first) not in before:
                    found.append(
                        FoundChange(
                            job,
                            step,
                            metric,
                            series.host_class,
                            first,
                            c.relative_change,
                            c.before,
                            c.after,
                            series.unit,
                            trend_path(branch, job, step, metric),
                        )
                    )
    return found


def found_changes_lines(changes: Sequence[FoundChange], web_url: str | None) -> list[str]:
    """The report's section (none when there is nothing to say)."""
    if not changes:
        return []
    title = "Performance change points found with this flight (the trend pages):"
    return [title, *(f" {c.line(web_url)}" for c in changes), ""]
