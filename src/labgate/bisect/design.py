"""The choice of the next test points: the k points whose outcomes, together, say most.

A point's value is the mutual information between its outcome and the culprit under the posterior;
the noise hypotheses are mixed per class of candidates, as the posterior weighs them there, so a
retest is valued by how well it separates the leading candidate from the explanations that need a
flake or a missed detection. The first point is chosen among the candidates of weight; the others
greedily, each maximising the information of the whole batch (with the points still pending), among
a short list spanning the range of bad-probabilities, so that k picks at once split the candidates
into k + 1 parts rather than hitting one midpoint k times.

The work per scored point is one ``AND`` and one popcount per class of weight.

:func:`git_bisection` is the other way to choose, for a test the user says is deterministic:
git bisect's own choice, so that such a search makes the runs ``git bisect run`` makes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from labgate.bisect.graph import Graph, members
from labgate.bisect.posterior import Posterior

__all__ = ["choose", "git_bisection"]

_MASS = 1.0 - 1e-3  # the classes scored one by one hold this much of the posterior
_POOL = 200  # about this many candidate points are scored for the first pick
_PIECES = 48  # at most this many classes are scored one by one; the rest are pooled
_HEAVY = 1e-3  # a class of this much mass is sampled even when the pool is full
_MIN_SAMPLE = 4  # points sampled from each class of weight once the pool is full
_BUCKETS = 24  # the short list for later picks: the best points per bad-probability bucket
_PER_BUCKET = 3
_MAX_JOINT = 7  # joint outcomes are computed over at most this many points


@dataclass(frozen=True)
class _Piece:
    """Candidates of one class that the batch so far treats alike (``pattern``: bad at each)."""

    bits: int
    size: int
    weight: float  # posterior probability of each member
    fail_in: float  # probability a run fails at a point this piece makes bad
    fail_out: float  # ... at a point it leaves good
    noise_in: float  # entropy of such a run given the culprit, averaged over the noise
    noise_out: float
    pattern: tuple[bool, ...] = ()

    @property
    def gain_in(self) -> float:
        return self.weight * (self.fail_in - self.fail_out)

    @property
    def noise_gain(self) -> float:
        return self.weight * (self.noise_in - self.noise_out)


def _h(x: float) -> float:
    if x <= 0.0 or x >= 1.0:
        return 0.0
    return -(x * math.log2(x) + (1.0 - x) * math.log2(1.0 - x))


def choose(
    graph: Graph,
    post: Posterior,
    k: int,
    *,
    exclude: set[int],
    seeds: Sequence[int] = (),
) -> list[int]:
    """Up to ``k`` points to test next, never in ``exclude``; ``seeds`` are already on their way."""
    pieces: list[_Piece] = []
    acc = 0.0
    # the classes past _MASS (or past _PIECES of them) are pooled into one piece
    rest_bits = rest_size = 0
    rest_mass = 0.0
    rest = [0.0, 0.0, 0.0, 0.0]
    for bits, size, mass, f_in, f_out, e_in, e_out in post.classes:
        rates = (f_in, f_out, e_in, e_out)
        if acc < _MASS and len(pieces) < _PIECES:
            pieces.append(_Piece(bits, size, mass / size, f_in, f_out, e_in, e_out))
            acc += mass
        else:
            rest_bits |= bits
            rest_size += size
            rest_mass += mass
            rest = [r + mass * v for r, v in zip(rest, rates, strict=True)]
    if rest_mass > 0.0:
        a_in, a_out, a_ein, a_eout = (r / rest_mass for r in rest)
        pieces.append(
            _Piece(rest_bits, rest_size, rest_mass / rest_size, a_in, a_out, a_ein, a_eout)
        )
    pool = _pool(pieces, exclude)
    if not pool:
        return []
    for s in list(seeds)[: _MAX_JOINT - 1]:
        pieces = _split(pieces, graph.anc[s])
    scored = _score(graph, pieces, pool)
    greedy = [_best(scored)]
    if k == 1:
        return greedy
    short = _short_list(scored)
    greedy_info = _extend(graph, pieces, greedy, short, k)
    # the greedy batch starts from the best single point, which is not where k + 1 even parts
    # split; the quantile batch does (better on a quiet history); keep whichever says more
    quantiles = _quantile_batch(scored, k)
    if len(quantiles) > 1 and _batch_info(graph, pieces, quantiles) > greedy_info:
        return quantiles
    return greedy


def git_bisection(graph: Graph, candidates: int) -> int:
    """The commit ``git bisect`` tests next when ``candidates`` (a bitset of commits, two or more)
    are its commits left: reachable from its current bad commit and from no good one.

    git's ``find_bisection`` (bisect.c) gives each commit its *weight*, the candidates among its
    ancestors (itself included), and takes the first commit of its list whose weight is within one
    of half the candidates (``approx_halfway``), checking the merges first and then the others in
    the order their weights are filled in; failing that, the first of the list whose
    ``min(weight, candidates - weight)`` is largest. Its list is :attr:`Graph.listed`. Weights
    are counted here with bitsets; only the order of the checks is git's. Exact on one tree
    whose commits' dates follow their order in the range, as ``git rev-list`` lists them.
    """
    order = [i for i in graph.listed if candidates >> i & 1]
    nr = len(order)
    weight = {i: (graph.anc[i] & candidates).bit_count() for i in order}
    inside = {i: [p for p in graph.parents[i] if candidates >> p & 1] for i in order}

    def halfway(i: int) -> bool:
        diff = 2 * weight[i] - nr
        return abs(diff) <= 1 or abs(diff) < nr // 1024

    known = {i for i in order if not inside[i]}  # git's roots: weight 1, never checked
    for i in order:
        if len(inside[i]) >= 2:
            if halfway(i):
                return i
            known.add(i)
    while len(known) < nr:
        for i in order:
            if i not in known and inside[i][0] in known:
                if halfway(i):
                    return i
                known.add(i)
    at = {i: j for j, i in enumerate(order)}
    return max(order, key=lambda i: (min(weight[i], nr - weight[i]), -at[i]))


def _extend(
    graph: Graph, pieces: list[_Piece], chosen: list[int], short: list[int], k: int
) -> float:
    """Grow ``chosen`` greedily to ``k`` points; returns the information of the batch."""
    info = 0.0
    while len(chosen) < k and len(pieces[0].pattern) + 1 < _MAX_JOINT:
        pieces = _split(pieces, graph.anc[chosen[-1]])
        rest = [x for x in short if x not in chosen]
        if not rest:
            break
        scored = _score(graph, pieces, rest)
        best = _best(scored)
        info = max(t[0] for t in scored if t[2] == best)
        chosen.append(best)
    return info


def _batch_info(graph: Graph, pieces: list[_Piece], batch: list[int]) -> float:
    for x in batch[:-1]:
        pieces = _split(pieces, graph.anc[x])
    return _score(graph, pieces, batch[-1:])[0][0]


def _quantile_batch(scored: list[tuple[float, float, int]], k: int) -> list[int]:
    """Points whose bad-probabilities are closest to 1/(k+1), 2/(k+1), ..., distinct."""
    out: list[int] = []
    for i in range(1, k + 1):
        target = i / (k + 1)
        rest = [t for t in scored if t[2] not in out]
        if not rest:
            break
        out.append(min(rest, key=lambda t: (abs(t[1] - target), -t[0]))[2])
    return out


def _best(scored: list[tuple[float, float, int]]) -> int:
    # ties (equal information) go to the point closest to an even split, then the latest commit
    return max(scored, key=lambda t: (round(t[0], 12), -abs(t[1] - 0.5), t[2]))[2]


def _pool(pieces: list[_Piece], exclude: set[int]) -> list[int]:
    """The candidate points worth scoring: members of the likeliest classes, sampled evenly when
    a class is large, until about ``_POOL`` points; a class holding real mass always gets some."""
    pool: list[int] = []
    for piece in pieces:
        room = _POOL - len(pool)
        if room <= 0:
            if piece.weight * piece.size < _HEAVY:
                continue
            room = _MIN_SAMPLE
        ms = [x for x in members(piece.bits) if x not in exclude]
        if len(ms) > room:
            step = len(ms) / room
            ms = [ms[int(i * step)] for i in range(room)]
        pool.extend(ms)
    return pool


def _split(pieces: list[_Piece], anc: int) -> list[_Piece]:
    out: list[_Piece] = []
    for p in pieces:
        inside = p.bits & anc
        n_in = inside.bit_count()
        if n_in:
            out.append(replace(p, bits=inside, size=n_in, pattern=(*p.pattern, True)))
        if n_in < p.size:
            out.append(
                replace(p, bits=p.bits & ~anc, size=p.size - n_in, pattern=(*p.pattern, False))
            )
    return out


def _score(graph: Graph, pieces: list[_Piece], pool: list[int]) -> list[tuple[float, float, int]]:
    """(information of the batch with x, probability x is bad, x) for each x of the pool."""
    anc = graph.anc
    total = sum(p.size * p.weight for p in pieces)
    base_fail = sum(p.size * p.weight * p.fail_out for p in pieces) / total
    base_noise = sum(p.size * p.weight * p.noise_out for p in pieces) / total
    terms = [(p.bits, p.weight, p.gain_in, p.noise_gain) for p in pieces]
    joint = bool(pieces[0].pattern)
    out: list[tuple[float, float, int]] = []
    for x in pool:
        a = anc[x]
        m = fail = noise = 0.0
        if joint:
            counts = [(bits & a).bit_count() for bits, _, _, _ in terms]
            for (_, w, gain, nz), n in zip(terms, counts, strict=True):
                m += n * w
                fail += n * gain
                noise += n * nz
            info = _joint_entropy(pieces, counts, total) - base_noise - noise / total
        else:
            for bits, w, gain, nz in terms:
                n = (bits & a).bit_count()
                if n:
                    m += n * w
                    fail += n * gain
                    noise += n * nz
            info = _h(base_fail + fail / total) - base_noise - noise / total
        out.append((info, m / total, x))
    return out


def _joint_entropy(pieces: list[_Piece], counts: list[int], total: float) -> float:
    """Entropy of the outcomes of the batch (the seeds' noise, equal for every x, left out).

    Pieces are pooled by pattern with mass-averaged failure rates, which is exact when the noise
    hypotheses agree across classes and close otherwise.
    """
    groups: dict[tuple[bool, ...], list[float]] = {}
    for p, n in zip(pieces, counts, strict=True):
        for bad, c in ((True, n), (False, p.size - n)):
            if c:
                v = c * p.weight / total
                g = groups.setdefault((*p.pattern, bad), [0.0, 0.0, 0.0, 0.0, 0.0])
                g[0] += v
                g[1] += v * p.fail_in
                g[2] += v * p.fail_out
                g[3] += v * p.noise_in
                g[4] += v * p.noise_out
    n_pts = len(pieces[0].pattern) + 1
    probs = [0.0] * (1 << n_pts)
    for pat, (v, fi, fo, _, _) in groups.items():
        f_in, f_out = fi / v, fo / v
        dist = [v]
        for bad in pat:
            pf = f_in if bad else f_out
            dist = [d * (1.0 - pf) for d in dist] + [d * pf for d in dist]
        for y, d in enumerate(dist):
            probs[y] += d
    ent = -sum(q * math.log2(q) for q in probs if q > 0.0)
    seeds_noise = sum(
        sum(e_in if bad else e_out for bad in pat[:-1])
        for pat, (_, _, _, e_in, e_out) in groups.items()
    )
    return ent - seeds_noise


def _short_list(scored: list[tuple[float, float, int]]) -> list[int]:
    buckets: dict[int, list[tuple[float, float, int]]] = {}
    for t in scored:
        buckets.setdefault(min(int(t[1] * _BUCKETS), _BUCKETS - 1), []).append(t)
    out: list[int] = []
    for b in buckets.values():
        b.sort(key=lambda t: -t[0])
        out.extend(x for _, _, x in b[:_PER_BUCKET])
    return out
