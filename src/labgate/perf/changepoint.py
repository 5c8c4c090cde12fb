"""Change points in a metric's history: where the values of later flights stopped looking like
those of earlier ones.

Pure: plain numbers in (one value a flight, oldest first: the median of a flight's repeats when a
step ran several times), frozen `ChangePoint` values out. Whoever stores metrics passes each
metric's history per host class and draws or reports what comes back.

How: first, single-flight spikes (a value far beyond the medians of the flights on both sides
of it, see _despiked) are left out of the search, replaced by their neighbours' median. Then
seeded binary segmentation (Kovács, Li, Bühlmann, Haubner, Munk, 2020) over a rank statistic.
Seeded intervals, at every scale from the whole series down to twice ``min_segment`` and at
evenly spaced places, are each scanned for their best split by the Wilcoxon rank-sum statistic
of left against right. The narrowest interval whose best split is significant (its p-value,
corrected for the choice of the split, below ``alpha``) gives a change point (narrowest over
threshold, Baranowski, Chen, Fryzlewicz, 2019), and each side is searched again with intervals
seeded afresh within it and those already scanned, cut to it. Then each change point is placed
again between its neighbours by the Huber loss, bent at the noise's scale (the spread of the
flight-to-flight differences, which steps barely move), and tested there; the weakest is
dropped until all stand, and a change of the median under that scale is not reported (found,
such a change is often placed more than a few flights off). When the noise has two modes (runs that
now and then take a slower path: see `labgate.perf.modes`), the search is run again on values
moved back to the major mode, each by its chance of being in the other judged against the
values around it, at a quarter of ``alpha``, and change points are placed by the likelihood of
the two modes instead; then once more with the modes fitted around the segments that search
found. There, a change of the moved values' median (the major mode's level) under 1.5 times the
spread around one mode is not reported, for the same reason. Why this shape:

- Ranks, not means: heavy tails, bimodal noise and single-flight spikes move a rank sum by a
  bounded amount, so a +30% outlier weighs no more than any value above the others, and the
  statistic has the same null distribution whatever the noise, so one ``alpha`` holds for all.
- Spikes left out: ranks bound a spike's weight but do not remove it; in a segment of ten
  flights one +30% flight costs a real change most of its evidence, and a run of spikes beside a
  change pulls its place to them.
- A minimum segment length: no change point leaves fewer than ``min_segment`` flights on either
  side, so one odd flight cannot become a segment of its own (the complaint about Otava).
- Two modes moved back to one: a rank sum bounds what a mode 8% slower costs but cannot undo
  it, and a 5% step moves the values of one mode among those of the other, so a test told where
  each change is finds only about 0.7 of such steps. Moved back, what is left is the narrow
  noise around one mode, where the same step is over three times its spread. Only series whose
  noise passes every test of two modes take this path (in logs and in the values' own scale,
  well apart, each common enough, switching along the series as independent flights do): on
  the bench's normal, heavy-tailed and spiky series, none. The smaller alpha pays for
  searching again; the moved values' own errors (a value between the modes moved half-way) are
  bounded by the ranks like any other.
- Short intervals at every position: a change reverted a few flights later is seen by an interval
  that covers only one of its two edges, where a split of the whole series sees a wash; the
  other edge, by an interval seeded within the side that the first split left.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labgate.perf.modes import Modes, find_modes, residuals, two_modes, unmixed
from labgate.perf.ranks import median, midranks, rank_sum_tail

DEFAULT_MIN_SEGMENT = 5
# The largest p-value of a split that is reported (see _p_split). Ranks do not see the noise, so
# this holds whatever the noise: on 1,000 series of 100 independent values, 2 false change points
# (bench/perf.py measures it). 0.002 rather than 0.005: false alarms beside real changes (a weak
# change placed 3 flights off) fall by a third, and by half in the worst noise, for up to 6 points
# of recall on 5% steps (bench/perf.py, 200 series a cell).
DEFAULT_ALPHA = 0.002
# A spike: a value off the medians of this many values on either side of it (so up to two
# spikes in a row are seen as such) by this many times the typical flight-to-flight difference,
# or this many times the noise (_noise_scale) if that is less.
_SPIKE_REACH = 5
_SPIKE_FACTOR = 2.5
_SPIKE_SCALE = 6.0
# One mode: change points are placed by the Huber loss bent at this many times the noise
# (_noise_scale; the usual bend, where the Huber centre of normal values is 95% as efficient
# as their mean), its centre found in this many rounds from the median; and a change of the
# median under this many times the noise is not reported: such a change is often placed more than 2
# flights off (7 of the 30 2% steps found in the bench's 2.5% normal noise, seeds 2, 4, 5), and
# false alarms far from any change are that small. Pooled F1 on changes >= 5% of normal / spiky
# noise, one value a flight, seeds 2, 4, 5, 12, 13, 14 (200 series a cell): 0.953 / 0.946 at 1.0,
# 0.952 / 0.947 at 1.3, 0.951 / 0.942 at 0.7; a bend of 2.0, 0.954 / 0.946; alpha 0.003 with the
# floor at 1.2, 0.954 / 0.949 (all within the spread between seeds; before the Huber loss and the
# floor, 0.948 / 0.938).
_HUBER_BEND = 1.345
_HUBER_ROUNDS = 3
_SMALLEST = 1.0
# Each scale of seeded intervals is this much shorter than the one above it.
_DECAY = math.sqrt(0.5)
# How far a change point may move when it is placed again between its neighbours.
_REACH = 5
_PASSES = 4
# Points of the midpoint rule in _p_max.
_NODES = 16
# The longest interval whose splits also get exact p-values (their cost grows as its cube).
_EXACT_SIZE = 40
# Bimodal noise: alpha is multiplied by _MODE_ALPHA for the search of the moved values; each
# value's chance of being in the rarer mode is judged from _MODE_REACH flights either side; and a
# change of the median smaller than _MODE_SMALLEST times the spread around one mode is not
# reported. Moved back to one mode, 2% changes become visible but are often placed 3 to 6 flights
# off (most of the false alarms there); in one value a flight, F1 / false alarms per 100 flights
# on seeds 2, 4, 5 (200 series; seed 3 is the reported one): with no such floor and alpha times
# 0.25, 0.937 / 0.085, 0.950 / 0.065, 0.944 / 0.095; with the floor at 1.5 spreads, 0.945 /
# 0.065, 0.965 / 0.025, 0.951 / 0.055; at 2 spreads, 0.939 / 0.045, 0.953 / 0.015, 0.945 /
# 0.030. Alpha times 0.1 to 1 moved these by less than 0.01 once the floor is in. Reach (seed 2,
# before the floor): F1 0.928 at 5, 0.930 at 7, 0.923 at 10, 0.895 at 14.
_MODE_ALPHA = 0.25
_MODE_REACH = 7
_MODE_SMALLEST = 1.5


@dataclass(frozen=True)
class ChangePoint:
    """``index`` is the first value after the change (0-based); ``before`` and ``after`` are
    the medians of the segments on either side (up to the neighbouring change points); ``z`` is
    the standardised rank-sum statistic of the split between those segments (positive: the values
    went up)."""

    index: int
    before: float
    after: float
    z: float

    @property
    def relative_change(self) -> float:
        """(after - before) / |before|; infinite when ``before`` is 0 and the values moved."""
        if self.before == 0:
            return 0.0 if self.after == 0 else math.copysign(math.inf, self.after)
        return (self.after - self.before) / abs(self.before)


def change_points(
    values: Sequence[float],
    *,
    min_segment: int = DEFAULT_MIN_SEGMENT,
    alpha: float = DEFAULT_ALPHA,
    min_change: float = 0.0,
) -> tuple[ChangePoint, ...]:
    """The change points of ``values`` (one value a flight, oldest first), in order.

    ``min_segment`` (at least 2) is the fewest flights a segment may have; ``alpha`` the p-value
    (corrected for the choice of the split) below which a split is a change; a change point whose
    relative change of the median is below ``min_change`` (0.05 for 5%) is not reported (the
    median of the values searched: spikes left out, and under two modes moved back to the major
    mode; ``before`` and ``after`` are those of ``values``). Raises ValueError on a value that is
    not a finite number or on settings out of range.
    """
    if min_segment < 2:
        raise ValueError(f"min_segment must be at least 2, not {min_segment}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    if min_change < 0:
        raise ValueError(f"min_change must not be negative, not {min_change}")
    series = [float(value) for value in values]
    for index, value in enumerate(series):
        if not math.isfinite(value):
            raise ValueError(f"value {index} is {value}, not a finite number")
    one = _OneMode(series, min_segment, alpha, min_change)
    two = _two_modes(series, one.points, min_segment)
    if two is None:
        return one.without_small()
    points = one.points
    logs = [math.log(value) for value in series]

    def unmixed_search(modes: Modes, around: Sequence[ChangePoint]) -> tuple[ChangePoint, ...]:
        splits = [point.index for point in around]
        moved = [math.exp(value) for value in unmixed(logs, splits, modes, _MODE_REACH)]
        return _search(
            moved,
            series,
            min_segment,
            alpha * _MODE_ALPHA,
            max(min_change, _MODE_SMALLEST * math.expm1(modes.spread)),
            functools.partial(_misfit, modes),
        )

    points = unmixed_search(two, points)
    # fitted again around the medians of the segments found: a step found now no longer widens
    # the modes, whose spread weighs each value's chance of being in either
    again = find_modes(residuals(logs, [point.index for point in points]))
    return points if again is None else unmixed_search(again, points)


def _misfit(modes: Modes, segment: Sequence[float]) -> float:
    return modes.misfit([math.log(value) for value in segment])


def noise_modes(
    values: Sequence[float], *, min_segment: int = DEFAULT_MIN_SEGMENT, alpha: float = DEFAULT_ALPHA
) -> Modes | None:
    """The two modes that `change_points` finds in the noise of ``values`` (and then searches
    the values moved back to the major mode), or None when it takes the noise for one mode."""
    series = [float(value) for value in values]
    return _two_modes(series, _OneMode(series, min_segment, alpha, 0.0).points, min_segment)


def _two_modes(
    series: Sequence[float], points: Sequence[ChangePoint], min_segment: int
) -> Modes | None:
    """The two modes of the noise around the levels between ``points``; only positive values
    (a slowdown is a factor) of a series long enough to hold two segments."""
    if len(series) < 2 * min_segment or min(series) <= 0:
        return None
    return two_modes(series, [point.index for point in points], _MODE_REACH)


class _OneMode:
    """The search of ``series`` as it is (one mode): its change points with none left out for
    being small, which the two modes are sought around, and then those that are not small."""

    def __init__(
        self, series: Sequence[float], min_segment: int, alpha: float, min_change: float
    ) -> None:
        self.searched = _despiked(series)
        self.given = series
        self.min_segment = min_segment
        self.alpha = alpha
        self.min_change = min_change
        self.scale = _noise_scale(self.searched)
        self.misfit: Callable[[Sequence[float]], float] = (
            functools.partial(_huber, _HUBER_BEND * self.scale) if self.scale > 0 else _deviation
        )
        found: list[int] = []
        _narrowest_significant(self.searched, 0, len(series), min_segment, alpha, {}, found)
        self.points = self._confirmed(sorted(found), 0.0)

    def without_small(self) -> tuple[ChangePoint, ...]:
        """The change points whose medians moved by ``_SMALLEST`` times the noise at least
        (see `_noise_scale`): the rest placed again without them."""
        least = _SMALLEST * self.scale
        if least <= 0:
            return self.points
        return self._confirmed([point.index for point in self.points], least)

    def _confirmed(self, splits: list[int], least: float) -> tuple[ChangePoint, ...]:
        return _confirmed(
            self.searched,
            self.given,
            self.searched,
            splits,
            self.min_segment,
            self.alpha,
            (self.min_change, least),
            self.misfit,
        )


def _search(
    series: Sequence[float],
    given: Sequence[float],
    min_segment: int,
    alpha: float,
    min_change: float,
    misfit: Callable[[Sequence[float]], float],
) -> tuple[ChangePoint, ...]:
    """The change points of ``series`` moved back to one mode, their medians those of
    ``given`` (the values as measured); placing a change point again minimises the ``misfit``
    of the segments on either side, of ``given`` (the two modes' likelihood is that of the
    values as measured, not as moved)."""
    searched = _despiked(series)
    found: list[int] = []
    _narrowest_significant(searched, 0, len(series), min_segment, alpha, {}, found)
    return _confirmed(
        searched, given, given, sorted(found), min_segment, alpha, (min_change, 0.0), misfit
    )


def _noise_scale(series: Sequence[float]) -> float:
    """The standard deviation of normal noise that would give the spread of ``series``'s
    flight-to-flight differences (their median absolute deviation over 0.6745 * sqrt 2): a
    step moves one difference of 99, so the changes do not widen it."""
    differences = [b - a for a, b in itertools.pairwise(series)]
    if not differences:
        return 0.0
    centre = median(differences)
    return median([abs(d - centre) for d in differences]) / (0.6745 * math.sqrt(2))


def _huber(bend: float, values: Sequence[float]) -> float:
    """The Huber loss of ``values`` around their Huber centre (a few rounds from the median):
    squares within ``bend`` of it, beyond that growing as absolute deviations. Squares place
    a step in normal noise better than absolute deviations (they weigh each value's distance
    in full, where absolute deviations keep only its side: the bench's 5% steps in 2.5% normal
    noise found within 2 flights 0.895 of the time instead of 0.872, seeds 2, 4, 5; squares
    alone lost as much on spiky noise); the bend keeps a heavy tail's or a missed spike's pull
    to that of a value ``bend`` away."""
    if not values:
        return 0.0
    centre = median(values)
    for _ in range(_HUBER_ROUNDS):
        centre += math.fsum(min(max(v - centre, -bend), bend) for v in values) / len(values)
    total = 0.0
    for value in values:
        off = abs(value - centre)
        total += off * off / 2 if off <= bend else bend * (off - bend / 2)
    return total


def _despiked(series: Sequence[float]) -> list[float]:
    """``series`` with each spike replaced by the median of its neighbours: a value beyond the
    medians of the ``_SPIKE_REACH`` values on either side of it, on the same side of both, by
    more than ``_SPIKE_FACTOR`` times the 90th percentile of the flight-to-flight differences or
    ``_SPIKE_SCALE`` times the noise (see `_noise_scale`), whichever is less. A value at a step
    agrees with the side it belongs to, so only spikes move; the percentile is high so that the
    other mode of bimodal noise (a large share of the differences) stays. The noise's scale is
    there because each spike makes two large differences: a few spikes and steps fill the top
    tenth of them, and then the percentile is a spike's and no spike is left out; a spike moves
    a median of the differences by one place. Spikes are only left out of the search: the change
    points' medians are those of the values as given."""
    steps = sorted(abs(b - a) for a, b in itertools.pairwise(series))
    if not steps:
        return list(series)
    threshold = _SPIKE_FACTOR * steps[min(len(steps) - 1, math.floor(0.9 * len(steps)))]
    scale = _noise_scale(series)
    # no scale when most differences are alike (a few distinct values, a pattern that repeats)
    if scale > 0:
        threshold = min(threshold, _SPIKE_SCALE * scale)
    return _without_spikes(series, threshold)


def _without_spikes(series: Sequence[float], threshold: float) -> list[float]:
    out = list(series)
    for index, value in enumerate(series):
        # the values before it as cleaned already: a run of spikes would pull the medians of
        # the values just after it
        left = out[max(0, index - _SPIKE_REACH) : index]
        right = series[index + 1 : index + 1 + _SPIKE_REACH]
        sides = [median(side) for side in (left, right) if len(side) >= 3]
        if not sides:
            continue
        if all(value - centre > threshold for centre in sides) or all(
            centre - value > threshold for centre in sides
        ):
            out[index] = median([*left, *right])
    return out


def _seeded_intervals(length: int, shortest: int) -> list[tuple[int, int]]:
    """Intervals [start, end) at scales length, length*decay, ... down to ``shortest``; at each
    scale, evenly spaced and overlapping by about half."""
    if length < shortest:
        return []
    intervals = {(0, length)}
    level = 1
    while True:
        size = max(length * _DECAY**level, shortest)
        count = 2 * math.ceil((1 / _DECAY) ** level) - 1
        shift = (length - size) / (count - 1)
        for k in range(count):
            start = math.floor(k * shift)
            intervals.add((start, min(length, start + math.ceil(size))))
        if size <= shortest:
            return sorted(intervals)
        level += 1


def _split_statistics(
    series: Sequence[float], start: int, end: int, min_segment: int
) -> list[tuple[int, float, float]]:
    """For every split t of series[start:end] leaving min_segment values on each side, the
    Wilcoxon rank-sum statistic of series[t:end] against series[start:t]: (t, the right side's
    rank sum minus its expectation, that divided by its standard deviation)."""
    ranks, ties = midranks(series[start:end])
    size = end - start
    spread = (size + 1) - ties / (size * (size - 1))
    out: list[tuple[int, float, float]] = []
    left_sum = sum(ranks[: min_segment - 1])
    for left in range(min_segment, size - min_segment + 1):
        left_sum += ranks[left - 1]
        variance = left * (size - left) / 12 * spread
        # from the left side's rank sum: the right side's is the rest of all ranks
        excess = left * (size + 1) / 2 - left_sum
        z = excess / math.sqrt(variance) if variance > 0 else 0.0
        out.append((start + left, excess, z))
    return out


def _best_split(
    series: Sequence[float], start: int, end: int, min_segment: int
) -> tuple[int, float]:
    """The split where the two sides' rank sums differ most, and its p-value (corrected for the
    choice of the split).

    The unstandardised difference peaks at a change, however large; the standardised one is
    flat across a large change, so its own peak can sit several flights away."""
    scan = _split_statistics(series, start, end, min_segment)
    split, _, _ = max(scan, key=lambda s: abs(s[1]))
    return split, _p_split(series, start, end, split, min_segment, scan)


def _p_split(
    series: Sequence[float],
    start: int,
    end: int,
    split: int,
    min_segment: int,
    scan: list[tuple[int, float, float]] | None = None,
) -> float:
    """The p-value of the split of series[start:end] at ``split``, corrected for its choice
    among all splits: the smaller of Siegmund's approximation and, on a short interval without
    ties, the exact chance at one split times the number of splits. Ranks are bounded, so on a
    short interval their tails are much thinner than the normal ones Siegmund's assumes."""
    if scan is None:
        scan = _split_statistics(series, start, end, min_segment)
    _, excess, z = next(s for s in scan if s[0] == split)
    size = end - start
    p = _p_max(z, size, min_segment)
    if size <= _EXACT_SIZE and len(set(series[start:end])) == size:
        p = min(p, len(scan) * rank_sum_tail(split - start, end - split, excess))
    return p


def _narrowest_significant(
    series: Sequence[float],
    start: int,
    end: int,
    min_segment: int,
    alpha: float,
    scans: dict[tuple[int, int], tuple[int, float]],
    found: list[int],
) -> None:
    """Add the split of the narrowest interval within [start, end) whose p-value is below alpha
    (the smallest p-value among equally narrow ones), then search each side on its own. The
    intervals are those seeded for [start, end), and every one scanned before, cut to [start,
    end): the other edge of a short-lived change, once one edge is a split, is found by an
    interval that ends at that split. ``scans`` keeps each interval's best split and p-value."""
    shortest = 2 * min_segment
    intervals = {
        (start + first, start + last) for first, last in _seeded_intervals(end - start, shortest)
    }
    intervals.update(
        (max(first, start), min(last, end))
        for first, last in scans
        if min(last, end) - max(first, start) >= shortest
    )
    best: tuple[int, float, int] | None = None
    for interval in intervals:
        if interval not in scans:
            scans[interval] = _best_split(series, *interval, min_segment)
        split, p = scans[interval]
        if p < alpha:
            key = (interval[1] - interval[0], p, split)
            if best is None or key < best:
                best = key
    if best is None:
        return
    split = best[2]
    found.append(split)
    _narrowest_significant(series, start, split, min_segment, alpha, scans, found)
    _narrowest_significant(series, split, end, min_segment, alpha, scans, found)


def _confirmed(
    series: Sequence[float],
    given: Sequence[float],
    placed: Sequence[float],
    splits: list[int],
    min_segment: int,
    alpha: float,
    smallest: tuple[float, float],
    misfit: Callable[[Sequence[float]], float],
) -> tuple[ChangePoint, ...]:
    """Place each split again between its neighbours (by the ``misfit`` of ``placed``), test it
    there, drop the weakest failing one and repeat until every split stands. ``series`` is
    searched; the medians reported are those of ``given``. ``smallest`` is (the least relative
    change, the least change) of the medians of ``series`` that is reported: under two modes
    those of the values moved back to the major mode, whose level is what changed (the median
    of the values as measured moves with the share of the other mode in a segment)."""
    least_relative, least = smallest
    while True:
        splits = _relocated(placed, splits, min_segment, misfit)
        points = [_between(series, given, splits, k, min_segment) for k in range(len(splits))]
        failing = []
        for k, point in enumerate(points):
            start, end = _neighbours(splits, k, len(series))
            before = median(series[start : point.index])
            change = abs(median(series[point.index : end]) - before)
            if (
                _p_split(series, start, end, point.index, min_segment) >= alpha
                or change < least_relative * abs(before)
                or change < least
            ):
                failing.append(k)
        if not failing:
            return tuple(points)
        del splits[min(failing, key=lambda k: abs(points[k].z))]


def _neighbours(splits: Sequence[int], k: int, length: int) -> tuple[int, int]:
    return (splits[k - 1] if k else 0), (splits[k + 1] if k + 1 < len(splits) else length)


def _relocated(
    series: Sequence[float],
    splits: list[int],
    min_segment: int,
    misfit: Callable[[Sequence[float]], float],
) -> list[int]:
    """Each split walked, ``_REACH`` flights at most a pass, to where the ``misfit`` of the two
    sides between its neighbours is least: their absolute deviations from their medians, or,
    under two modes, minus their likelihood. Ranks find a change but place a large one poorly
    when it sits near an end of the interval that found it; absolute deviations place it to the
    flight and, unlike squares, let a spike pull it only as far as any other value. The walk is
    short so that a split does not jump to another change its neighbours do not bound."""
    moved = list(splits)
    costs: dict[tuple[int, int], float] = {}

    def cost(first: int, last: int) -> float:
        if (first, last) not in costs:
            costs[first, last] = misfit(series[first:last])
        return costs[first, last]

    for _ in range(_PASSES):
        before = list(moved)
        for k in range(len(moved)):
            start, end = _neighbours(moved, k, len(series))
            near = range(
                max(start + min_segment, moved[k] - _REACH),
                min(end - min_segment, moved[k] + _REACH) + 1,
            )
            moved[k] = min(near, key=lambda t: (cost(start, t) + cost(t, end), t))
        if moved == before:
            break
    return moved


def _deviation(values: Sequence[float]) -> float:
    centre = median(values)
    return sum(abs(value - centre) for value in values)


def _between(
    series: Sequence[float], given: Sequence[float], splits: list[int], k: int, min_segment: int
) -> ChangePoint:
    start, end = _neighbours(splits, k, len(series))
    split = splits[k]
    _, _, z = next(s for s in _split_statistics(series, start, end, min_segment) if s[0] == split)
    return ChangePoint(
        index=split,
        before=median(given[start:split]),
        after=median(given[split:end]),
        z=z,
    )


def _p_max(z: float, size: int, min_segment: int) -> float:
    """The chance that some split of ``size`` independent values, leaving ``min_segment`` on each
    side, has a standardised statistic as far from 0 as ``z``: Siegmund's approximation (1988)
    with his correction for a discrete walk, ν(x) ≈ exp(-0.583 x), without which short intervals
    would need far more evidence than they do; integrated over the logit of the split's place."""
    c = abs(z)
    if c == 0:
        return 1.0
    low = math.log(min_segment / (size - min_segment))
    width = -2 * low / _NODES
    total = 0.0
    for k in range(_NODES):
        u = low + (k + 0.5) * width
        spread = math.exp(u) / (1 + math.exp(u)) ** 2  # t(1 - t) at t = logistic(u)
        total += math.exp(-0.583 * c / math.sqrt(size * spread)) * width
    density = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
    # the chance at one split, plus that of crossings between the first split and the last
    return min(1.0, math.erfc(c / math.sqrt(2)) + c * density * total)
