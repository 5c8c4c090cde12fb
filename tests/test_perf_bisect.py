"""A slowdown bisection's answers: each run placed between the good and the bad side."""

from __future__ import annotations

import pytest

from labgate.perf.bisect import slowdown_answer

GOOD = [100.0, 101.0, 102.0, 103.0, 104.0]  # median 102
BAD = [120.0, 121.0, 122.0, 123.0, 124.0]  # median 122


@pytest.mark.parametrize(
    ("values", "answer"),
    [
        ([121.0, 123.0, 119.0], "bad"),
        ([140.0], "bad"),  # beyond the bad side: as bad
        ([101.0, 103.0, 130.0], "good"),  # the median is robust to one slow run
        ([90.0], "good"),
        ([108.0], "good"),  # 30% of the way: nearer good
        ([112.0], None),  # half way: run it again rather than guess
        ([116.0], "bad"),  # 70% of the way
        ([], None),
    ],
)
def test_a_run_is_the_side_its_median_is_nearest_or_unknown_in_the_middle(
    values: list[float], answer: str | None
) -> None:
    assert slowdown_answer(values, GOOD, BAD) == answer


def test_improvements_are_bisected_the_same_way_and_alike_sides_say_nothing() -> None:
    assert slowdown_answer([101.0], BAD, GOOD) == "bad"  # the "bad" side is the faster one
    assert slowdown_answer([121.0], BAD, GOOD) == "good"
    assert slowdown_answer([100.0], GOOD, GOOD) is None
    assert slowdown_answer([100.0], [], BAD) is None
