"""A flight's metrics judged against its baseline's: per (job, step, metric, host class), every
run of the flight (and of its retests) against every run of the baseline flight on the same host
class, with `labgate.perf.compare`. Pure: stored metrics in, `MetricVerdict` values out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from labgate.model import PerfSettings
from labgate.perf.compare import Comparison, Difference, compare
from labgate.perf.metrics import StoredMetric
from labgate.perf.ranks import median


@dataclass(frozen=True)
class MetricVerdict:
    """One metric of one job's step on one host class. ``comparison`` is None when there is
    nothing to compare with (``note`` says why: no baseline value on this host class, or a
    baseline median of 0)."""

    job: str
    step: str
    metric: str
    host_class: str
    unit: str
    lower_is_better: bool
    baseline: tuple[float, ...]
    current: tuple[float, ...]
    settings: PerfSettings
    comparison: Comparison | None
    note: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.job, self.step, self.metric, self.host_class)

    @property
    def word(self) -> str:
        """``regression``, ``improvement``, ``same``, ``unknown`` or ``no-baseline``."""
        c = self.comparison
        if c is None:
            return "no-baseline"
        if c.regressed:
            return "regression"
        if c.improved:
            return "improvement"
        return "same" if c.difference is Difference.SAME else "unknown"

    @property
    def blocking(self) -> bool:
        """A regression where lab.toml says ``block = true``."""
        return self.word == "regression" and self.settings.block

    @property
    def extra_repeats(self) -> int:
        """More runs that would decide an unknown answer (0: decided, or no room left)."""
        c = self.comparison
        return c.extra_repeats if c is not None and c.difference is Difference.UNKNOWN else 0

    def to_json(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "job": self.job,
            "step": self.step,
            "metric": self.metric,
            "host_class": self.host_class,
            "unit": self.unit,
            "direction": "lower-is-better" if self.lower_is_better else "higher-is-better",
            "verdict": self.word,
            "blocking": self.blocking,
            "baseline": list(self.baseline),
            "current": list(self.current),
            "baseline_median": median(self.baseline) if self.baseline else None,
            "current_median": median(self.current),
            "change": c.change if c else None,
            "change_low": c.change_low if c else None,
            "change_high": c.change_high if c else None,
            "p_value": c.p_value if c else None,
            "extra_repeats": self.extra_repeats,
            "min_change": self.settings.min_change,
            "note": self.note,
        }


def judge_metrics(
    current: Sequence[StoredMetric],
    baseline: Sequence[StoredMetric],
    settings: Callable[[str, str], PerfSettings],
) -> tuple[MetricVerdict, ...]:
    """Every (job, step, metric, host class) of ``current``, in the order first measured, judged
    against ``baseline``'s values of the same key; ``settings(job, step)`` says how."""
    groups: dict[tuple[str, str, str, str], list[StoredMetric]] = {}
    for m in current:
        groups.setdefault(m.key, []).append(m)
    before: dict[tuple[str, str, str, str], list[float]] = {}
    for m in baseline:
        before.setdefault(m.key, []).append(m.metric.value)
    return tuple(
        _judge(key, found, tuple(before.get(key, ())), settings(key[0], key[1]))
        for key, found in groups.items()
    )


def _judge(
    key: tuple[str, str, str, str],
    found: list[StoredMetric],
    baseline: tuple[float, ...],
    settings: PerfSettings,
) -> MetricVerdict:
    job, step, metric, host_class = key
    last = found[-1].metric
    values = tuple(m.metric.value for m in found)
    comparison, note = None, None
    if not baseline:
        note = f"the baseline has no {metric} on host class {host_class}"
    elif median(baseline) == 0:
        note = "the baseline's median is 0: a relative change cannot be measured"
    else:
        comparison = compare(
            baseline,
            values,
            lower_is_better=last.lower_is_better,
            min_change=settings.min_change,
            alpha=settings.alpha,
            max_repeats=settings.max_repeats,
        )
    return MetricVerdict(
        job, step, metric, host_class, last.unit, last.lower_is_better,
        baseline, values, settings, comparison, note,
    )  # fmt: skip


def retest_jobs(verdicts: Sequence[MetricVerdict]) -> list[str]:
    """The jobs whose unknown metrics more runs would decide, in order."""
    return list(dict.fromkeys(v.job for v in verdicts if v.extra_repeats > 0))
