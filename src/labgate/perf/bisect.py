"""A bisection of a slowdown: each run's answer is where its metric falls between the two sides
(the baseline's values, good; the regressed flight's, bad), as ``labgate.bisect.lab`` reads an
item's outcome for a failure. `slowdown_answer` is pure; `bisect_slowdown` runs the lab's
bisection with it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from labgate.bisect.engine import Answer
from labgate.bisect.lab import BisectionResult, LabBisection, item_outcome
from labgate.model import FlightResult, Outcome
from labgate.perf.ranks import median
from labgate.perf.verdict import MetricVerdict
from labgate.store import Store
from labgate.verdict import Classification, Kind

# A run whose median lies in the middle third between the sides' medians says nothing: the loop
# runs it again rather than guess.
DECIDED = 1 / 3


def slowdown_answer(
    values: Sequence[float], good: Sequence[float], bad: Sequence[float]
) -> Answer | None:
    """``bad`` when the run's median is within the third of the way nearest the bad side's
    median, ``good`` within the third nearest the good side's (beyond either side counts as that
    side), None in between or when there is nothing to place (no value, both sides alike)."""
    if not values or not good or not bad:
        return None
    low, high = median(good), median(bad)
    if low == high:
        return None
    where = (median(values) - low) / (high - low)
    if where >= 1 - DECIDED:
        return "bad"
    if where <= DECIDED:
        return "good"
    return None


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
