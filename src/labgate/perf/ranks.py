"""Ranks with ties, shared by the change-point detector and the two-sample comparison."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache


def midranks(values: Sequence[float]) -> tuple[list[float], float]:
    """The 1-based rank of each value (tied values share their mean rank) and the tie term
    sum(t**3 - t) over groups of t equal values, which corrects rank variances for ties."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties = 0.0
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and values[order[end]] == values[order[start]]:
            end += 1
        rank = (start + end + 1) / 2
        for k in range(start, end):
            ranks[order[k]] = rank
        size = end - start
        ties += size**3 - size
        start = end
    return ranks, ties


def median(values: Sequence[float]) -> float:
    """The median; raises ValueError on no values."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def rank_sum_tail(left: int, right: int, deviation: float) -> float:
    """The exact chance, with no ties, that the Mann–Whitney U of samples of ``left`` and
    ``right`` values is at least ``deviation`` away from its mean left*right/2 (two-sided)."""
    counts = _u_counts(left, right)
    bound = math.floor(left * right / 2 - abs(deviation) + 1e-9)
    if bound < 0:
        return 0.0
    below = sum(counts[: bound + 1])
    return min(1.0, 2 * below / math.comb(left + right, left))


@lru_cache(maxsize=4096)
def _u_counts(left: int, right: int) -> tuple[int, ...]:
    """How many orders of the two samples give each U = 0 .. left*right: the coefficients of the
    Gaussian binomial [left + right choose left], built one factor (1 - q^(right+i)) / (1 - q^i)
    at a time."""
    poly = [1]
    for i in range(1, left + 1):
        grown = poly + [0] * right  # times (1 - q^(right + i)) / (1 - q^i), exact at each i
        times = grown[:]
        for k in range(len(times) - 1, right + i - 1, -1):
            times[k] -= times[k - right - i]
        for k in range(i, len(times)):
            times[k] += times[k - i]
        poly = times
    return tuple(poly)
