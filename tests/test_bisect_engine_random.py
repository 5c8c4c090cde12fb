"""The engine and a test that fails at random, whatever the commit: a broken test, not a regression.

Such a test is found out (undecided, ``test-random``) instead of blamed on a commit, and the
hypothesis costs a deterministic test nothing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from labgate.bisect.engine import Culprit, Decision, Observation, Search, TreeRange
from test_bisect_cli import linear as repository
from test_bisect_cli import runs as counted
from test_bisect_cli import search as bisect_run


def linear(n: int) -> TreeRange:
    """good = c0, then c1 .. cn (bad)."""
    parents = {f"c{i}": (f"c{i - 1}",) for i in range(1, n + 1)}
    return TreeRange("", parents, ("c0",), f"c{n}")


def search(s: Search, fails: object, limit: int = 3000) -> tuple[Decision, list[Observation]]:
    """Run the search to its end; ``fails(point)`` says whether a run fails."""
    observations: list[Observation] = []
    d = s.decide(observations)
    while d.kind == "test" and len(observations) < limit:
        for t in d.tests:
            outcome = "bad" if fails(t[""]) else "good"  # type: ignore[operator]
            observations.append(Observation(t, outcome))
        d = s.decide(observations)
    return d, observations


@pytest.mark.parametrize("rate", [0.5, 0.7])
def test_a_test_failing_at_random_ends_undecided_as_random(rate: float) -> None:
    """Four searches a rate. A search may still name a culprit, but only on runs that a
    deterministic test with that culprit gives exactly: no engine can tell those apart, and a
    search cheap on a deterministic test meets them often enough (``bench/bisect.py`` prints the
    bound). Every other search ends ``test-random``, on the contradictions it names."""
    random_ends = 0
    for seed in range(4):
        coin = random.Random(f"{rate}:{seed}").random
        d, observations = search(Search([linear(100)]), lambda _, coin=coin: coin() < rate)
        if d.kind == "culprit":
            assert d.culprit is not None
            at = int(d.culprit.commit[1:])
            assert all((int(o.point[""][1:]) >= at) == (o.outcome == "bad") for o in observations)
            continue
        random_ends += 1
        assert d.kind == "undecided" and d.culprit is None
        assert d.reason_code == "test-random", d.reason
        assert d.fails_at_random > 0.5
        # the contradictions it rests on were seen: the good end failing, the bad end passing
        assert any(o.point[""] == "c0" and o.outcome == "bad" for o in observations)
        assert any(o.point[""] == "c100" and o.outcome == "good" for o in observations)
        failed = sum(o.outcome == "bad" for o in observations)
        assert d.reason is not None and "fails at random" in d.reason
        assert f"{failed} of {len(observations)} runs failed" in d.reason
    assert random_ends >= 3


@pytest.mark.parametrize("culprit", [1, 137, 999])
def test_a_deterministic_test_is_not_taken_for_a_random_test(culprit: int) -> None:
    """Told that a good commit cannot fail (``--flaky no``), the engine holds no random-test
    hypothesis; not told, it names the same culprit, the random test left under 1%."""
    r = linear(1000)

    def fails(commit: str) -> bool:
        return int(commit[1:]) >= culprit

    told, _ = search(Search([r], flaky="no"), fails)
    d, _ = search(Search([r]), fails)
    assert told.fails_at_random == 0.0
    assert d.culprit == told.culprit == Culprit("", f"c{culprit}")
    assert d.fails_at_random < 0.01


def test_an_intermittent_regression_is_not_taken_for_a_random_test() -> None:
    """q = 0.5 at the culprit, no flakes: passes far below the culprit and failures above it
    tell it from a test failing at random, though half its runs above the culprit pass."""
    rng = random.Random(5)
    named = 0
    for _ in range(5):
        d, _runs = search(Search([linear(200)]), lambda c: int(c[1:]) >= 120 and rng.random() < 0.5)
        assert d.reason_code != "test-random", d.reason
        named += d.culprit == Culprit("", "c120")
    assert named == 5


# Fails on about half of its runs, in an order fixed by how many runs came before it and by
# nothing else: the commit plays no part, and every run of the test suite sees the same coins.
COIN_SH = """n=$(wc -l < "$COUNTER"); echo . >> "$COUNTER"
test $(( $(echo "coin $n" | cksum | cut -d' ' -f1) % 2 )) = 1 && exit 1; exit 0"""


def test_labgate_bisect_run_says_the_test_fails_at_random(tmp_path: Path) -> None:
    h = repository(tmp_path, n=30, culprit_at=12)
    counter = tmp_path / "counter"
    counter.touch()
    ran = bisect_run(h, "sh", "-c", COIN_SH, options=["--json"], counter=counter)
    assert ran.status == 1, ran.stderr
    result = json.loads(ran.stdout)
    assert result["culprit"] is None
    assert result["reason"] == "test-random"
    assert result["fails_at_random"] > 0.5
    failed = sum(o["outcome"] == "bad" for o in result["observations"])
    assert result["runs"] == len(counted(counter))
    assert (
        f"the test fails at random: {failed} of {result['runs']} runs failed" in (result["message"])
    )
    assert "the last failing run's output: " in result["message"]
    line = [x for x in ran.stderr.splitlines() if x.startswith("no culprit after ")]
    assert len(line) == 1 and "fails at random" in line[0]
