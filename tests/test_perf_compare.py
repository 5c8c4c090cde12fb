"""The verdict of one metric against its baseline (labgate.perf.compare), on seeded samples."""

from __future__ import annotations

import math
import random

import pytest

from labgate.perf.compare import (
    Difference,
    compare,
    hodges_lehmann,
    kolmogorov_smirnov_p,
    mann_whitney_p,
)


def runs(level: float, count: int, seed: int, noise: float = 0.01) -> list[float]:
    rng = random.Random(seed)
    return [level * (1 + rng.gauss(0, noise)) for _ in range(count)]


def test_a_ten_percent_slowdown_is_a_regression() -> None:
    verdict = compare(runs(100.0, 10, 1), runs(110.0, 10, 2))
    assert verdict.difference is Difference.DIFFERENT
    assert verdict.regressed and not verdict.improved
    assert verdict.change == pytest.approx(0.10, abs=0.01)
    assert verdict.change_low < verdict.change < verdict.change_high
    assert verdict.p_value <= 0.01 and verdict.extra_repeats == 0


def test_the_same_change_is_an_improvement_where_higher_is_better() -> None:
    verdict = compare(runs(100.0, 10, 1), runs(110.0, 10, 2), lower_is_better=False)
    assert verdict.improved and not verdict.regressed


def test_a_real_change_smaller_than_min_change_is_same() -> None:
    verdict = compare(runs(100.0, 30, 3, 0.002), runs(101.0, 30, 4, 0.002))
    assert verdict.p_value <= 0.01  # the change is real...
    assert verdict.difference is Difference.SAME  # ...and smaller than the 5% that matters
    assert not verdict.regressed


def test_repeats_of_equal_runs_are_same() -> None:
    verdict = compare(runs(100.0, 20, 5), runs(100.0, 20, 6))
    assert verdict.difference is Difference.SAME
    assert -0.05 < verdict.change_low < 0 < verdict.change_high < 0.05


def test_too_few_noisy_runs_are_unknown_and_the_repeats_bought_decide() -> None:
    baseline = runs(100.0, 40, 7, 0.08)
    current = [101.0, 112.0, 106.0]
    verdict = compare(baseline, current)
    assert verdict.difference is Difference.UNKNOWN
    assert 1 <= verdict.extra_repeats <= 37
    rng = random.Random(9)
    while verdict.difference is Difference.UNKNOWN and verdict.extra_repeats:
        current += [108.0 * (1 + rng.gauss(0, 0.08)) for _ in range(verdict.extra_repeats)]
        verdict = compare(baseline, current)
    assert verdict.regressed
    assert len(current) <= 40


def test_no_repeats_are_bought_past_max_repeats() -> None:
    verdict = compare(runs(100.0, 10, 10, 0.1), runs(104.0, 6, 11, 0.1), max_repeats=6)
    assert verdict.difference is Difference.UNKNOWN
    assert verdict.extra_repeats == 0


def test_a_new_slow_mode_is_caught_by_kolmogorov_smirnov_where_u_misses_it() -> None:
    baseline = runs(100.0, 30, 12, 0.005)
    # half the runs now take 15% longer, half 12% less: the median hardly moves
    rng = random.Random(13)
    current = [100.0 * (1.15 if k % 2 else 0.88) * (1 + rng.gauss(0, 0.005)) for k in range(30)]
    verdict = compare(baseline, current)
    assert verdict.p_mann_whitney > 0.05
    assert verdict.p_kolmogorov_smirnov < 0.001
    assert verdict.p_value == pytest.approx(2 * verdict.p_kolmogorov_smirnov)
    assert verdict.difference is not Difference.SAME


def test_a_bimodal_metric_is_judged_by_its_distribution_not_its_mean() -> None:
    rng = random.Random(14)

    def bimodal(slow_share: float) -> list[float]:
        return [
            (130.0 if rng.random() < slow_share else 100.0) + rng.gauss(0, 0.5) for _ in range(40)
        ]

    # the same two modes, in the same proportions: SAME, whatever the means of two draws say
    assert compare(bimodal(0.3), bimodal(0.3)).difference is not Difference.DIFFERENT
    # most runs now land in the slow mode: a regression
    assert compare(bimodal(0.1), bimodal(0.9)).regressed


def test_p_values_known_by_hand() -> None:
    # fully separated samples of 5: U = 0; exact KS: 2 of the C(10, 5) = 252 orders reach D = 1
    low, high = [1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]
    assert kolmogorov_smirnov_p(low, high) == pytest.approx(2 / 252)
    z = (12.5 - 0.5) / math.sqrt(25 * 11 / 12)
    assert mann_whitney_p(low, high) == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert mann_whitney_p(low, low) == 1.0
    assert kolmogorov_smirnov_p(low, low) == 1.0


def test_hodges_lehmann_is_the_median_pairwise_difference() -> None:
    shift, low, high = hodges_lehmann([1.0, 2.0, 3.0], [11.0, 12.0, 13.0], 0.9)
    assert (shift, low, high) == (10.0, 8.0, 12.0)  # three a side: the extremes make 90%
    shift, low, high = hodges_lehmann([1.0, 2.0], [11.0, 12.0], 0.9)
    assert (shift, low, high) == (10.0, -math.inf, math.inf)  # two a side cannot bound it
    shift, low, high = hodges_lehmann(list(range(20)), [x + 5.0 for x in range(20)], 0.9)
    assert shift == 5.0 and low < 5.0 < high


@pytest.mark.parametrize(
    ("baseline", "current", "options", "message"),
    [
        ([], [1.0], {}, "the baseline sample is empty"),
        ([1.0], [], {}, "the current sample is empty"),
        ([1.0, math.nan], [1.0], {}, "baseline value 1 is nan"),
        ([1.0], [math.inf], {}, "current value 0 is inf"),
        ([0.0, 0.0, 0.0], [1.0], {}, "the baseline's median is 0"),
        ([1.0], [1.0], {"min_change": 0.0}, "min_change must be positive"),
        ([1.0], [1.0], {"alpha": 0.0}, "alpha must be between 0 and 1"),
    ],
)
def test_bad_input_is_refused_saying_what_is_wrong(
    baseline: list[float], current: list[float], options: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        compare(baseline, current, **options)  # type: ignore[arg-type]


def test_one_run_cannot_be_judged_and_buys_the_fewest_that_could_be() -> None:
    baseline = runs(100.0, 20, 15)
    verdict = compare(baseline, [130.0])
    assert verdict.difference is Difference.UNKNOWN
    assert verdict.p_value > 0.01  # 1 run above 20: p = 2/21 for either test, doubled
    # 3 runs above 20 reach 2 * 2/C(23, 3) = 0.0023 <= 0.01, 2 runs only 0.017
    assert verdict.extra_repeats == 2
    assert compare(baseline, [130.0, 131.0, 129.0]).regressed
    assert compare(baseline, [130.0], max_repeats=2).extra_repeats == 1


def test_two_runs_a_side_cannot_bound_the_change_and_at_least_double() -> None:
    verdict = compare([100.0, 101.0], [104.0, 103.0])
    assert math.isinf(verdict.change_high)
    assert verdict.difference is Difference.UNKNOWN
    assert verdict.extra_repeats == 5


@pytest.mark.parametrize("noise", ["normal", "bimodal", "cauchy"])
def test_runs_of_one_distribution_are_seldom_called_different(noise: str) -> None:
    rng = random.Random(noise)

    def run() -> float:
        if noise == "bimodal":
            return (130.0 if rng.random() < 0.3 else 100.0) + rng.gauss(0, 1)
        if noise == "cauchy":
            return 100.0 + math.tan(math.pi * (rng.random() - 0.5))
        return 100.0 * (1 + rng.gauss(0, 0.05))

    verdicts = [
        compare([run() for _ in range(10)], [run() for _ in range(10)], min_change=0.01)
        for _ in range(500)
    ]
    # alpha is 0.01 and a change of 1% is enough to count: about 5 in 500 by chance alone
    assert sum(verdict.difference is Difference.DIFFERENT for verdict in verdicts) <= 8
