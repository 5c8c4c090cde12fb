"""Ranks with ties, shared by the change-point detector and the two-sample comparison."""

from __future__ import annotations

from collections.abc import Sequence


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
