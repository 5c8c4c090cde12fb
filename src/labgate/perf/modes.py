"""Two modes in a metric's noise: runs that now and then take a slower (or faster) path, so that
the values of one level cluster around two centres a fixed factor apart.

Ranks bound what such noise costs a change-point search but cannot undo it: a step smaller than
the gap between the modes moves the values of one mode among those of the other, and a rank sum
sees little of it. When the noise is known to have two modes, each value can be moved back by
its chance of being in the rarer one, and what is left is the narrow noise around one mode.

Pure: plain numbers in, looked at in logs (a slowdown is a factor, so a change of level moves
both modes by the same amount in logs).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from labgate.perf.ranks import median

# Two modes are taken as such only when all of these hold; each keeps another shape from being
# taken for two modes. At least this many values ...
_FEWEST = 30
# ... at least this share of them in the rarer mode (three spikes in 100 flights are no mode) ...
_SHARE = 0.10
# ... the modes this many spreads apart (heavy tails fit a wide second mode close by) ...
_SEPARATION = 3.5
# ... two modes better than one normal by this much of the Bayesian information criterion ...
_BIC_MARGIN = 10.0
# ... and the values switching mode along the series at least this share as often as they
# would if each flight chose its mode alone (a level shift the search missed switches once).
_SWITCHING = 0.5
# Expectation-maximisation stops after this many rounds or once a round adds less than this
# to the log-likelihood.
_EM_ROUNDS = 30
_EM_TOLERANCE = 1e-6
# At least this share of the values distinct: two normals say nothing of values that take a
# few distinct values (a counter, a time in whole seconds), which they would fit as spikes.
_DISTINCT = 0.5
# Values more than this many spreads from both modes are left out of the fit, up to this share.
_OUTLYING = 3.5
_OUTLIERS = 0.1
# Rounds of fitting a segment's level under the two modes.
_LEVEL_ROUNDS = 1


@dataclass(frozen=True)
class Modes:
    """Two modes of log values around their level: ``major`` and ``minor`` are the modes' centres
    as offsets from the level the values are judged against, ``spread`` the standard deviation
    around each, ``share`` the minor mode's share of the values."""

    major: float
    minor: float
    spread: float
    share: float

    def minor_chance(self, residual: float) -> float:
        """The chance that a value ``residual`` off its level is in the minor mode."""
        near = (residual - self.major) / self.spread
        far = (residual - self.minor) / self.spread
        # the ratio of the two densities, in logs so that far values do not underflow
        log_odds = math.log(self.share / (1 - self.share)) + (near * near - far * far) / 2
        # past 50 either way the answer is 0 or 1 to double precision, and exp would overflow
        if log_odds > 50:
            return 1.0
        if log_odds < -50:
            return 0.0
        return 1 / (1 + math.exp(-log_odds))

    def misfit(self, logs: Sequence[float]) -> float:
        """Minus the log-likelihood of ``logs`` as one level's values (up to a constant), the
        level fitted: where a change point sits between two segments is where their misfits
        add up least. Absolute deviations do not do under two modes: a step about as large as
        the gap between them makes the values after it look like the minor mode before it."""
        if not logs:
            return 0.0
        gap = self.minor - self.major
        quantile = (1 - self.share) / 2 if gap > 0 else self.share + (1 - self.share) / 2
        level = _quantile(sorted(logs), quantile)
        relative = Modes(major=0.0, minor=gap, spread=self.spread, share=self.share)
        for _ in range(_LEVEL_ROUNDS):
            level = math.fsum(
                value - gap * relative.minor_chance(value - level) for value in logs
            ) / len(logs)
        total = 0.0
        for value in logs:
            near = (value - level) / self.spread
            far = (value - level - gap) / self.spread
            density = (1 - self.share) * math.exp(-near * near / 2) + self.share * math.exp(
                -far * far / 2
            )
            total -= math.log(max(density, 1e-300))
        return total


def residuals(logs: Sequence[float], splits: Sequence[int]) -> list[float]:
    """Each log value minus the median of its segment (the values between neighbouring
    ``splits``): what is left once the level changes found so far are taken out."""
    out: list[float] = []
    for start, end in itertools.pairwise([0, *splits, len(logs)]):
        centre = median(logs[start:end])
        out.extend(value - centre for value in logs[start:end])
    return out


def two_modes(values: Sequence[float], splits: Sequence[int], reach: int) -> Modes | None:
    """The two modes of positive ``values`` around their level, in logs, or None.

    The level is first each segment's median (segments between ``splits``), which gives the
    modes' gap and shares even when a step was not found yet, but not their spread: a 5% step
    left in a segment widens both modes. So the modes are fitted again around the level of the
    values near each one (see ``levels``), which such a step moves only close to it.

    Two modes must be found both in logs and in the values' own scale (relative to their
    level): modes a few percent apart look alike in both, a skewed shape does not (the logs of
    values spread evenly from 0 fit two modes, a long tail below and the rest; the values do
    not)."""
    if len(set(values)) < _DISTINCT * len(values):
        return None
    logs = [math.log(value) for value in values]
    first = _fit(residuals(logs, splits))
    if first is None:
        return None
    around = [
        value - level
        for value, level in zip(logs, levels(logs, splits, first[0], reach), strict=True)
    ]
    if find_modes([math.expm1(r) for r in around]) is None:
        return None
    return find_modes(around)


def levels(logs: Sequence[float], splits: Sequence[int], modes: Modes, reach: int) -> list[float]:
    """The level of the major mode at each value, from the values around it (``reach`` flights
    either side at most, within its segment between ``splits``, itself left out): their
    quantile at the middle of the major mode, which the minor mode's values do not move. A
    segment's median does not do: a step not found yet moves the values of one mode to where
    the other's would be (a 5% drop under a mode 8% slower puts the slow values 3% above the old
    level, where the fast ones were), and a median of neighbours in a window does not either: in
    ten neighbours the minor mode is sometimes half."""
    share = modes.share
    quantile = (1 - share) / 2 if modes.minor > modes.major else share + (1 - share) / 2
    out: list[float] = []
    for start, end in itertools.pairwise([0, *splits, len(logs)]):
        for index in range(start, end):
            around = sorted(
                [
                    *logs[max(start, index - reach) : index],
                    *logs[index + 1 : min(end, index + reach + 1)],
                ]
            )
            out.append(_quantile(around, quantile) if around else logs[index])
    return out


def find_modes(residuals: Sequence[float]) -> Modes | None:
    """The two modes of ``residuals`` (values off their level, in logs or relative, in the order
    of the flights), or None when one mode explains them as well (see the constants above for
    each test)."""
    size = len(residuals)
    if size < _FEWEST:
        return None
    fit = _fit(residuals)
    if fit is None:
        return None
    # values far from both modes (a spike, the few values beside a step not found yet) widen
    # both modes if kept: fit again without them, as long as they are few
    kept = [
        r
        for r in residuals
        if min(abs(r - fit[0].major), abs(r - fit[0].minor)) <= _OUTLYING * fit[0].spread
    ]
    if len(kept) < (1 - _OUTLIERS) * size:
        return None
    if len(kept) < size:
        residuals, size = kept, len(kept)
        fit = _fit(residuals)
        if fit is None:
            return None
    modes, log_likelihood = fit
    mean = math.fsum(residuals) / size
    variance = math.fsum((r - mean) ** 2 for r in residuals) / size
    if variance <= 0:
        return None
    one_normal = -size / 2 * (math.log(2 * math.pi * variance) + 1)
    # four parameters against two
    if 2 * (log_likelihood - one_normal) - 2 * math.log(size) < _BIC_MARGIN:
        return None
    if modes.share < _SHARE or abs(modes.minor - modes.major) < _SEPARATION * modes.spread:
        return None
    labels = [modes.minor_chance(r) > 0.5 for r in residuals]
    rare = sum(labels) / size
    switches = sum(a != b for a, b in itertools.pairwise(labels))
    if switches < _SWITCHING * 2 * rare * (1 - rare) * (size - 1):
        return None
    return modes


def _fit(residuals: Sequence[float]) -> tuple[Modes, float] | None:
    """A mixture of two normals with one shared spread, by expectation-maximisation from the
    split of the sorted values that leaves the least spread within the two groups; with its
    log-likelihood. None when no such split leaves a value on each side."""
    ordered = sorted(residuals)
    size = len(ordered)
    total = math.fsum(ordered)
    best: tuple[float, int] | None = None
    running = 0.0
    for cut in range(1, size):
        running += ordered[cut - 1]
        left, right = running / cut, (total - running) / (size - cut)
        # the spread between the groups, larger as the spread within them is smaller
        between = cut * (size - cut) * (right - left) ** 2
        if best is None or between > best[0]:
            best = (between, cut)
    if best is None:
        return None
    cut = best[1]
    low, high = ordered[:cut], ordered[cut:]
    centres = [math.fsum(low) / len(low), math.fsum(high) / len(high)]
    weight = len(high) / size
    spread = math.sqrt(
        (
            math.fsum((v - centres[0]) ** 2 for v in low)
            + math.fsum((v - centres[1]) ** 2 for v in high)
        )
        / size
    )
    floor = 1e-9 * max(1.0, max(abs(v) for v in ordered))
    log_likelihood = -math.inf
    for _ in range(_EM_ROUNDS):
        spread = max(spread, floor)
        if not 0 < weight < 1:
            return None
        # each value's log density under each mode, added in logs so that a value far from
        # both (a spike) does not underflow to a density of 0
        low_log, high_log = math.log(1 - weight), math.log(weight)
        norm = math.log(spread * math.sqrt(2 * math.pi))
        chances = []
        new_likelihood = 0.0
        for value in ordered:
            a = low_log - ((value - centres[0]) / spread) ** 2 / 2
            b = high_log - ((value - centres[1]) / spread) ** 2 / 2
            top = max(a, b)
            both = top + math.log(math.exp(a - top) + math.exp(b - top))
            new_likelihood += both - norm
            chances.append(math.exp(b - both))
        high_weight = sum(chances)
        if not 0 < high_weight < size:
            return None
        centres = [
            sum((1 - c) * v for c, v in zip(chances, ordered, strict=True)) / (size - high_weight),
            sum(c * v for c, v in zip(chances, ordered, strict=True)) / high_weight,
        ]
        weight = high_weight / size
        spread = math.sqrt(
            sum(
                (1 - c) * (v - centres[0]) ** 2 + c * (v - centres[1]) ** 2
                for c, v in zip(chances, ordered, strict=True)
            )
            / size
        )
        converged = new_likelihood - log_likelihood < _EM_TOLERANCE
        log_likelihood = max(log_likelihood, new_likelihood)
        if converged:
            break
    if spread <= floor:
        return None
    if weight <= 0.5:
        return Modes(
            major=centres[0], minor=centres[1], spread=spread, share=weight
        ), log_likelihood
    return Modes(
        major=centres[1], minor=centres[0], spread=spread, share=1 - weight
    ), log_likelihood


def unmixed(logs: Sequence[float], splits: Sequence[int], modes: Modes, reach: int) -> list[float]:
    """``logs`` with each value moved back by the gap between the modes times its chance of
    being in the minor mode, judged against the level of the values around it (see ``levels``):
    the noise left is that around the major mode."""
    gap = modes.minor - modes.major
    relative = Modes(major=0.0, minor=gap, spread=modes.spread, share=modes.share)
    return [
        value - gap * relative.minor_chance(value - level)
        for value, level in zip(logs, levels(logs, splits, modes, reach), strict=True)
    ]


def _quantile(ordered: Sequence[float], share: float) -> float:
    """The ``share`` quantile of sorted values, interpolated between neighbours."""
    place = share * (len(ordered) - 1)
    below = math.floor(place)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (place - below) * (ordered[above] - ordered[below])
