"""The bisection engine: exact when the test is deterministic, calibrated when it is noisy."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitrepos import GitRepo
from labgate.bisect.engine import (
    BisectError,
    Culprit,
    Decision,
    Observation,
    Search,
    TreeRange,
)
from labgate.bisect.gitgraph import read_range
from labgate.bisect.graph import Graph
from labgate.bisect.posterior import (
    Lookahead,
    Partition,
    Posterior,
    default_noise_prior,
    posterior,
)

Oracle = Callable[[Mapping[str, str]], str]

# --- histories -------------------------------------------------------------------------------


def linear(n: int, tree: str = "", prefix: str = "c") -> TreeRange:
    """good = {prefix}0, then {prefix}1 .. {prefix}n (bad)."""
    parents = {f"{prefix}{i}": (f"{prefix}{i - 1}",) for i in range(1, n + 1)}
    return TreeRange(tree, parents, (f"{prefix}0",), f"{prefix}{n}")


def random_dag(rng: random.Random, n: int, tree: str = "") -> TreeRange:
    """A history with merges: first parents close behind, second parents anywhere earlier."""
    parents: dict[str, tuple[str, ...]] = {}
    for i in range(n):
        first = rng.randint(max(-1, i - 4), i - 1)
        ps = [first]
        if rng.random() < 0.3:
            second = rng.randint(-1, i - 1)
            if second != first:
                ps.append(second)
        parents[f"c{i}"] = tuple("g" if p < 0 else f"c{p}" for p in ps)
    bad = f"c{n - 1}"
    keep = ancestors(parents, bad)
    return TreeRange(tree, {c: parents[c] for c in keep}, ("g",), bad)


def ancestors(parents: Mapping[str, tuple[str, ...]], commit: str) -> set[str]:
    """Naive ancestor set (itself included), restricted to the keys of ``parents``."""
    seen = {commit}
    stack = [commit]
    while stack:
        for p in parents.get(stack.pop(), ()):
            if p in parents and p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def deterministic(ranges: list[TreeRange], culprit: Culprit) -> Oracle:
    """A test that fails exactly when the tuple's revision of the culprit's tree contains it."""
    r = next(r for r in ranges if r.tree == culprit.tree)

    def run(point: Mapping[str, str]) -> str:
        c = point[culprit.tree]
        inside = c in r.parents and culprit.commit in ancestors(r.parents, c)
        return "bad" if inside else "good"

    return run


def noisy(oracle: Oracle, p: float, q: float, rng: random.Random) -> Oracle:
    def run(point: Mapping[str, str]) -> str:
        if oracle(point) == "bad":
            return "bad" if rng.random() < q + (1 - q) * p else "good"
        return "bad" if rng.random() < p else "good"

    return run


def bisect(
    search: Search, oracle: Oracle, *, k: int = 1, limit: int = 1200
) -> tuple[Decision, int]:
    """Run the search to its end; returns the last decision and the number of runs."""
    observations: list[Observation] = []
    for _ in range(limit):
        d = search.decide(observations, k=k)
        if d.kind != "test":
            return d, len(observations)
        assert d.tests, "a test decision with nothing pending must name tests"
        for t in d.tests:
            observations.append(Observation(t, oracle(t)))  # type: ignore[arg-type]
    raise AssertionError("the search did not end")


# --- deterministic tests: always the exact culprit -------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), n=st.integers(1, 60), k=st.sampled_from([1, 2, 4]))
def test_deterministic_test_always_finds_the_exact_culprit(seed: int, n: int, k: int) -> None:
    rng = random.Random(seed)
    r = random_dag(rng, n)
    culprit = Culprit("", rng.choice(sorted(r.parents)))
    d, _ = bisect(Search([r]), deterministic([r], culprit), k=k)
    assert d.kind == "culprit"
    assert d.culprit == culprit
    assert d.confidence >= 0.99


def test_deterministic_linear_history_costs_few_runs_more_than_git_bisect() -> None:
    runs = []
    for seed in range(20):
        rng = random.Random(seed)
        r = linear(1000)
        culprit = Culprit("", f"c{rng.randint(1, 1000)}")
        d, n = bisect(Search([r]), deterministic([r], culprit))
        assert d.culprit == culprit
        runs.append(n)
    # git bisect needs log2(1000) ~ 10 runs; ruling out an intermittent or flaky test costs ~10 more
    assert sum(runs) / len(runs) <= 24


def test_culprit_is_seen_failing_and_its_parents_passing() -> None:
    rng = random.Random(3)
    r = random_dag(rng, 80)
    for name in sorted(r.parents)[::7]:
        culprit = Culprit("", name)
        oracle = deterministic([r], culprit)
        observations: list[Observation] = []
        while (d := Search([r]).decide(observations)).kind == "test":
            observations += [Observation(t, oracle(t)) for t in d.tests]  # type: ignore[misc]
        seen = {(o.point[""], o.outcome) for o in observations}
        assert d.culprit == culprit
        assert (name, "bad") in seen or name == r.bad
        for p in r.parents[name]:
            assert p in r.good or p not in r.parents or (p, "good") in seen


# --- noisy tests: wrong culprits stay rarer than 1 - confidence -------------------------------


@pytest.mark.parametrize(("p", "q"), [(0.1, 1.0), (0.0, 0.6), (0.15, 0.7)])
def test_noisy_wrong_culprit_rate_stays_below_one_minus_confidence(p: float, q: float) -> None:
    confidence = 0.9
    named = wrong = 0
    for seed in range(60):
        rng = random.Random(seed)
        r = random_dag(rng, 48) if seed % 2 else linear(48)
        culprit = Culprit("", rng.choice(sorted(r.parents)))
        oracle = noisy(deterministic([r], culprit), p, q, rng)
        d, _ = bisect(Search([r], confidence=confidence), oracle)
        if d.kind == "culprit":
            named += 1
            wrong += d.culprit != culprit
    assert named >= 55
    assert wrong / named < 1 - confidence


def test_learns_the_flake_rate_from_contradictions() -> None:
    r = linear(16)
    clean = Search([r]).decide([Observation({"": "c8"}, "good")])
    obs = [Observation({"": "c0"}, "bad"), Observation({"": "c0"}, "good")] * 3
    flaky = Search([r]).decide([*obs, Observation({"": "c8"}, "good")])
    assert clean.flake_rate < 0.1
    assert flaky.flake_rate > clean.flake_rate + 0.05


# --- merges and first-parent mode ------------------------------------------------------------


def merged_branch() -> TreeRange:
    """m1 - m2 - m3 - m4 (merge of m3 and s2) - m5, with the side branch s1 - s2 off m2."""
    parents = {
        "m1": ("g",),
        "m2": ("m1",),
        "m3": ("m2",),
        "s1": ("m2",),
        "s2": ("s1",),
        "m4": ("m3", "s2"),
        "m5": ("m4",),
    }
    return TreeRange("", parents, ("g",), "m5")


def test_full_dag_names_the_commit_on_the_side_branch() -> None:
    r = merged_branch()
    d, _ = bisect(Search([r]), deterministic([r], Culprit("", "s1")))
    assert d.culprit == Culprit("", "s1")


def test_first_parent_mode_names_the_merge_and_tests_only_the_first_parent_chain() -> None:
    r = merged_branch()
    oracle = deterministic([r], Culprit("", "s1"))
    observations: list[Observation] = []
    search = Search([r], first_parent=True)
    while (d := search.decide(observations, k=2)).kind == "test":
        assert all(t[""] in {"m1", "m2", "m3", "m4", "m5"} for t in d.tests)
        observations += [Observation(t, oracle(t)) for t in d.tests]  # type: ignore[misc]
    assert d.culprit == Culprit("", "m4")


# --- several trees ---------------------------------------------------------------------------


def three_trees() -> list[TreeRange]:
    return [linear(30, "xen", "x"), linear(40, "linux", "l"), linear(20, "qemu", "q")]


@pytest.mark.parametrize("culprit", [("xen", "x1"), ("linux", "l17"), ("qemu", "q20")])
def test_several_trees_name_the_tree_and_commit(culprit: tuple[str, str]) -> None:
    ranges = three_trees()
    oracle = deterministic(ranges, Culprit(*culprit))
    observations: list[Observation] = []
    search = Search(ranges)
    while (d := search.decide(observations, k=3)).kind == "test":
        for t in d.tests:
            assert set(t) == {"xen", "linux", "qemu"}
            # the chain: trees before the varying one at bad, trees after it at good
            goods = {r.tree: r.good[0] for r in ranges}
            varying = [name for name, c in t.items() if c != goods[name]]
            order = ["xen", "linux", "qemu"]
            if varying:
                last = max(order.index(v) for v in varying)
                assert all(t[order[i]] == ranges[i].bad for i in range(last))
        observations += [Observation(t, oracle(t)) for t in d.tests]  # type: ignore[misc]
    assert d.culprit == Culprit(*culprit)


def test_observation_off_the_chain_is_ignored() -> None:
    ranges = three_trees()
    off = Observation({"xen": "x3", "linux": "l5", "qemu": "q0"}, "bad")
    d = Search(ranges).decide([off])
    assert d.kind == "test"
    assert d.executions == 1
    assert d.confidence < 0.05


# --- skips -----------------------------------------------------------------------------------


def test_skipped_commits_are_never_retested_and_hiding_ones_leave_candidates() -> None:
    r = linear(40)
    truth = deterministic([r], Culprit("", "c21"))
    untestable = {"c20", "c21"}
    observations: list[Observation] = []
    search = Search([r])
    skipped: set[str] = set()
    while (d := search.decide(observations, k=2)).kind == "test":
        for t in d.tests:
            assert t[""] not in skipped
            outcome = "skip" if t[""] in untestable else truth(t)
            if outcome == "skip":
                skipped.add(t[""])
            observations.append(Observation(t, outcome))  # type: ignore[arg-type]
    assert d.kind == "undecided"
    assert d.reason and "untestable" in d.reason
    assert {c.commit for c, _ in d.candidates} == {"c20", "c21", "c22"}
    assert sum(w for _, w in d.candidates) >= 0.99


def test_a_skip_away_from_the_culprit_does_not_matter() -> None:
    r = linear(64)
    truth = deterministic([r], Culprit("", "c50"))
    d, _ = bisect(Search([r]), lambda t: "skip" if t[""] == "c32" else truth(t))
    assert d.culprit == Culprit("", "c50")


# --- batches, pending points, budget ---------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 4])
def test_k_picks_are_distinct_and_split_the_range(k: int) -> None:
    d = Search([linear(1000)]).decide([], k=k)
    picks = sorted(int(t[""][1:]) for t in d.tests)
    assert len(set(picks)) == k
    # k + 1 parts, none of them holding more than about half of the range
    edges = [0, *picks, 1000]
    parts = [b - a for a, b in itertools.pairwise(edges)]
    assert max(parts) <= 1000 * (1 / (k + 1) + 0.2)
    assert min(parts) >= 1000 / (k + 1) / 3


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), k=st.integers(1, 5))
def test_pending_points_are_proposed_again_only_to_settle_a_candidate(seed: int, k: int) -> None:
    rng = random.Random(seed)
    r = random_dag(rng, 50)
    oracle = deterministic([r], Culprit("", rng.choice(sorted(r.parents))))
    search = Search([r])
    observations: list[Observation] = []
    pending: list[Mapping[str, str]] = []
    for _ in range(12):
        d = search.decide(observations, k=k, pending=pending)
        if d.kind != "test":
            break
        names = [t[""] for t in d.tests]
        assert len(names) <= k
        # a point is proposed twice, or again while it runs, only to settle the leading
        # candidate: then it is that candidate or one of its parents
        again = {n for n in names if names.count(n) > 1} | (set(names) & {p[""] for p in pending})
        top = d.candidates[0][0].commit
        assert again <= {top, *r.parents.get(top, ())}
        pending += d.tests
        # the oldest pending run finishes
        done = pending.pop(0)
        observations.append(Observation(done, oracle(done)))  # type: ignore[arg-type]


def test_budget_spent_is_undecided_with_the_reason() -> None:
    r = linear(200)
    rng = random.Random(1)
    oracle = noisy(deterministic([r], Culprit("", "c77")), 0.3, 0.5, rng)
    d, n = bisect(Search([r], max_executions=25), oracle)
    assert d.kind == "undecided"
    assert n == 25
    assert d.reason and "budget" in d.reason
    assert len(d.candidates) >= 5


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ([], "no range"),
        ([TreeRange("", {}, ("g",), "b")], "empty"),
        ([TreeRange("", {"a": ("g",)}, ("g",), "b")], "bad commit b"),
        ([TreeRange("", {"a": ("g",), "b": ("a",)}, ("a",), "b")], "inside the range"),
        ([TreeRange("", {"a": ("x",), "b": ("a",)}, ("g",), "b")], "ancestor of bad"),
        ([TreeRange("", {"a": ("g",), "b": ("a",), "z": ("g",)}, ("g",), "b")], "not an ancestor"),
        ([TreeRange("", {"b": ("g",)}, (), "b")], "no good"),
        ([linear(3, "x"), linear(3, "x")], "twice"),
    ],
)
def test_invalid_input_raises_a_clear_bisect_error(ranges: list[TreeRange], message: str) -> None:
    with pytest.raises(BisectError, match=message):
        Search(ranges)


def test_observation_naming_unknown_trees_is_an_error() -> None:
    with pytest.raises(BisectError, match="trees"):
        Search([linear(5, "xen")]).decide([Observation({"linux": "c1"}, "bad")])
    assert issubclass(BisectError, ValueError)


# --- the graph -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 50))
def test_ancestor_bitsets_match_a_naive_walk(seed: int, n: int) -> None:
    r = random_dag(random.Random(seed), n)
    g = Search([r]).graph
    for i, (_, commit) in enumerate(g.commits):
        got = {g.commits[j][1] for j in range(g.size) if g.anc[i] >> j & 1}
        assert got == ancestors(r.parents, commit)
        assert all(p < i for p in g.parents[i]), "indices follow a topological order"


def test_runs_at_the_good_boundary_teach_the_flake_rate() -> None:
    r = linear(16)
    quiet = Search([r]).decide([Observation({"": "c0"}, "good")] * 4)
    flaky = Search([r]).decide(
        [Observation({"": "c0"}, "bad")] * 2 + [Observation({"": "c0"}, "good")] * 2
    )
    assert flaky.flake_rate > quiet.flake_rate + 0.05


def test_a_pending_split_is_not_returned_again_even_when_it_is_the_best() -> None:
    r = linear(2)
    d = Search([r]).decide([], k=1, pending=[{"": "c1"}])
    assert d.kind == "test"
    assert all(t[""] != "c1" for t in d.tests)


def test_several_trees_with_merges_deterministic() -> None:
    rng = random.Random(11)
    ranges = [random_dag(rng, 30, "xen"), random_dag(rng, 30, "linux")]
    ranges[1] = TreeRange(
        "linux",
        {c: tuple("lg" if p == "g" else f"l{p}" for p in ps) for c, ps in _renamed(ranges[1])},
        ("lg",),
        "l" + ranges[1].bad,
    )
    for tree in ("xen", "linux"):
        r = next(r for r in ranges if r.tree == tree)
        for commit in sorted(r.parents)[::6]:
            culprit = Culprit(tree, commit)
            d, _ = bisect(Search(ranges), deterministic(ranges, culprit), k=2)
            assert d.culprit == culprit


def _renamed(r: TreeRange) -> list[tuple[str, tuple[str, ...]]]:
    return [("l" + c, ps) for c, ps in r.parents.items()]


def test_never_more_tests_than_the_budget_has_left() -> None:
    r = linear(100)
    observations = [Observation({"": "c50"}, "good")] * 8
    d = Search([r], max_executions=10).decide(observations, k=4)
    assert d.kind == "test"
    assert len(d.tests) == 2
    d = Search([r], max_executions=10).decide(observations, k=4, pending=[{"": "c70"}] * 2)
    assert d.tests == ()


# --- the guard's lookahead agrees with the posterior -----------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), runs=st.integers(0, 80))
def test_lookahead_agrees_with_the_posterior_it_predicts(seed: int, runs: int) -> None:
    """The settling step's fast update gives what the posterior computes from scratch."""
    rng = random.Random(seed)
    r = random_dag(rng, 12)
    g = Graph([r])
    noise = default_noise_prior()
    fails: Counter[int] = Counter()
    passes: Counter[int] = Counter()
    culprit = rng.randrange(g.size)
    for _ in range(runs):  # mostly what the culprit implies, a few flakes
        x = rng.randrange(g.size)
        bad = bool(g.anc[x] >> culprit & 1) != (rng.random() < 0.1)
        (fails if bad else passes)[x] += 1
    x = rng.randrange(g.size)
    fail = rng.random() < 0.5
    part = Partition(g)
    part.refine(sorted({*fails, *passes, x}))
    # every candidate, the test-blaming hypotheses too (the good end failing, the bad end not
    # failing, the test failing at random): the guard's answer for one of those is all three
    blaming = {g.good_end, g.no_culprit, g.no_culprit + 1}
    everything = range(g.no_culprit + 2)

    def leader(post: Posterior) -> int:
        return max(everything, key=lambda i: _member_probability(post, i))

    def settled(post: Posterior) -> float:
        answer = blaming if top in blaming else {top}
        return min(sum(_member_probability(post, i) for i in answer), post.guarded)

    before = posterior(part, fails, passes, noise)
    top = leader(before)
    ahead = Lookahead(part, fails, passes, noise, top)
    assert ahead.settled() == pytest.approx(settled(before), abs=1e-9)
    ahead.add(x, fail)
    (fails if fail else passes)[x] += 1
    after = posterior(part, fails, passes, noise)
    if top == leader(after) or (top in blaming and leader(after) in blaming):
        assert ahead.settled() == pytest.approx(settled(after), abs=1e-9)


def _member_probability(post: Posterior, i: int) -> float:
    return next(mass / size for bits, size, mass, *_ in post.classes if bits >> i & 1)


def test_settling_never_stalls_on_a_run_that_cannot_move_the_risk() -> None:
    """A recorded search (5,000 commits, p = 0.2, q = 0.5) where every check of the leading
    candidate was expected, for a while, to raise the risk: the engine used to pick a point that
    informs only the flake rate, forever, and spent its whole budget there."""
    recorded = json.loads((Path(__file__).parent / "data" / "bisect_stall.json").read_text())
    observations = [Observation({"": f"c{i}"}, outcome) for i, outcome in recorded]
    search = Search([linear(4999)], max_executions=len(observations) + 600)
    oracle = noisy(deterministic([linear(4999)], Culprit("", "c4692")), 0.2, 0.5, random.Random(7))
    while (d := search.decide(observations)).kind == "test":
        observations += [Observation(t, oracle(t)) for t in d.tests]  # type: ignore[arg-type]
    assert d.kind == "culprit", d.reason


# --- the ends: a broken test is found out, not blamed on a commit ----------------------------


def constant(outcome: str) -> Oracle:
    return lambda point: outcome


def random_fail(rng: random.Random) -> Oracle:
    return lambda point: "bad" if rng.random() < 0.5 else "good"


@pytest.mark.parametrize(
    ("oracle", "code", "end"),
    [
        (constant("good"), "bad-end-passes", "c200"),
        (constant("bad"), "good-end-fails", "c0"),
    ],
)
def test_a_test_that_never_changes_names_no_culprit_and_says_which_end(
    oracle: Oracle, code: str, end: str
) -> None:
    r = linear(200)
    observations: list[Observation] = []
    d = Search([r]).decide(observations)
    while d.kind == "test":
        observations += [Observation(t, oracle(t)) for t in d.tests]  # type: ignore[arg-type]
        d = Search([r]).decide(observations)
    assert d.kind == "undecided"
    assert d.culprit is None
    assert d.reason_code == code
    # the end it accuses was run, and ran as accused
    assert any(o.point[""] == end for o in observations)
    assert d.reason is not None and ("bad end" if code == "bad-end-passes" else "good end") in (
        d.reason
    )


def test_a_test_failing_at_random_names_no_culprit() -> None:
    for seed in range(3):
        r = linear(100)
        d, _ = bisect(Search([r]), random_fail(random.Random(seed)), limit=3000)
        assert d.kind == "undecided", d
        assert d.culprit is None


def test_an_end_is_run_only_when_the_answer_depends_on_it() -> None:
    """A culprit inside the range: failures above it show the bad end fails, passes below it
    show the good end passes; neither end is run."""
    r = linear(1000)
    culprit = Culprit("", "c500")
    observations: list[Observation] = []
    oracle = deterministic([r], culprit)
    search = Search([r])
    d = search.decide(observations)
    while d.kind == "test":
        observations += [Observation(t, oracle(t)) for t in d.tests]  # type: ignore[arg-type]
        d = search.decide(observations)
    assert d.culprit == culprit
    assert {o.point[""] for o in observations}.isdisjoint({"c0", "c1000"})
    assert d.bad_end_passes < 1e-3 and d.good_end_fails < 1e-3


@pytest.mark.parametrize(("culprit", "end"), [("c1", "c0"), ("c64", "c64")])
def test_a_culprit_next_to_an_end_is_confirmed_by_running_that_end(culprit: str, end: str) -> None:
    r = linear(64)
    d, _ = bisect(Search([r]), deterministic([r], Culprit("", culprit)))
    assert d.culprit == Culprit("", culprit)
    ran: list[Observation] = []
    search = Search([r], flaky="no", intermittent="no")
    d = search.decide(ran)
    while d.kind == "test":
        ran += [Observation(t, deterministic([r], Culprit("", culprit))(t)) for t in d.tests]  # type: ignore[arg-type]
        d = search.decide(ran)
    assert d.culprit == Culprit("", culprit)
    assert end in {o.point[""] for o in ran}


# --- what the user knows: --flaky / --intermittent ---------------------------------------------


def seeded_history(path: Path, rng: random.Random, commits: int, merges: bool) -> GitRepo:
    """A real repository: a good base, then ``commits`` commits on master, or with ``merges``
    topic branches forked from master, given a few commits and merged back (--no-ff)."""
    repo = GitRepo.init(path)
    repo.commit("base")
    repo.branch("good")
    open_topics: list[str] = []
    for i in range(commits):
        roll = rng.random() if merges else 1.0
        if roll < 0.15 and len(open_topics) < 3:
            repo.branch(f"t{i}")
            open_topics.append(f"t{i}")
        elif roll < 0.45 and open_topics:
            topic = rng.choice(open_topics)
            repo.checkout(topic)
            repo.commit(f"{topic} {i}", files={f"{topic}.txt": f"{i}\n"})
            repo.checkout("master")
        elif roll < 0.55 and open_topics:
            repo.merge(open_topics.pop(rng.randrange(len(open_topics))))
        else:
            repo.commit(f"master {i}", files={"master.txt": f"{i}\n"})
    for topic in open_topics:
        repo.merge(topic)
    return repo


def git_bisect_run(repo: GitRepo, culprit: str, counter: Path) -> int:
    """The runs a real ``git bisect run`` makes from good to master, the test failing exactly
    where ``culprit`` is an ancestor (itself included)."""
    counter.unlink(missing_ok=True)
    test = 'echo . >> "$COUNTER"; git merge-base --is-ancestor "$CULPRIT" HEAD && exit 1; exit 0'
    env = {"COUNTER": str(counter), "CULPRIT": culprit}
    repo.git("bisect", "start", "master", "good", env=env)
    done = repo.git("bisect", "run", "sh", "-c", test, env=env)
    repo.git("bisect", "reset")
    assert f"{culprit} is the first bad commit" in done
    return len(counter.read_text().splitlines()) if counter.exists() else 0


@pytest.mark.parametrize(("commits", "merges"), [(7, False), (40, False), (60, True)])
def test_told_deterministic_makes_git_bisects_runs_plus_an_end(
    tmp_path: Path, commits: int, merges: bool
) -> None:
    """Told the test is deterministic, the search makes the runs ``git bisect run`` makes on the
    same real repository, plus one at an end where git's answer rests on an end it never ran."""
    repo = seeded_history(tmp_path / "repo", random.Random(commits), commits, merges)
    r = read_range(repo.path, ["good"], "master")
    assert merges == any(len(ps) > 1 for ps in r.parents.values())
    names = sorted(r.parents)
    for culprit in {r.bad, *random.Random(5).sample(names, min(len(names), 8))}:
        search = Search([r], flaky="no", intermittent="no")
        observations: list[Observation] = []
        oracle = deterministic([r], Culprit("", culprit))
        while (d := search.decide(observations)).kind == "test":
            observations += [Observation(t, oracle(t)) for t in d.tests]  # type: ignore[misc]
        assert d.culprit == Culprit("", culprit)
        ends = [o for o in observations if o.point[""] in (r.bad, *r.good)]
        git_runs = git_bisect_run(repo, culprit, tmp_path / "counter")
        assert len(observations) == git_runs + len(ends), (culprit, observations)
        assert len(ends) <= 1


def test_told_deterministic_on_one_commit_runs_both_ends() -> None:
    """Only a range of one commit, where git bisect runs nothing, needs both ends run."""
    d, runs = bisect(Search([linear(1)], flaky="no", intermittent="no"), constant("bad"))
    assert d.reason_code == "good-end-fails" and runs == 2


def test_told_deterministic_keeps_merges_skips_and_k_at_once() -> None:
    rng = random.Random(3)
    for _ in range(20):
        r = random_dag(rng, 40)
        culprit = Culprit("", rng.choice(sorted(r.parents)))
        search = Search([r], flaky="no", intermittent="no")
        d, _ = bisect(search, deterministic([r], culprit), k=3)
        assert d.culprit == culprit


@pytest.mark.parametrize(
    ("flaky", "intermittent", "ps", "qs"),
    [
        ("no", "no", {0.0}, {1.0}),
        ("no", "auto", {0.0}, {1.0, 0.7, 0.5, 0.3}),
        ("auto", "no", {0.0, 0.05, 0.1, 0.2, 0.3}, {1.0}),
        ("yes", "no", {0.05, 0.1, 0.2, 0.3}, {1.0}),
        ("no", "yes", {0.0}, {0.7, 0.5, 0.3}),
    ],
)
def test_noise_prior_keeps_only_what_the_user_allows(
    flaky: str, intermittent: str, ps: set[float], qs: set[float]
) -> None:
    from labgate.bisect.posterior import noise_prior

    prior = noise_prior(flaky, intermittent)  # type: ignore[arg-type]
    assert {h.p for h in prior} == ps
    assert {h.q for h in prior} == qs
    assert all(h.prior > 0 for h in prior)
    assert noise_prior() == default_noise_prior()


def test_told_not_intermittent_the_prior_leans_to_rare_flakes() -> None:
    """With --intermittent no the prior over p sums to 1, and the less flaky, the likelier."""
    from labgate.bisect.posterior import noise_prior

    for flaky in ("auto", "yes"):
        prior = noise_prior(flaky, "no")  # type: ignore[arg-type]
        assert sum(h.prior for h in prior) == pytest.approx(1.0)
        weights = [h.prior for h in sorted(prior, key=lambda h: h.p)]
        assert weights == sorted(weights, reverse=True)


def test_told_not_intermittent_leaning_to_rare_flakes_saves_runs_on_a_flaky_test() -> None:
    """Told a bad commit always fails, the prior that leans to p = 0.05 finds the culprits of a
    test flaking 5% of the time in fewer runs than the same grid weighted as the default mode
    weighs it, and costs a deterministic test no more than a fraction of a run."""
    from labgate.bisect.posterior import Noise, noise_prior

    grid = [h for h in noise_prior() if h.q == 1.0]
    total = sum(h.prior for h in grid)
    as_default = [Noise(h.p, h.q, h.prior / total) for h in grid]
    r = linear(1000)
    runs: dict[tuple[float, bool], list[int]] = {}
    for p in (0.0, 0.05):
        for culprit in random.Random(4).sample(range(1, 1001), 40):
            oracle = deterministic([r], Culprit("", f"c{culprit}"))
            for leaning in (True, False):
                rng = random.Random(f"{p}:{culprit}")
                noise = None if leaning else as_default
                search = Search([r], intermittent="no", noise=noise)
                d, n = bisect(search, noisy(oracle, p, 1.0, rng))
                assert d.culprit == Culprit("", f"c{culprit}")
                runs.setdefault((p, leaning), []).append(n)
    mean = {key: sum(ns) / len(ns) for key, ns in runs.items()}
    assert mean[(0.05, True)] < mean[(0.05, False)]
    assert mean[(0.0, True)] <= mean[(0.0, False)] + 0.25


def test_told_not_intermittent_a_bad_commit_that_passes_is_a_flake_of_the_good_side() -> None:
    """With --intermittent no, one pass at the bad end is enough to say the bad end passes."""
    r = linear(50)
    search = Search([r], intermittent="no", flaky="no")
    d, runs = bisect(search, constant("good"))
    assert d.reason_code == "bad-end-passes"
    assert runs <= 7  # git bisect's 6 halvings, then the bad end once


@pytest.mark.parametrize(
    ("flakes", "runs", "ps"),
    [
        (0, 0, {0.0, 0.05, 0.1, 0.2, 0.3}),  # no history: the whole grid
        (0, 1, {0.0, 0.05, 0.1, 0.2, 0.3}),  # one clean run rules nothing out
        (0, 20, {0.0, 0.05, 0.1, 0.2}),  # 0.7**20 < 1%
        (0, 60, {0.0, 0.05}),  # 0.9**60 < 1%
        (3, 60, {0.05, 0.1}),  # seen failing where it passes: not p = 0; nor 0.2, 0.3
    ],
)
def test_the_history_of_a_test_rules_out_the_flake_rates_it_contradicts(
    flakes: int, runs: int, ps: set[float]
) -> None:
    from labgate.bisect.posterior import history_noise_prior, noise_prior

    prior = history_noise_prior(flakes, runs)
    assert {h.p for h in prior} == ps
    assert {h.q for h in prior} == {h.q for h in noise_prior() if h.p in ps}
    assert sum(h.prior for h in prior) == pytest.approx(1.0)
    assert history_noise_prior(flakes, runs, "no", "no") == (
        noise_prior("no", "no") if 0.0 in ps else ()
    )


def test_a_long_clean_history_saves_runs_on_a_deterministic_test() -> None:
    """The guard clears every hypothesis the prior holds: one the history rules out costs no
    run, so a test with a long clean history is bisected in fewer runs, to the same culprit."""
    from labgate.bisect.posterior import history_noise_prior

    runs = {}
    r = linear(30)
    culprit = Culprit("", "c17")
    for history in (0, 60):
        search = Search([r], noise=history_noise_prior(0, history))
        d, runs[history] = bisect(search, deterministic([r], culprit))
        assert d.culprit == culprit
    assert runs[60] < runs[0]
