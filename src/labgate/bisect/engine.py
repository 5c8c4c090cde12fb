"""The bisection engine: commit graph + observations -> next test points, or the culprit.

Pure, no I/O. ``Search(ranges).decide(observations, k=..., pending=...)`` is called once per round
with every run so far; it returns the next points to test, the culprit, or "undecided".

How it decides (the modules it uses are named for their concept):

- ``graph``: the ranges of all trees as one chain of DAGs, ancestor sets as int bitsets.
- ``posterior``: the culprit is the first commit whose inclusion makes the test fail; a run fails
  at a good point with the flake rate p, at a bad one with q + (1 - q) p. p and q are learnt from
  the runs under a spike-and-slab prior (most mass on the deterministic test).
- ``design``: the next k points by mutual information with the culprit, jointly for a batch.
- settling: once the mixture favours one candidate, each run goes where it shrinks the guard's
  largest risk most in expectation (its own checks, usually).

A culprit is named when (1) it clears every noise hypothesis of the grid (``posterior.ALPHA``: so
a flaky or intermittent test that happens to look deterministic is not trusted on the prior's word,
and the rate of wrong culprits stays under 1 - confidence for each p and q, not only on average),
and (2) it has been seen to fail and each of its parents to pass, directly (for a root of the range:
the good end, or for the first commit of a later tree's range, the previous tree's bad commit).

The ends are hypotheses too (``graph``): "the bad end does not fail" and "the good end already
fails" compete with the commits under the same guard, and when one of them is the one that clears
it (and its end was seen to pass, or to fail) the decision is "undecided" with ``reason_code``
``bad-end-passes`` or ``good-end-fails``: the test, not a commit, is what to look at. An end is
run only when the answer depends on it: failures above a culprit inside the range already make
"the bad end does not fail" unlikely. So is "the test fails at random, whatever the commit"
(``posterior.RANDOM_PRIOR``; only when the test may fail at a good commit): once it clears the
guard and the good end was seen to fail and the bad end to pass, the decision is "undecided" with
``reason_code`` ``test-random``.

``flaky`` and ``intermittent`` say what the caller knows of the test (``posterior.noise_prior``):
told both ``no``, the search costs git bisect's runs, plus at most one at an end it must verify.
With ``first_parent`` the search walks the first-parent chain only: a merge stands for everything
it brings in, its parent is its first parent, and the culprit may be a merge.

Conventions: an observation's point may be a dict; tuples off the chain (see :class:`Search`) and
commits outside the ranges are counted as runs but carry no information. ``skip`` marks a point
untestable for good: it is never proposed again; when untestable commits leave several candidates
that no testable point can tell apart, the decision is "undecided" with those candidates. Every
observation, skips included, counts against ``max_executions``. A "test" decision may carry no
tests when everything worth running is pending: wait for those runs. While searching, the points of
a batch are distinct and none is pending; while settling, the leading candidate and its parents may
be proposed more than once, or again while they run: two runs of a noisy test at once are two
pieces of evidence.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from labgate.bisect.design import choose, git_bisection
from labgate.bisect.graph import BisectError, Graph, TreeRange, members
from labgate.bisect.posterior import (
    Knowledge,
    Lookahead,
    Noise,
    Partition,
    Posterior,
    noise_prior,
    posterior,
)

__all__ = [
    "Answer",
    "BisectError",
    "Culprit",
    "Decision",
    "Knowledge",
    "Observation",
    "Search",
    "TestPoint",
    "TreeRange",
]

Answer = Literal["good", "bad", "skip"]
"""What one run of the test says of a point: git bisect's good, bad and skip (a run's outcome in
the lab is :class:`labgate.model.Outcome`; an answer is what the search reads from it)."""

DEFAULT_MAX_EXECUTIONS = 2000  # an intermittent regression of a flaky test (q = 0.5, p = 0.2)
# takes about 250 runs on 1,000 commits, 700 in one search of a hundred: this lets those finish
SETTLE = 0.9  # the mixture probability from which runs go to settling the leading candidate
_TOP = 5  # candidates listed in a decision
TestPoint = Mapping[str, str]
ReasonCode = Literal[
    "bad-end-passes",
    "good-end-fails",
    "test-random",
    "skipped-commits",
    "max-runs",
    "nothing-to-test",
]


@dataclass(frozen=True)
class Observation:
    """One run of the test at a revision tuple (tree -> commit) and what it gave."""

    point: Mapping[str, str]
    outcome: Answer


@dataclass(frozen=True)
class Culprit:
    tree: str
    commit: str


@dataclass(frozen=True)
class Decision:
    """What to do next: run ``tests``, or the ``culprit`` is found, or the search is stuck.

    ``confidence`` is the smaller of the leading candidate's probability and 1 - the guard's
    largest risk over the noise hypotheses (what is compared with the confidence asked for; see
    ``posterior.ALPHA``); ``candidates``
    give the posterior averaged over the noise, best first. ``flake_rate`` and ``detection_rate``
    are the posterior means of p and q; ``executions`` counts the observations given (runs,
    skips included). ``good_end_fails`` and ``bad_end_passes`` are the probabilities of the end
    hypotheses. An "undecided" decision has a ``reason`` (a sentence) and a ``reason_code``:
    ``bad-end-passes``, ``good-end-fails`` and ``test-random`` (the test is suspect, see the
    module's docstring; ``fails_at_random`` is the probability of the last),
    ``skipped-commits`` (untestable commits hide the culprit among ``candidates``), ``max-runs``
    (the budget is spent), ``nothing-to-test`` (no testable point tells the candidates apart).
    """

    kind: Literal["test", "culprit", "undecided"]
    tests: tuple[Mapping[str, str], ...] = ()
    culprit: Culprit | None = None
    confidence: float = 0.0
    candidates: tuple[tuple[Culprit, float], ...] = ()
    reason: str | None = None
    flake_rate: float = 0.0
    detection_rate: float = 1.0
    executions: int = 0
    reason_code: ReasonCode | None = None
    good_end_fails: float = 0.0
    bad_end_passes: float = 0.0
    fails_at_random: float = 0.0


class Search:
    """A bisection over one or more trees; holds the precomputed graph so each round is cheap.

    Several trees form one chain: tree 1's range on top of all trees good, tree 2's range on top of
    tree 1 at its bad commit, and so on. The point of (tree i, commit c) is tree 1..i-1 at their bad
    commit, tree i at c, the later trees at their first good commit. An observation whose tuple is
    not on that chain (a tree other than the varying one off its bad/good commits) is counted as a
    run but otherwise ignored; any good commit of a tree counts as that tree's good side.

    ``flaky`` (can a good commit fail?) and ``intermittent`` (can a bad commit pass?) are ``no``,
    ``yes`` or ``auto`` (learn it from the runs); ``noise`` replaces the prior over (p, q) they
    make, for a caller that knows more (a lab's learned flake rate, say).
    """

    def __init__(
        self,
        ranges: Sequence[TreeRange],
        *,
        first_parent: bool = False,
        confidence: float = 0.99,
        max_executions: int | None = None,
        seed: int = 0,
        flaky: Knowledge = "auto",
        intermittent: Knowledge = "auto",
        noise: Sequence[Noise] | None = None,
    ) -> None:
        if not 0.5 <= confidence < 1.0:
            raise BisectError(f"confidence {confidence} must be in [0.5, 1)")
        self.graph = Graph(ranges, first_parent=first_parent)
        self.confidence = confidence
        self.max_executions = DEFAULT_MAX_EXECUTIONS if max_executions is None else max_executions
        self.seed = seed  # the search is deterministic; kept for the API and future tie-breaking
        self.noise = noise_prior(flaky, intermittent) if noise is None else tuple(noise)
        if not self.noise or any(h.prior <= 0.0 for h in self.noise):
            raise BisectError("the noise prior needs at least one hypothesis, each of weight > 0")
        # a test that never fails at a good commit cannot fail at random either
        self._random = any(h.p > 0.0 for h in self.noise)
        self._partition = Partition(self.graph, random=self._random)
        # told (or given a prior that says) the test is deterministic: git bisect's choices, and
        # a culprit needs no run of its own or of its parents beyond what implies them
        self._deterministic = all(h.p == 0.0 and h.q == 1.0 for h in self.noise)

    def decide(
        self,
        observations: Sequence[Observation],
        *,
        k: int = 1,
        pending: Sequence[Mapping[str, str]] = (),
    ) -> Decision:
        """The next step of the search given every run so far and the points still running."""
        if k < 1:
            raise BisectError(f"k = {k}: at least one test must be allowed at once")
        g = self.graph
        fails: Counter[int] = Counter()
        passes: Counter[int] = Counter()
        skipped: set[int] = set()
        for o in observations:
            i = g.locate(o.point)
            if i is None:
                continue
            if o.outcome == "skip":
                if i < g.size:  # a skip at the good end says nothing of the commits
                    skipped.add(i)
            elif o.outcome == "good":
                passes[i] += 1
            elif o.outcome == "bad":
                fails[i] += 1
            else:
                raise BisectError(f"outcome {o.outcome!r} is not good, bad or skip")
        busy = [i for i in (g.locate(p) for p in pending) if i is not None]
        post = self._posterior(fails, passes)
        ranked = self._ranked(post, skipped)
        top, conf = ranked[0]
        if top >= g.size:  # the test is at fault: the guard asks no more (posterior._answer)
            conf = sum(_probability(post, i) for i in self._hypotheses | {g.good_end})
        conf = min(conf, post.guarded)
        base = Decision(
            "test",
            confidence=conf,
            candidates=tuple((Culprit(*g.commits[i]), w) for i, w in ranked if i < g.size),
            flake_rate=post.flake_rate,
            detection_rate=post.detection_rate,
            executions=len(observations),
            good_end_fails=_probability(post, g.good_end),
            bad_end_passes=_probability(post, g.no_culprit),
            fails_at_random=_probability(post, g.no_culprit + 1) if self._random else 0.0,
        )
        need = self._unconfirmed(top, fails, passes)
        if conf >= self.confidence and not need:
            if top < g.size:
                return replace(base, kind="culprit", culprit=Culprit(*g.commits[top]))
            return self._suspect_end(base, top, fails, passes)
        hidden = self._hidden(top, post, skipped, need)
        if hidden is not None:
            reason, group = hidden
            return replace(
                base,
                kind="undecided",
                reason=reason,
                reason_code="skipped-commits",
                candidates=group,
            )
        if len(observations) >= self.max_executions:
            reason = (
                f"the budget of {self.max_executions} test runs is spent before any commit"
                f" reached {self.confidence:.0%} confidence"
            )
            return replace(base, kind="undecided", reason=reason, reason_code="max-runs")
        # never start more runs than the budget has left (pending runs will count too)
        k = min(k, self.max_executions - len(observations) - len(pending))
        if k < 1:
            return base
        git = self._git_bisection(fails, passes, k, skipped, busy)
        if git is not None:
            picks = [git]
        elif ranked[0][1] >= SETTLE and top not in skipped:
            picks = self._settle(post, top, fails, passes, k, skipped, busy)
        else:
            picks = choose(g, post, k, exclude=skipped | set(busy) | self._hypotheses, seeds=busy)
        if not picks and not busy:
            reason = "no commit left to test can tell the candidates apart"
            return replace(base, kind="undecided", reason=reason, reason_code="nothing-to-test")
        return replace(base, tests=tuple(dict(g.points[x]) for x in picks))

    @property
    def _hypotheses(self) -> set[int]:
        """The indices of the hypotheses that are no point to test: the bad end not failing and
        the test failing at random."""
        g = self.graph
        return {g.no_culprit, g.no_culprit + 1}

    def _suspect_end(
        self, base: Decision, end: int, fails: Counter[int], passes: Counter[int]
    ) -> Decision:
        """The decision when an end hypothesis, or the random test, clears the guard: the test is
        what to check."""
        g = self.graph
        if end == g.no_culprit + 1:
            good, bad = g.good_end, g.size - 1
            failed, runs = sum(fails.values()), sum(fails.values()) + sum(passes.values())
            reason = (
                f"the test fails at random: {failed} of {runs} runs failed, the good end failed"
                f" {fails[good]} of its {fails[good] + passes[good]} runs and the bad end passed"
                f" {passes[bad]} of its {fails[bad] + passes[bad]}; check what makes it fail"
            )
            return replace(base, kind="undecided", reason=reason, reason_code="test-random")
        if end == g.no_culprit:
            at = g.size - 1
            reason = (
                f"the bad end does not fail: {passes[at]} of its {passes[at] + fails[at]} runs"
                f" passed and the range shows no regression; check that the test fails there"
            )
            return replace(base, kind="undecided", reason=reason, reason_code="bad-end-passes")
        at = g.good_end
        reason = (
            f"the good end already fails: {fails[at]} of its {passes[at] + fails[at]} runs"
            f" failed; check that the test passes there"
        )
        return replace(base, kind="undecided", reason=reason, reason_code="good-end-fails")

    def _settle(
        self,
        post: Posterior,
        top: int,
        fails: Counter[int],
        passes: Counter[int],
        k: int,
        skipped: set[int],
        busy: list[int],
    ) -> list[int]:
        """The runs that settle a leading candidate: each chosen to shrink, in expectation, the
        largest risk over the noise hypotheses (what :func:`posterior` stops on), among the
        candidate's own checks and the points the designs for the mixture and for the limiting
        hypothesis would pick. A batch assumes each pick gives its likelier outcome and stops
        growing once that would settle the candidate."""
        g = self.graph
        checks = self._checks(top)
        exclude = skipped | set(busy) | self._hypotheses
        others = choose(g, post, 2, exclude=exclude, seeds=busy)
        if post.limiting is not None:
            others += choose(g, post.limiting, 2, exclude=exclude, seeds=busy)
        pool = list(dict.fromkeys(x for x in (*checks, *others) if x not in skipped))
        self._partition.refine([*pool, *busy])  # points with no runs change no likelihood
        ahead = Lookahead(self._partition, fails, passes, self.noise, top)
        fails, passes = Counter(fails), Counter(passes)

        def expect(x: int) -> None:
            fail = ahead.fail_probability(x) >= 0.5
            ahead.add(x, fail)
            (fails if fail else passes)[x] += 1

        for x in busy:  # runs on their way: count them as giving their likelier outcome
            expect(x)
        picks: list[int] = []
        while len(picks) < k:
            if ahead.settled() >= self.confidence:
                # the runs (or those expected) settle it: only the checks it lacks remain
                missing = [x for x in self._unconfirmed(top, fails, passes) if x not in skipped]
                if not missing:
                    break
                best = missing[0]
            else:
                # a run that cannot move the risk (all the weight on one side of it) would be
                # chosen over one that may raise it for a while, and then forever
                now = math.log(max(1.0 - ahead.settled(), 1e-12))
                scores = {x: ahead.expected_log_risk(x) for x in pool}
                useful = [x for x in pool if abs(scores[x] - now) > 1e-6]
                if not useful:
                    seeds = [*busy, *picks]
                    more = choose(
                        g, post, k - len(picks), exclude=exclude | set(picks), seeds=seeds
                    )
                    return picks + more
                best = min(useful, key=scores.__getitem__)
            picks.append(best)
            expect(best)
        return picks

    def _git_bisection(
        self,
        fails: Counter[int],
        passes: Counter[int],
        k: int,
        skipped: set[int],
        busy: list[int],
    ) -> int | None:
        """git bisect's next commit (``design.git_bisection``) for a deterministic test run one
        at a time, while the runs leave what git bisect would: two or more commits, all the
        ancestors of one of them (its current bad commit) that no passing point reaches. Else
        None: the ends are still to verify, or skips, several runs at once or resumed runs that
        git would not have made leave the choice to :func:`choose`."""
        if not self._deterministic or k != 1 or busy or skipped:
            return None
        g = self.graph
        left = g.all
        for x in passes:
            left &= ~g.anc[x]
        for x in fails:
            left &= g.anc[x]
        if left.bit_count() < 2:
            return None
        tops = [i for i in members(left) if g.desc[i] & left == 1 << i]
        if len(tops) != 1 or g.anc[tops[0]] & left != left:
            return None
        return git_bisection(g, left)

    def _posterior(self, fails: Counter[int], passes: Counter[int]) -> Posterior:
        points = set(fails) | set(passes)
        # points of another history (or of a settling lookahead) carry no runs here and change no
        # likelihood; they only cost time, so the classes start afresh once they pile up
        if len(self._partition.points) > 2 * len(points) + 16:
            self._partition = Partition(self.graph, random=self._random)
        self._partition.refine(sorted(points))
        return posterior(self._partition, fails, passes, self.noise)

    def _ranked(self, post: Posterior, skipped: set[int]) -> list[tuple[int, float]]:
        """The likeliest candidates, best first: ``_TOP`` commits and the end hypotheses among
        them (testable commits before skipped ones of the same probability)."""
        out: list[tuple[int, float]] = []
        commits = 0
        for bits, size, mass, *_ in post.classes:
            ms = members(bits)
            ms.sort(key=lambda i: i in skipped)
            for i in ms[: max(0, _TOP - commits)]:
                out.append((i, mass / size))
                commits += i < self.graph.size
            if commits >= _TOP:
                break
        return out

    def _checks(self, top: int) -> list[int]:
        """The points that confirm a candidate: itself and its parents, or the end it accuses
        (both ends for the random test)."""
        g = self.graph
        if top == g.no_culprit + 1:
            return [g.good_end, g.size - 1]
        if top == g.no_culprit:
            return [g.size - 1]
        if top == g.good_end:
            return [g.good_end]
        return [top, *g.confirm_parents[top]]

    def _unconfirmed(self, top: int, fails: Counter[int], passes: Counter[int]) -> list[int]:
        """The points still to see directly: the top candidate failing and its parents passing
        (none for a deterministic test, whose runs elsewhere imply them); for an end hypothesis,
        the bad end passing or the good end failing; for the random test, both."""
        g = self.graph
        if top == g.no_culprit + 1:
            return [g.good_end] * (not fails[g.good_end]) + [g.size - 1] * (not passes[g.size - 1])
        if top == g.no_culprit:
            return [] if passes[g.size - 1] else [g.size - 1]
        if top == g.good_end:
            return [] if fails[top] else [top]
        if self._deterministic:
            return []
        need = [] if fails[top] else [top]
        return need + [p for p in g.confirm_parents[top] if not passes[p]]

    def _hidden(
        self, top: int, post: Posterior, skipped: set[int], need: list[int]
    ) -> tuple[str, tuple[tuple[Culprit, float], ...]] | None:
        """Why and among which commits the culprit hides behind untestable commits, if it does."""
        if top >= self.graph.size or not skipped or any(x not in skipped for x in need):
            return None
        g = self.graph
        s = 0
        for x in skipped:
            s |= 1 << x
        near = (s | 1 << top) & (g.anc[top] | g.desc[top])
        target = g.desc[top] & ~s
        group = {c for c in members(near) if g.desc[c] & ~s == target} | set(need) | {top}
        if len(group) < 2:
            return None
        probs = {c: _probability(post, c) for c in group}
        if sum(probs.values()) < self.confidence:
            return None
        ranked = tuple(
            (Culprit(*g.commits[c]), w) for c, w in sorted(probs.items(), key=lambda t: -t[1])
        )
        names = ", ".join(g.commits[c][1] for c in sorted(group))
        return (
            f"untestable commits (skipped) hide the culprit: it is one of {names}"
            f" ({sum(probs.values()):.1%} together)",
            ranked,
        )


def _probability(post: Posterior, i: int) -> float:
    for bits, size, mass, *_ in post.classes:
        if bits >> i & 1:
            return mass / size
    return 0.0
