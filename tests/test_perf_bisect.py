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
        ([112.0], None),  # exactly half way: nothing to tell
        ([111.0], "good"),  # a little nearer good: an answer the engine may find a flake
        ([116.0], "bad"),  # 70% of the way
        ([], None),
    ],
)
def test_a_run_is_the_side_its_values_are_likelier_under(
    values: list[float], answer: str | None
) -> None:
    assert slowdown_answer(values, GOOD, BAD) == answer


def test_improvements_are_bisected_the_same_way_and_alike_sides_say_nothing() -> None:
    assert slowdown_answer([101.0], BAD, GOOD) == "bad"  # the "bad" side is the faster one
    assert slowdown_answer([121.0], BAD, GOOD) == "good"
    assert slowdown_answer([100.0], GOOD, GOOD) is None
    assert slowdown_answer([100.0], [], BAD) is None


def test_a_run_in_the_slow_mode_of_a_bimodal_good_side_is_good() -> None:
    # a third of the good runs in a mode 8% slower; the bad side 5% slower in both modes: a run
    # of 108 lies beyond the bad side's median but among the good side's slow runs
    good = [100.0, 99.5, 100.5, 101.0, 99.0, 100.2, 108.0, 107.6, 108.4]
    bad = [value * 1.05 for value in good]
    assert slowdown_answer([108.1], good, bad) == "good"
    assert slowdown_answer([105.1], good, bad) == "bad"  # the bad side's fast mode


def test_a_spike_far_beyond_both_sides_weighs_less_than_runs_among_them() -> None:
    assert slowdown_answer([101.0, 102.0, 160.0], GOOD, BAD) == "good"


def test_sides_without_spread_still_answer() -> None:
    assert slowdown_answer([101.0], [100.0], [120.0]) == "good"
    assert slowdown_answer([119.0], [100.0, 100.0], [120.0, 120.0]) == "bad"
    assert slowdown_answer([100.0], [100.0], [100.0]) is None
