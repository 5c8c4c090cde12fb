"""The culprit posterior: which commit is the culprit, and how flaky the test is, given the runs.

The model: the culprit is one commit of the ranges, a priori uniform, or one of the two end
hypotheses (``END_PRIOR`` each): the good end already fails (every point bad) or the bad end does
not fail (no point bad); or, when the test may fail at a good commit at all, the test fails at
random (``RANDOM_PRIOR``): every run fails at one rate whatever the commit, a rate above the flake
rates of the grid (see ``RANDOM_RATES``). A test point is *bad* iff the culprit is among its
ancestors (itself included). A run at a good point fails with the flake rate ``p``; at a bad
point it fails with ``q + (1 - q) p``, ``q`` the detection rate of the regression. ``p`` and
``q`` are unknown: they take values on a small grid with a spike-and-slab prior (most mass
on the deterministic test, ``p = 0`` and ``q = 1``, so that a history without contradictions is
searched like ``git bisect`` does) and are integrated out.

Candidates that every observed point treats alike (ancestor of the same observed points) share one
likelihood, so the posterior is computed per *class* of such candidates, a bitset each: the work is
(classes x noise hypotheses), independent of the size of the graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from labgate.bisect.graph import Graph

__all__ = [
    "END_PRIOR",
    "RANDOM_PRIOR",
    "RANDOM_RATES",
    "Knowledge",
    "Lookahead",
    "Noise",
    "Partition",
    "Posterior",
    "default_noise_prior",
    "history_noise_prior",
    "noise_prior",
    "posterior",
]

Knowledge = Literal["no", "yes", "auto"]
"""What the user says of a kind of noise: it cannot happen, it does, or learn it from the runs."""

END_PRIOR = 0.01
"""The prior of each end hypothesis (the good end fails; the bad end does not fail). Small, as a
user's ends are usually right, but far above one commit's share on a long range, so that a range
whose test never fails (or always fails) is found out within a few runs at that end."""


RANDOM_PRIOR = 0.01
"""The prior of the hypothesis that the test fails at random, independent of the commit (a test
that is broken, not a regression). Like an end's: small, so that it costs a deterministic test no
run, yet far above one commit's share, so that runs that contradict each other (the good end
failing, the bad end passing, one commit both) soon make it the leading explanation."""

RANDOM_RATES = (0.4, 0.5, 0.6, 0.7, 0.8)
"""The failure rates of a test that fails at random, equally likely a priori. Below 0.4 a flaky
test of the grid (p up to 0.3) with no culprit in the range explains the same runs."""


def random_log_likelihood(fails: int, passes: int) -> float:
    """log P(runs | the test fails at random): ``fails`` and ``passes`` in all, the rate
    integrated over ``RANDOM_RATES``."""
    terms = [_term(fails, math.log(r)) + _term(passes, math.log1p(-r)) for r in RANDOM_RATES]
    peak = max(terms)
    return peak + math.log(sum(math.exp(t - peak) for t in terms) / len(terms))


def _random_rates(fails: int, passes: int) -> tuple[float, float]:
    """For a test that fails at random, after these runs: the probability the next run fails, and
    the entropy of a run's outcome averaged over the rate's posterior."""
    logs = [_term(fails, math.log(r)) + _term(passes, math.log1p(-r)) for r in RANDOM_RATES]
    peak = max(logs)
    ws = [math.exp(v - peak) for v in logs]
    z = sum(ws)
    fail = sum(w * r for w, r in zip(ws, RANDOM_RATES, strict=True)) / z
    noise = sum(w * _entropy(r) for w, r in zip(ws, RANDOM_RATES, strict=True)) / z
    return fail, noise


@dataclass(frozen=True)
class Noise:
    """One noise hypothesis: flake rate ``p``, detection rate ``q``, and its prior weight."""

    p: float
    q: float
    prior: float

    @property
    def fail_bad(self) -> float:
        return self.q + (1.0 - self.q) * self.p


# The spike, p = 0 and q = 1 (a deterministic test), holds 85% of the prior: it steers the choice of
# tests so that a history without contradictions is searched as git bisect does; whether a culprit
# may be named is the guard's call (see ALPHA), not the prior's. The slab is a coarse grid over
# the flaky test (p from 0 to 0.3) and the intermittent regression (q = 1, 0.7, 0.5, 0.3); a true p
# or q between grid values is modelled by its neighbours. The guard holds for each hypothesis of the
# grid: the wider the grid, the more tests the guarantee covers, at a small cost in runs (dropping
# p = 0.3 or q = 0.3 saves under half a run on a quiet history).
_SPIKE = 0.85
_P_SLAB = ((0.0, 0.2), (0.05, 0.25), (0.1, 0.25), (0.2, 0.2), (0.3, 0.1))
_Q_SLAB = ((1.0, 0.4), (0.7, 0.2), (0.5, 0.2), (0.3, 0.2))

# Told that a bad commit always fails (``--intermittent no``), only the flake rate is unknown, and
# the prior leans to the smallest one: 0.6 on p = 0, 0.3 on p = 0.05. The guard still holds for
# every p of the grid (up to 0.3), whatever their prior: the prior only says which histories
# should stop early. A rare flake predicts a quiet history nearly as well as none does, so that
# costs a deterministic test nothing, and a history with a flake is no longer 1 / 0.0375 times
# less likely a priori than the rate that explains it, which the guard paid for in runs at the
# culprit (bench/bisect.py's simulator, 1,000 commits, 100 histories a seed: 0.3-0.9 runs fewer at
# p = 0.05 on seeds 3, 4 and 6, within 0.1 run at p = 0).
_SPIKE_NOT_INTERMITTENT = 0.6
_P_SLAB_NOT_INTERMITTENT = ((0.05, 0.75), (0.1, 0.125), (0.2, 0.075), (0.3, 0.05))


def default_noise_prior() -> tuple[Noise, ...]:
    """The spike-and-slab prior over (p, q) described above."""
    return noise_prior()


def noise_prior(flaky: Knowledge = "auto", intermittent: Knowledge = "auto") -> tuple[Noise, ...]:
    """The prior over (p, q) given what the user says: ``flaky`` (can a good commit fail?) and
    ``intermittent`` (can a bad commit pass?). ``no`` keeps only p = 0 (q = 1), ``yes`` drops
    them, ``auto`` keeps the whole grid; the spike stays where both p = 0 and q = 1 are allowed
    and some noise is too, and alone (prior 1) when the user rules every noise out."""
    if intermittent == "no" and flaky != "no":
        flakes = [Noise(p, 1.0, w) for p, w in _P_SLAB_NOT_INTERMITTENT]
        if flaky == "yes":
            return tuple(flakes)
        share = 1.0 - _SPIKE_NOT_INTERMITTENT
        spiked = [Noise(h.p, h.q, share * h.prior) for h in flakes]
        return (Noise(0.0, 1.0, _SPIKE_NOT_INTERMITTENT), *spiked)
    ps = _kept(_P_SLAB, flaky, 0.0)
    qs = _kept(_Q_SLAB, intermittent, 1.0)
    spike = flaky != "yes" and intermittent != "yes"
    share = 1.0 - _SPIKE if spike else 1.0
    slab = tuple(Noise(p, q, share * wp * wq) for p, wp in ps for q, wq in qs if p or q < 1.0)
    if not slab:
        return (Noise(0.0, 1.0, 1.0),)
    return (Noise(0.0, 1.0, _SPIKE), *slab) if spike else slab


HISTORY_RULES_OUT = 0.01
"""A flake rate p of the grid whose likelihood on the test's history is below this share of the
best p's is ruled out by that history (the share the guard uses to rule a hypothesis out)."""


def history_noise_prior(
    flakes: int, runs: int, flaky: Knowledge = "auto", intermittent: Knowledge = "auto"
) -> tuple[Noise, ...]:
    """:func:`noise_prior`, less the flake rates the test's own history rules out: ``runs``
    runs at revisions that pass it, ``flakes`` of them failed (a lab knows this from its flights;
    see ``labgate.verdict.flake_counts``). A history of many clean runs leaves only small p; a
    test seen to fail where it passes leaves out p = 0. The guard then covers every (p, q) the
    history allows, and spends no run clearing the others."""
    prior = noise_prior(flaky, intermittent)
    ps = {h.p for h in prior}

    def log_likelihood(p: float) -> float:
        if p == 0.0:
            return 0.0 if flakes == 0 else -math.inf
        return flakes * math.log(p) + (runs - flakes) * math.log1p(-p)

    best = max(log_likelihood(p) for p in ps)
    allowed = {p for p in ps if log_likelihood(p) - best >= math.log(HISTORY_RULES_OUT)}
    kept = [h for h in prior if h.p in allowed]
    total = sum(h.prior for h in kept)
    return tuple(Noise(h.p, h.q, h.prior / total) for h in kept)


def _kept(
    grid: tuple[tuple[float, float], ...], knowledge: Knowledge, quiet: float
) -> list[tuple[float, float]]:
    """The grid values ``knowledge`` allows (``quiet``: the value of no noise), their weights
    scaled back to a sum of 1."""
    kept = [(v, w) for v, w in grid if knowledge == "auto" or (knowledge == "no") == (v == quiet)]
    total = sum(w for _, w in kept)
    return [(v, w / total) for v, w in kept]


class Partition:
    """Classes of candidates: candidates that are ancestors of the same observed points.

    Kept by the search between rounds and refined as new points get observed. With ``random``,
    the hypothesis "the test fails at random" is a class of its own, of index :attr:`random`
    (after the graph's two end hypotheses; bad at no point, its runs weighed by
    :func:`random_log_likelihood` instead of the noise hypotheses).
    """

    def __init__(self, graph: Graph, *, random: bool = True) -> None:
        self.graph = graph
        self.random = graph.no_culprit + 1 if random else None
        self.points: list[int] = []
        self.position: dict[int, int] = {}  # point -> its index in self.points
        # each class: (bitset of candidates, indices into self.points of the points it is bad at)
        self.classes: list[tuple[int, tuple[int, ...]]] = [
            (graph.all, ()),
            (1 << graph.good_end, ()),
            (1 << graph.no_culprit, ()),
        ]
        commits = 1.0 - 2 * END_PRIOR
        if self.random is not None:
            self.classes.append((1 << self.random, ()))
            commits -= RANDOM_PRIOR
        self._log_commit = math.log(commits / graph.size)
        self._log_end = math.log(END_PRIOR)

    def is_random(self, bits: int) -> bool:
        """Whether a class is the hypothesis "the test fails at random"."""
        return self.random is not None and bits == 1 << self.random

    def log_prior(self, bits: int, size: int) -> float:
        """The log prior of a class: an end hypothesis's own, the random test's, or its commits'
        share."""
        if self.is_random(bits):
            return math.log(RANDOM_PRIOR)
        if bits >> self.graph.good_end:  # the end hypotheses are classes of their own
            return self._log_end
        return math.log(size) + self._log_commit

    def refine(self, points: Iterable[int]) -> None:
        anc = self.graph.anc
        for x in points:
            if x in self.position:
                continue
            pos = self.position[x] = len(self.points)
            self.points.append(x)
            a = anc[x]
            split: list[tuple[int, tuple[int, ...]]] = []
            for bits, sig in self.classes:
                inside = bits & a
                if inside:
                    split.append((inside, (*sig, pos)))
                    if inside != bits:
                        split.append((bits & ~a, sig))
                else:
                    split.append((bits, sig))
            self.classes = split


Class = tuple[int, int, float, float, float, float, float]
"""A class of candidates in the posterior: (bitset, size, probability, then for a run at a point
the class makes bad and at one it leaves good: the failure rate, mixed over the noise hypotheses
as this class weighs them, and the entropy of the run's outcome averaged over those hypotheses).
The averaged entropies make the choice of tests value what a run says about the noise too."""


@dataclass(frozen=True)
class Posterior:
    """The posterior over classes of candidates and over noise hypotheses."""

    classes: tuple[Class, ...]  # likeliest members first
    noise: tuple[tuple[Noise, float], ...]  # hypothesis and its posterior probability
    flake_rate: float  # posterior mean of p
    detection_rate: float  # posterior mean of q
    # 1 - the largest risk over the noise hypotheses (see ALPHA); a culprit is named on this,
    # not on the mixture
    guarded: float = 0.0
    # the posterior under the hypothesis of the largest risk: what the search must convince
    limiting: Posterior | None = None


ALPHA = 0.9
"""How the guard splits the error it allows between its two ways of clearing a noise hypothesis.

For each hypothesis h of the grid, the runs give ``wrong`` (the probability, were h true, that the
leading candidate is not the culprit) and the Bayes factor ``B = P_h(runs) / P_prior(runs)``. The
leading candidate clears h if ``B * wrong <= ALPHA * (1 - confidence)`` or ``wrong <= (1 - ALPHA) *
(1 - confidence)``; a culprit is named when it clears every h. This keeps the rate of wrong culprits
at most 1 - confidence in *each* cell of the grid, not only on average over the prior: summed over
the histories the search stops on, the first way is bounded by ``ALPHA * eps * P_prior(stop)`` and
the second by ``(1 - ALPHA) * eps * P_h(stop)``, both probabilities at most 1.

The first way is what lets a quiet history stop early: its runs are likely under the deterministic
test, so B is small for every noisy h. The second is what lets a noisy history stop at all: there
the true h's B grows towards 1 / prior(h), and asking ``B * wrong`` to be small would ask far more
than the confidence of it.
"""


def _entropy(x: float) -> float:
    if x <= 0.0 or x >= 1.0:
        return 0.0
    return -(x * math.log2(x) + (1.0 - x) * math.log2(1.0 - x))


def _term(n: int, logp: float) -> float:
    return n * logp if n else 0.0


def _exp(x: float) -> float:
    return math.exp(x) if x > -math.inf else 0.0


def _log(x: float) -> float:
    return math.log(x) if x > 0.0 else -math.inf


def _logs(noise: tuple[Noise, ...]) -> list[tuple[float, float, float, float, float]]:
    """Per hypothesis: log prior, log P(fail | bad), log P(pass | bad), same for a good point."""
    return [
        (_log(h.prior), _log(h.fail_bad), _log(1.0 - h.fail_bad), _log(h.p), _log(1.0 - h.p))
        for h in noise
    ]


def _rows(
    partition: Partition,
    fails: Mapping[int, int],
    passes: Mapping[int, int],
    logs: list[tuple[float, float, float, float, float]],
) -> tuple[list[tuple[int, int, list[float]]], float]:
    """Per class: (bitset, size, log weight under each hypothesis), and the largest log weight."""
    pts = partition.points
    f_at = [fails.get(x, 0) for x in pts]
    p_at = [passes.get(x, 0) for x in pts]
    f_tot = sum(fails.values())
    p_tot = sum(passes.values())
    rows: list[tuple[int, int, list[float]]] = []
    best = -math.inf
    for bits, sig in partition.classes:
        fb = sum(f_at[s] for s in sig)
        pb = sum(p_at[s] for s in sig)
        fg = f_tot - fb
        pg = p_tot - pb
        size = bits.bit_count()
        ls = partition.log_prior(bits, size)
        if partition.is_random(bits):
            # the noise hypotheses keep their prior here: a random test says nothing of p and q
            ls += random_log_likelihood(f_tot, p_tot)
            row = [ls + lp for lp, *_ in logs]
        else:
            row = [
                ls + lp + _term(fb, lfb) + _term(pb, lpb) + _term(fg, lfg) + _term(pg, lpg)
                for lp, lfb, lpb, lfg, lpg in logs
            ]
        best = max(best, *row)
        rows.append((bits, size, row))
    return rows, best


def _answer(partition: Partition, rows: list[tuple[int, int, list[float]]], top: int) -> list[int]:
    """The classes the answer of class ``top`` stands for: itself, or when it blames the test (an
    end hypothesis or the random test), every such hypothesis. They predict the same runs under
    different noise (the good end failing at rate 0.5 is a test failing at random at 0.5; the bad
    end passing under a flaky test is a test failing at random at p), so the guard asks whether
    the test is at fault, never which of them it is."""
    g = partition.graph
    if rows[top][0] >> g.good_end:
        return [j for j, (bits, _, _) in enumerate(rows) if bits >> g.good_end]
    return [top]


def _risk(noise: tuple[Noise, ...], mass: list[float], top_mass: list[float]) -> list[float]:
    """The guard's risk under each hypothesis (see ALPHA), from each hypothesis's total weight and
    the weight of the leading candidate; a hypothesis of no weight has none."""
    z = sum(mass)
    out = []
    for h, m, t in zip(noise, mass, top_mass, strict=True):
        if m <= 0.0:
            out.append(0.0)
            continue
        wrong = 1.0 - t / m
        out.append(min(m / (h.prior * z) * wrong / ALPHA, wrong / (1.0 - ALPHA)))
    return out


class Lookahead:
    """The guard's largest risk for one leading candidate after runs not made yet.

    Built once per decision from the runs so far. It keeps each class's weight under each noise
    hypothesis; a run at a point multiplies the weights of the classes it makes bad by one factor
    and the others by another, so every question costs one sum over the classes.
    """

    def __init__(
        self,
        partition: Partition,
        fails: Mapping[int, int],
        passes: Mapping[int, int],
        noise: tuple[Noise, ...],
        top: int,
    ) -> None:
        self.noise = noise
        self.partition = partition
        rows, best = _rows(partition, fails, passes, _logs(noise))
        self._weights = [[_exp(v - best) for v in row] for _, _, row in rows]
        self._sigs = [frozenset(sig) for _, sig in partition.classes]
        self._tops = _answer(
            partition, rows, next(j for j, (bits, _, _) in enumerate(rows) if bits >> top & 1)
        )
        self._sizes = [size for _, size, _ in rows]
        self._bad_cache: dict[int, list[float]] = {}
        # the random test's class, and the runs it has seen (its failure rate is learnt from them)
        self._random = next((j for j, r in enumerate(rows) if partition.is_random(r[0])), None)
        self._runs = [sum(fails.values()), sum(passes.values())]

    def _random_fail(self) -> float:
        return _random_rates(*self._runs)[0] if self._random is not None else 0.0

    def _bad_mass(self, x: int) -> list[float]:
        """Per hypothesis: the weight of the classes that ``x`` makes bad."""
        if x not in self._bad_cache:
            pos = self.partition.position[x]
            out = [0.0] * len(self.noise)
            for ws, sig in zip(self._weights, self._sigs, strict=True):
                if pos in sig:
                    out = [o + w for o, w in zip(out, ws, strict=True)]
            self._bad_cache[x] = out
        return self._bad_cache[x]

    def _total(self) -> list[float]:
        return [sum(col) for col in zip(*self._weights, strict=True)]

    def _after(self, x: int, fail: bool) -> tuple[list[float], list[float]]:
        """Per hypothesis: the total weight and the leading candidate's, after a run at ``x``."""
        bad, total = self._bad_mass(x), self._total()
        pos = self.partition.position[x]
        rnd = self._random_weights()
        fr = self._random_fail() if fail else 1.0 - self._random_fail()
        mass, top = [], []
        for i, (h, b, t, r) in enumerate(zip(self.noise, bad, total, rnd, strict=True)):
            fb, fg = (h.fail_bad, h.p) if fail else (1.0 - h.fail_bad, 1.0 - h.p)
            mass.append(b * fb + (t - b - r) * fg + r * fr)
            weight = 0.0
            for j in self._tops:
                factor = fr if j == self._random else fb if pos in self._sigs[j] else fg
                weight += self._weights[j][i] * factor / self._sizes[j]
            top.append(weight)
        return mass, top

    def _random_weights(self) -> list[float]:
        if self._random is None:
            return [0.0] * len(self.noise)
        return self._weights[self._random]

    def settled(self) -> float:
        """What the search compares with the confidence: the smaller of the candidate's
        probability and 1 - the largest risk."""
        mass = self._total()
        top = [
            sum(self._weights[j][i] / self._sizes[j] for j in self._tops)
            for i in range(len(self.noise))
        ]
        return max(0.0, min(sum(top) / sum(mass), 1.0 - max(_risk(self.noise, mass, top))))

    def fail_probability(self, x: int) -> float:
        """The probability that a run at ``x`` (a point of the partition) fails."""
        bad, total = self._bad_mass(x), self._total()
        fr = self._random_fail()
        fail = sum(
            b * h.fail_bad + (t - b - r) * h.p + r * fr
            for h, b, t, r in zip(self.noise, bad, total, self._random_weights(), strict=True)
        )
        return fail / sum(total) if sum(total) > 0.0 else 0.0

    def expected_log_risk(self, x: int) -> float:
        """The expected log of the largest risk after one more run at ``x``."""
        pf = self.fail_probability(x)
        out = 0.0
        for weight, fail in ((pf, True), (1.0 - pf, False)):
            if weight > 0.0:
                risk = max(_risk(self.noise, *self._after(x, fail)))
                out += weight * math.log(max(risk, 1e-12))
        return out

    def add(self, x: int, fail: bool) -> None:
        """Count one more run at ``x`` (a point of the partition) as if it had given ``fail``."""
        pos = self.partition.position[x]
        factors = {
            True: [h.fail_bad if fail else 1.0 - h.fail_bad for h in self.noise],
            False: [h.p if fail else 1.0 - h.p for h in self.noise],
        }
        fr = self._random_fail() if fail else 1.0 - self._random_fail()
        self._weights = [
            [w * fr for w in ws] if j == self._random else
            [w * f for w, f in zip(ws, factors[pos in sig], strict=True)]
            for j, (ws, sig) in enumerate(zip(self._weights, self._sigs, strict=True))
        ]  # fmt: skip
        self._runs[0 if fail else 1] += 1
        peak = max(max(ws) for ws in self._weights)
        if peak > 0.0:
            self._weights = [[w / peak for w in ws] for ws in self._weights]
        self._bad_cache.clear()


def posterior(
    partition: Partition,
    fails: Mapping[int, int],
    passes: Mapping[int, int],
    noise: tuple[Noise, ...],
) -> Posterior:
    """The posterior given the runs: ``fails``/``passes`` count runs per point."""
    rows, best = _rows(partition, fails, passes, _logs(noise))
    fail_bad = [h.fail_bad for h in noise]
    fail_good = [h.p for h in noise]
    noise_mass = [0.0] * len(noise)
    h_bad = [_entropy(f) for f in fail_bad]
    h_good = [_entropy(f) for f in fail_good]
    random_fail, random_noise = _random_rates(sum(fails.values()), sum(passes.values()))
    found: list[Class] = []
    for bits, size, row in rows:
        total = f_in = f_out = e_in = e_out = 0.0
        for i, v in enumerate(row):
            if v > -math.inf:
                w = math.exp(v - best)
                noise_mass[i] += w
                total += w
                f_in += w * fail_bad[i]
                f_out += w * fail_good[i]
                e_in += w * h_bad[i]
                e_out += w * h_good[i]
        if total > 0.0 and partition.is_random(bits):
            found.append((bits, size, total, random_fail, random_fail, random_noise, random_noise))
        elif total > 0.0:
            t = total
            found.append((bits, size, total, f_in / t, f_out / t, e_in / t, e_out / t))
        else:
            found.append((bits, size, 0.0, 1.0, 0.0, 0.0, 0.0))
    z = sum(c[2] for c in found)
    classes = sorted(
        ((bits, size, w / z, fi, fo, ei, eo) for bits, size, w, fi, fo, ei, eo in found),
        key=lambda c: -c[2] / c[1],
    )
    hs = tuple((h, w / z) for h, w in zip(noise, noise_mass, strict=True))
    top = max(range(len(found)), key=lambda j: found[j][2] / found[j][1])
    answer = _answer(partition, rows, top)
    top_mass = [
        sum(math.exp(rows[j][2][i] - best) / rows[j][1] for j in answer) for i in range(len(noise))
    ]
    risk = _risk(noise, noise_mass, top_mass)
    worst = max(range(len(noise)), key=lambda i: risk[i]) if any(noise_mass) else None
    return Posterior(
        classes=tuple(classes),
        noise=hs,
        flake_rate=sum(h.p * w for h, w in hs),
        detection_rate=sum(h.q * w for h, w in hs),
        guarded=0.0 if worst is None else max(0.0, 1.0 - risk[worst]),
        limiting=None if worst is None else _conditional(rows, best, noise, worst),
    )


def _conditional(
    rows: list[tuple[int, int, list[float]]], best: float, noise: tuple[Noise, ...], i: int
) -> Posterior:
    """The posterior over classes if noise hypothesis ``i`` were known to hold."""
    h = noise[i]
    weights = [(bits, size, math.exp(row[i] - best)) for bits, size, row in rows]
    z = sum(w for _, _, w in weights)
    e_in, e_out = _entropy(h.fail_bad), _entropy(h.p)
    classes = sorted(
        ((bits, size, w / z, h.fail_bad, h.p, e_in, e_out) for bits, size, w in weights if w > 0.0),
        key=lambda c: -c[2] / c[1],
    )
    return Posterior(classes=tuple(classes), noise=((h, 1.0),), flake_rate=h.p, detection_rate=h.q)
