"""The verdict of one metric: do the current runs of a step differ from the baseline's runs on the
same host class, by more than a size that matters?

Pure: two samples of plain numbers in (every repeat of the step, not their mean, so that bimodal
results are judged as such), a frozen `Comparison` out. Whoever runs steps and stores metrics
calls `compare` per metric and host class, buys the ``extra_repeats`` it asks for while the
answer is `Difference.UNKNOWN`, and blocks the push on a regression only where lab.toml says so.
A bisection classifies each run's sample against the two sides the same way.

How, and why it is stricter than Chromium's Pinpoint, which it follows:

- Two tests, as Pinpoint: Mann–Whitney U (a shift of location) and Kolmogorov–Smirnov (any
  change of shape: a new slow mode, a wider spread, which U misses). Pinpoint takes the smaller
  p-value as is; the chance that either of two tests fires by luck is up to twice each one's, so
  here the smaller p-value is doubled (Bonferroni) before it is compared with ``alpha``.
- A size, not only a p-value: the change is the Hodges–Lehmann shift (the median of all
  current-minus-baseline differences) relative to the baseline's median, with its confidence
  interval from the U statistic. ``DIFFERENT`` needs p <= alpha *and* a change of at least
  ``min_change``; a real but smaller change is not a regression.
- ``SAME`` is earned, not assumed: the 90% interval of the change must lie within
  ±``min_change`` (two one-sided tests at 5%, the usual test of equivalence). Few or noisy
  repeats leave the interval wide, and the answer is ``UNKNOWN`` with the number of extra repeats
  that would make the interval narrow enough to decide, up to ``max_repeats``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist

from labgate.perf.ranks import median, midranks

DEFAULT_ALPHA = 0.01
DEFAULT_MIN_CHANGE = 0.05
DEFAULT_MAX_REPEATS = 40
EQUIVALENCE_CONFIDENCE = 0.90
# Exact Kolmogorov–Smirnov p-values count lattice paths, O(n*m) big-integer additions.
_EXACT_KS_LIMIT = 250_000
# Extra runs asked for, at the least, when the runs so far cannot bound the change at all.
_FIRST_BUY = 5
_NORMAL = NormalDist()


class Difference(StrEnum):
    """The answer of `compare`."""

    DIFFERENT = "different"
    SAME = "same"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Comparison:
    """``change`` is the Hodges–Lehmann shift relative to the baseline's median (0.07: 7% higher),
    ``change_low``/``change_high`` its 90% confidence interval; ``p_value`` the doubled smaller
    of ``p_mann_whitney`` and ``p_kolmogorov_smirnov``; ``extra_repeats`` how many more runs of
    the current side to make when ``difference`` is UNKNOWN (0 once ``max_repeats`` is reached);
    ``worse`` whether the change goes the bad way for this metric."""

    difference: Difference
    change: float
    change_low: float
    change_high: float
    p_value: float
    p_mann_whitney: float
    p_kolmogorov_smirnov: float
    extra_repeats: int
    worse: bool

    @property
    def regressed(self) -> bool:
        return self.difference is Difference.DIFFERENT and self.worse

    @property
    def improved(self) -> bool:
        return self.difference is Difference.DIFFERENT and not self.worse


def compare(
    baseline: Sequence[float],
    current: Sequence[float],
    *,
    lower_is_better: bool = True,
    min_change: float = DEFAULT_MIN_CHANGE,
    alpha: float = DEFAULT_ALPHA,
    max_repeats: int = DEFAULT_MAX_REPEATS,
) -> Comparison:
    """Compare the current runs of a metric with the baseline's (every repeat, same host class).

    ``min_change`` is the smallest relative change that matters (0.05: 5%); ``max_repeats`` the
    most runs the current side may have, extra repeats included. Raises ValueError when a sample
    is empty or holds a value that is not a finite number, or the baseline's median is 0 (a
    relative change cannot be measured).
    """
    _check(baseline, "baseline")
    _check(current, "current")
    if min_change <= 0:
        raise ValueError(f"min_change must be positive, not {min_change}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    scale = abs(median(baseline))
    if scale == 0:
        raise ValueError("the baseline's median is 0: a relative change cannot be measured")
    p_u = mann_whitney_p(baseline, current)
    p_ks = kolmogorov_smirnov_p(baseline, current)
    p_value = min(1.0, 2 * min(p_u, p_ks))
    shift, low, high = hodges_lehmann(baseline, current, EQUIVALENCE_CONFIDENCE)
    change, change_low, change_high = shift / scale, low / scale, high / scale
    if p_value <= alpha and abs(change) >= min_change:
        difference = Difference.DIFFERENT
    elif -min_change < change_low and change_high < min_change:
        difference = Difference.SAME
    else:
        difference = Difference.UNKNOWN
    extra = 0
    if difference is Difference.UNKNOWN:
        extra = _extra_repeats(
            len(baseline),
            len(current),
            change,
            change_low,
            change_high,
            min_change,
            alpha,
            max_repeats,
        )
    return Comparison(
        difference=difference,
        change=change,
        change_low=change_low,
        change_high=change_high,
        p_value=p_value,
        p_mann_whitney=p_u,
        p_kolmogorov_smirnov=p_ks,
        extra_repeats=extra,
        worse=(change > 0) == lower_is_better and change != 0,
    )


def _check(values: Sequence[float], name: str) -> None:
    if not values:
        raise ValueError(f"the {name} sample is empty")
    for index, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(f"{name} value {index} is {value}, not a finite number")


def _extra_repeats(
    n_baseline: int,
    n_current: int,
    change: float,
    low: float,
    high: float,
    min_change: float,
    alpha: float,
    max_repeats: int,
) -> int:
    """Runs to add to the current side so that the interval, shrinking as sqrt(1/n + 1/m), would
    decide: to say SAME, the 90% interval narrower than the distance from the estimate to
    ``min_change``; to say DIFFERENT, the interval at the tests' level narrower than the
    distance to 0, and enough runs that fully separated samples could reach ``alpha`` at all.
    At least one, at most what ``max_repeats`` leaves; 0 when it leaves none."""
    room = max_repeats - n_current
    if room <= 0:
        return 0
    half = (high - low) / 2
    if not math.isfinite(half):
        # too few runs to bound the change at all: at least double them
        return min(room, max(n_current, _FIRST_BUY))
    fewest = n_current + 1
    if abs(change) >= min_change:
        target = abs(change)
        # the p-value is doubled, two-sided: the interval that must exclude 0 is 1 - alpha/2 wide
        half *= _NORMAL.inv_cdf(1 - alpha / 4) / _NORMAL.inv_cdf(0.5 + EQUIVALENCE_CONFIDENCE / 2)
        fewest = max(fewest, _fewest_runs(n_baseline, alpha))
    else:
        target = max(min_change - abs(change), min_change / 4)
    # (1/nb + 1/nc') must fall to (1/nb + 1/nc) * (target/half)**2
    wanted = (1 / n_baseline + 1 / n_current) * (target / half) ** 2 - 1 / n_baseline
    needed = math.ceil(1 / wanted) if wanted > 0 else max_repeats
    return min(room, max(needed, fewest) - n_current)


def _fewest_runs(n_baseline: int, alpha: float) -> int:
    """The fewest runs whose doubled smallest possible p-value (every run beyond every baseline
    run: 2 / C(n + m, n) for either test) is at most alpha."""
    n = 1
    while 4 / math.comb(n + n_baseline, n) > alpha and n < DEFAULT_MAX_REPEATS * 10:
        n += 1
    return n


def mann_whitney_p(first: Sequence[float], second: Sequence[float]) -> float:
    """Two-sided p-value of the Mann–Whitney U test (normal approximation with the tie and
    continuity corrections)."""
    n, m = len(first), len(second)
    ranks, ties = midranks([*first, *second])
    u = sum(ranks[:n]) - n * (n + 1) / 2
    total = n + m
    variance = n * m / 12 * ((total + 1) - ties / (total * (total - 1))) if total > 1 else 0
    if variance <= 0:
        return 1.0
    z = max(0.0, abs(u - n * m / 2) - 0.5) / math.sqrt(variance)
    return min(1.0, 2 * (1 - _NORMAL.cdf(z)))


def kolmogorov_smirnov_p(first: Sequence[float], second: Sequence[float]) -> float:
    """Two-sided p-value of the two-sample Kolmogorov–Smirnov test: exact (counting the orders of
    the two samples) up to ``_EXACT_KS_LIMIT`` pairs, Kolmogorov's limit beyond. With ties the
    exact value errs high, as the test does on discrete data."""
    n, m = len(first), len(second)
    distance = _ks_distance(first, second)  # max |F - G| * n * m, an integer
    if distance == 0:
        return 1.0
    if n * m > _EXACT_KS_LIMIT:
        root = math.sqrt(n * m / (n + m))
        lam = (root + 0.12 + 0.11 / root) * distance / (n * m)
        terms = (2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
        return min(1.0, max(0.0, sum(terms)))
    # paths from (0, 0) to (n, m) staying strictly inside |i*m - j*n| < distance
    # (row[j] holds the paths to (i - 1, j) until it is overwritten with those to (i, j))
    row = [1] + [0] * m
    for i in range(n + 1):
        for j in range(m + 1):
            if abs(i * m - j * n) >= distance:
                row[j] = 0
            elif j:
                row[j] += row[j - 1]
    return min(1.0, max(0.0, 1 - row[m] / math.comb(n + m, n)))


def _ks_distance(first: Sequence[float], second: Sequence[float]) -> int:
    n, m = len(first), len(second)
    events = sorted([(value, 0) for value in first] + [(value, 1) for value in second])
    seen = [0, 0]
    widest = 0
    for k, (value, side) in enumerate(events):
        seen[side] += 1
        if k + 1 == len(events) or events[k + 1][0] != value:
            widest = max(widest, abs(seen[0] * m - seen[1] * n))
    return widest


def hodges_lehmann(
    baseline: Sequence[float], current: Sequence[float], confidence: float
) -> tuple[float, float, float]:
    """The median of all current-minus-baseline differences, and its ``confidence`` interval from
    the U statistic's order statistics (infinite ends when the samples are too small)."""
    differences = sorted(c - b for b in baseline for c in current)
    count = len(differences)
    n, m = len(baseline), len(current)
    z = _NORMAL.inv_cdf(0.5 + confidence / 2)
    k = math.floor(count / 2 - z * math.sqrt(n * m * (n + m + 1) / 12))
    if k < 0:
        return median(differences), -math.inf, math.inf
    return median(differences), differences[k], differences[count - 1 - k]
