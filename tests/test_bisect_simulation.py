"""A simulated lab for the bisection engine, and the model of git bisect it is compared with.

The tests run a few small cells. ``python tests/test_bisect_simulation.py`` runs the whole grid
(linear and merge-heavy histories of 1,000 and 5,000 commits, p in {0, 0.05, 0.2}, q in {1, 0.5},
k in {1, 4}) and prints accuracy, runs, rounds, git bisect's runs and the slowest decision.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from dataclasses import dataclass

from labgate.bisect.design import git_bisection
from labgate.bisect.engine import Observation, Search, TreeRange
from labgate.bisect.graph import Graph


def linear_history(n: int, rng: random.Random) -> TreeRange:
    del rng
    parents = {f"c{i}": (f"c{i - 1}",) for i in range(1, n + 1)}
    return TreeRange("", parents, ("c0",), f"c{n}")


def merge_history(n: int, rng: random.Random) -> TreeRange:
    """A xen-like history: a mainline and topic branches merged into it, some forked before good."""
    parents: dict[str, tuple[str, ...]] = {}
    main = "g"
    branches: list[str] = []
    i = 0
    while i < n - 1:
        r = rng.random()
        name = f"c{i}"
        if r < 0.08 or not branches:
            branches.append(main if main == "g" or rng.random() < 0.8 else "o")
            continue
        if r < 0.5:
            parents[name] = (main,)
            main = name
        elif r < 0.88:
            j = rng.randrange(len(branches))
            parents[name] = (branches[j],)
            branches[j] = name
        else:
            tip = branches.pop(rng.randrange(len(branches)))
            if tip in ("g", "o"):
                continue
            parents[name] = (main, tip)
            main = name
        i += 1
    tips = [b for b in branches if b not in ("g", "o")][:3]
    bad = f"c{i}"
    parents[bad] = (main, *tips)
    keep = {bad}
    stack = [bad]
    while stack:
        for p in parents.get(stack.pop(), ()):
            if p in parents and p not in keep:
                keep.add(p)
                stack.append(p)
    return TreeRange("", {c: parents[c] for c in keep}, ("g",), bad)


def git_bisect_runs(graph: Graph, culprit: int) -> int:
    """git bisect with a deterministic test: its choice of commit (``design.git_bisection``)
    until one commit is left, no retests."""
    cand = graph.all
    runs = 0
    while cand.bit_count() > 1:
        x = git_bisection(graph, cand)
        runs += 1
        cand = cand & graph.anc[x] if graph.anc[x] >> culprit & 1 else cand & ~graph.anc[x]
    return runs


@dataclass(frozen=True)
class Trial:
    right: bool
    kind: str
    runs: int
    rounds: int
    git_bisect: int
    slowest: float


def trial(history: str, n: int, p: float, q: float, k: int, seed: int) -> Trial:
    rng = random.Random(seed)
    r = (linear_history if history == "linear" else merge_history)(n, rng)
    search = Search([r])
    g = search.graph
    culprit = rng.randrange(g.size)
    observations: list[Observation] = []
    rounds = 0
    slowest = 0.0
    while True:
        t0 = time.perf_counter()
        d = search.decide(observations, k=k)
        slowest = max(slowest, time.perf_counter() - t0)
        if d.kind != "test":
            break
        rounds += 1
        for t in d.tests:
            x = g.locate(t)
            assert x is not None
            bad = x >= 0 and g.anc[x] >> culprit & 1
            fail = rng.random() < (q + (1 - q) * p if bad else p)
            observations.append(Observation(t, "bad" if fail else "good"))
    right = (
        d.kind == "culprit" and d.culprit is not None and d.culprit.commit == g.commits[culprit][1]
    )
    return Trial(right, d.kind, len(observations), rounds, git_bisect_runs(g, culprit), slowest)


def test_git_bisect_model_halves_a_linear_range() -> None:
    g = Graph([linear_history(1024, random.Random(0))])
    assert {git_bisect_runs(g, c) for c in (0, 1, 500, 1023)} <= {10, 11}


def test_merge_heavy_history_is_valid_and_has_merges() -> None:
    r = merge_history(1000, random.Random(1))
    assert sum(len(ps) > 1 for ps in r.parents.values()) > 50
    assert Graph([r]).size == len(r.parents)


def test_deterministic_merge_heavy_cell() -> None:
    trials = [trial("merge", 1000, 0.0, 1.0, 1, seed) for seed in range(10)]
    assert all(t.right for t in trials)
    runs = statistics.mean(t.runs for t in trials)
    assert runs <= 2.5 * statistics.mean(t.git_bisect for t in trials)


def test_flaky_cell_with_four_at_once() -> None:
    trials = [trial("linear", 300, 0.1, 1.0, 4, seed) for seed in range(10)]
    assert all(t.right for t in trials)
    assert statistics.mean(t.rounds for t in trials) <= 12


def main(trials: int = 50) -> None:
    for history in ("linear", "merge"):
        for n in (1000, 5000):
            for q in (1.0, 0.5):
                for p in (0.0, 0.05, 0.2):
                    for k in (1, 4):
                        ts = [trial(history, n, p, q, k, 1000 * s + 7) for s in range(trials)]
                        acc = sum(t.right for t in ts) / len(ts)
                        gb = statistics.mean(t.git_bisect for t in ts)
                        print(
                            f"{history:6} N={n} p={p:<4} q={q:<3} k={k}: accuracy {acc:.3f}"
                            f" runs {statistics.mean(t.runs for t in ts):6.1f}"
                            f" rounds {statistics.mean(t.rounds for t in ts):6.1f}"
                            f" git-bisect {gb:4.1f} (log2 N = {math.log2(n):.1f})"
                            f" slowest decision {1000 * max(t.slowest for t in ts):.0f} ms",
                            flush=True,
                        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
