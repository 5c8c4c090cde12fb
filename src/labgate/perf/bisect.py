"""A bisection of a slowdown: each run's answer is the side (the baseline's values, good; the
regressed flight's, bad) whose values make the run's likelier, as ``labgate.bisect.lab`` reads
an item's outcome for a failure. A wrong answer is a flake to the engine, which learns the test's
flake rate from the runs: a noisy benchmark is a flaky test. `slowdown_answer` is pure;
`bisect_slowdown` runs the lab's bisection with it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

from labgate.bisect.engine import Answer
from labgate.bisect.lab import BisectionResult, LabBisection, item_outcome
from labgate.model import FlightResult, Outcome
from labgate.perf.verdict import MetricVerdict
from labgate.store import Store
from labgate.verdict import Classification, Kind

# Below this log-likelihood ratio a run is exactly between the sides (or they are alike).
_TIE = 1e-9


def slowdown_answer(
    values: Sequence[float], good: Sequence[float], bad: Sequence[float]
) -> Answer | None:
    """``bad`` when the run's ``values`` are likelier under the bad side's values than under the
    good side's, ``good`` the other way round; None when there is nothing to place (no value, a
    side without values) or the run is exactly between sides (or the sides are alike).

    Each side's distribution is its values smoothed by a Cauchy kernel (a density estimate, not
    a median, so that a run in a bimodal side's slow mode belongs to that side); the kernel's
    long tails make a value far from both sides, a spike, count little."""
    if not values or not good or not bad:
        return None
    # sides without spread (one value, or all alike): a kernel far narrower than their distance
    width = max(_bandwidth(good), _bandwidth(bad)) or (
        abs(statistics.median(bad) - statistics.median(good)) * 1e-3
    )
    if width == 0:
        return None
    ratio = sum(_log_density(v, bad, width) - _log_density(v, good, width) for v in values)
    if abs(ratio) < _TIE:
        return None
    return "bad" if ratio > 0 else "good"


def _bandwidth(side: Sequence[float]) -> float:
    """Silverman's rule with the smaller of the standard deviation and IQR / 1.34, so that two
    modes far apart do not widen the kernel of each."""
    if len(side) < 2:
        return 0.0
    quartiles = statistics.quantiles(side, n=4)
    spread = min(statistics.stdev(side), (quartiles[2] - quartiles[0]) / 1.34)
    if spread == 0:
        spread = statistics.stdev(side)
    return 0.9 * spread * len(side) ** -0.2


def _log_density(value: float, side: Sequence[float], width: float) -> float:
    total = sum(1 / (1 + ((value - x) / width) ** 2) for x in side)
    return math.log(total / (len(side) * width * math.pi))


def slowdown_item(slower: MetricVerdict, baseline: int) -> Classification:
    """The bisection's item for a performance regression: the job's step, with the metric and
    host class where a failure's test case would be (the bisection's record and report name it)."""
    return Classification(
        job=slower.job,
        step=slower.step,
        testcase=f"metric {slower.metric} on {slower.host_class}",
        kind=Kind.REGRESSION,
        outcome=Outcome.PASS,
        baseline_outcome=Outcome.PASS,
        reason=f"slower vs. {baseline}",
        flake_rate=0.0,
    )


def slowdown_classifier(
    store: Store, slower: MetricVerdict
) -> Callable[[FlightResult], Answer | None]:
    """A flight's answer for a slowdown: its values of the metric on the same host class placed
    between the sides (`slowdown_answer`); without a value, ``skip`` when the job ran to an end
    without measuring (a failed step, another host class), None when the lab did not answer."""

    def classify(flight: FlightResult) -> Answer | None:
        values = [m.metric.value for m in store.flight_metrics([flight.id]) if m.key == slower.key]
        if not values:
            ran = item_outcome(flight, slower.job, slower.step, None)
            return None if ran is None else "skip"
        return slowdown_answer(values, slower.baseline, slower.current)

    return classify


async def bisect_slowdown(
    bisection: LabBisection,
    branch: str,
    flight: FlightResult,
    baseline: FlightResult,
    slower: MetricVerdict,
) -> BisectionResult:
    """Find the commit that made ``slower``'s metric regress, with bisect flights of its job."""
    item = slowdown_item(slower, baseline.id)
    classify = slowdown_classifier(bisection.store, slower)
    return await bisection.run(branch, flight, baseline, [item], classify)
