"""The search space of a bisection: the ranges of one or more trees as one chain of DAGs.

Every commit of every range gets an index; indices follow the trees in the given order and, inside a
tree, a topological order (parents first). A *test point* is one index: the revision tuple that puts
the trees before it at their bad commit, its own tree at that commit, and the trees after it at
their (first) good commit. The point is bad under culprit ``c`` iff ``c`` is in its ancestor set,
kept as a Python int used as a bitset (bit ``i`` = index ``i``), which makes every set operation of
the search a handful of big-int operations even on 10,000 commits.

Two more hypotheses stand beside the commits, so that a test that never fails at the bad end, or
already fails at the good end, is found out instead of blamed on a commit: ``good_end`` (index
``size``: the good side already fails; bad at every point, the good end's own point included) and
``no_culprit`` (index ``size + 1``: the bad end does not fail; bad at no point). The good end is
also a point, of index ``good_end``.

``listed`` is the order git bisect walks the commits in: the reverse of the order the range's
``parents`` give them, which for :func:`labgate.bisect.gitgraph.read_range` is ``git rev-list``'s
(newest first), so ``listed`` is oldest first, as git's ``find_bisection`` reverses its list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["BisectError", "Graph", "PointKey", "TreeRange", "members"]

PointKey = tuple[tuple[str, str], ...]
"""A revision tuple in hashable form: ``((tree, commit), ...)`` in the order of the ranges."""


class BisectError(ValueError):
    """The input of a bisection is inconsistent: unknown commit, empty range, good not below bad."""


@dataclass(frozen=True)
class TreeRange:
    """The commits of one tree between its good boundary and its bad commit.

    ``parents`` maps every commit of the range (reachable from ``bad``, not from any ``good``) to
    its parents, as ``git rev-list --parents bad ^good...`` prints them; parents outside the range
    are on the good side and may be omitted from the keys.
    """

    tree: str
    parents: Mapping[str, tuple[str, ...]]
    good: tuple[str, ...]
    bad: str


class Graph:
    """The precomputed chain of DAGs: indices, ancestor and descendant bitsets, points.

    ``anc`` has an entry per point (the commits and the good end) and includes the ``good_end``
    hypothesis; ``desc`` and the other per-commit lists cover the commits only.
    """

    def __init__(self, ranges: Sequence[TreeRange], *, first_parent: bool = False) -> None:
        validate(ranges)
        self.trees: tuple[str, ...] = tuple(r.tree for r in ranges)
        self.first_parent = first_parent
        self.commits: list[tuple[str, str]] = []  # index -> (tree, commit)
        self.parents: list[tuple[int, ...]] = []  # index -> parents inside the ranges
        self.outside_parent: list[bool] = []  # index -> has a parent on the good side
        self.anc: list[int] = []  # index -> bitset of in-range ancestors, itself included
        self.tree_of: list[int] = []
        self.index: dict[tuple[str, str], int] = {}
        self.listed: list[int] = []  # git bisect's walking order (see the module's docstring)
        self._bad = {r.tree: r.bad for r in ranges}
        self._goods = {r.tree: frozenset(r.good) for r in ranges}
        self._first_good = {r.tree: r.good[0] for r in ranges}
        below = 0  # bitset of every index of the earlier trees: all bad at any later point
        for t, r in enumerate(ranges):
            order = _first_parent_chain(r) if first_parent else _topological(r)
            local = {c: i for i, c in enumerate(order, start=len(self.commits))}
            for c in order:
                i = local[c]
                ps = r.parents.get(c, ())
                inside: tuple[int, ...]
                if first_parent:
                    inside = (local[ps[0]],) if ps and ps[0] in local else ()
                else:
                    inside = tuple(local[p] for p in ps if p in local)
                a = 1 << i
                for p in inside:
                    a |= self.anc[p]
                self.commits.append((r.tree, c))
                self.parents.append(inside)
                self.outside_parent.append(len(inside) < len(ps) or not ps)
                self.anc.append(a | below if not inside else a)
                self.tree_of.append(t)
                self.index[(r.tree, c)] = i
            self.listed += [local[c] for c in reversed(list(r.parents)) if c in local]
            below |= (1 << len(self.commits)) - 1
        self.size = len(self.commits)
        self.good_end = self.size  # the point of the good end, and the hypothesis it fails
        self.no_culprit = self.size + 1  # the hypothesis that the bad end does not fail
        self.all = (1 << self.size) - 1  # the commits only
        before = 1 << self.good_end
        self.anc = [a | before for a in self.anc] + [before]
        self.desc = _descendants(self.parents, self.tree_of)
        # The points a culprit's parents are tested at: its parents in the range or, for a root,
        # the good end (first tree) or the previous tree's bad commit (a later tree's good side is
        # not a point of the chain).
        ends = [
            i
            for i in range(self.size)
            if i + 1 == self.size or self.tree_of[i + 1] != self.tree_of[i]
        ]
        self.confirm_parents: list[tuple[int, ...]] = [
            ps or ((self.good_end,) if self.tree_of[i] == 0 else (ends[self.tree_of[i] - 1],))
            for i, ps in enumerate(self.parents)
        ]
        self.boundary: PointKey = tuple((r.tree, r.good[0]) for r in ranges)
        self.points: list[PointKey] = [self._point_key(i) for i in range(self.size)]
        self.points.append(self.boundary)
        self._point_index = {k: i for i, k in enumerate(self.points)}

    def _point_key(self, i: int) -> PointKey:
        commit = self.commits[i][1]
        t = self.tree_of[i]
        return tuple(
            (name, self._bad[name] if u < t else commit if u == t else self._first_good[name])
            for u, name in enumerate(self.trees)
        )

    def locate(self, point: Mapping[str, str]) -> int | None:
        """The index a revision tuple tests, ``good_end`` for the all-good boundary, None when off
        the chain.

        Any good commit of a tree counts as that tree's good side; a tuple whose trees before the
        varying one are not all at their bad commit (or whose commit is outside the ranges) is off
        the chain and carries no information this model can use.
        """
        if set(point) != set(self.trees):
            missing = sorted(set(self.trees) - set(point))
            extra = sorted(set(point) - set(self.trees))
            raise BisectError(f"test point {dict(point)} names trees {extra} / lacks {missing}")
        varying = None
        for t, name in enumerate(self.trees):
            if point[name] not in self._goods[name]:
                varying = t
        if varying is None:
            return self.good_end
        for name in self.trees[:varying]:
            if point[name] != self._bad[name]:
                return None
        return self.index.get((self.trees[varying], point[self.trees[varying]]))

    def key_of(self, point: Mapping[str, str]) -> PointKey:
        return tuple((name, point[name]) for name in self.trees if name in point)


def validate(ranges: Sequence[TreeRange]) -> None:
    """Raise :class:`BisectError` for an input the search cannot work on, saying what is wrong."""
    if not ranges:
        raise BisectError("no range to bisect: give at least one tree's good and bad commits")
    seen: set[str] = set()
    for r in ranges:
        name = repr(r.tree) if r.tree else "the repository"
        if r.tree in seen:
            raise BisectError(f"tree {name} is given twice")
        seen.add(r.tree)
        if not r.good:
            raise BisectError(f"{name}: no good commit given; the search needs a good boundary")
        if not r.parents:
            raise BisectError(f"{name}: the range is empty; is {r.bad} really bad and not good?")
        if r.bad not in r.parents:
            raise BisectError(f"{name}: bad commit {r.bad} is not in the range given")
        for g in r.good:
            if g in r.parents:
                raise BisectError(
                    f"{name}: good commit {g} is inside the range; it must be an ancestor of bad"
                )
        _reachable_check(r, name)


def _reachable_check(r: TreeRange, name: str) -> None:
    seen = {r.bad}
    stack = [r.bad]
    outside: set[str] = set()
    while stack:
        for p in r.parents.get(stack.pop(), ()):
            if p in r.parents:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
            else:
                outside.add(p)
    stray = [c for c in r.parents if c not in seen]
    if stray:
        raise BisectError(
            f"{name}: commit {stray[0]} is in the range but not an ancestor of bad {r.bad}"
            f" ({len(stray)} such commits)"
        )
    if not outside & set(r.good):
        raise BisectError(
            f"{name}: no good commit {list(r.good)} is a parent of the range; "
            f"good must be an ancestor of bad {r.bad}"
        )


def _topological(r: TreeRange) -> list[str]:
    """Commits of the range, parents first (iterative DFS from bad, deterministic)."""
    order: list[str] = []
    done: set[str] = set()
    stack: list[tuple[str, int]] = [(r.bad, 0)]
    while stack:
        c, k = stack.pop()
        ps = [p for p in r.parents.get(c, ()) if p in r.parents]
        if k < len(ps):
            stack.append((c, k + 1))
            if ps[k] not in done:
                stack.append((ps[k], 0))
        elif c not in done:
            done.add(c)
            order.append(c)
    return order


def _first_parent_chain(r: TreeRange) -> list[str]:
    chain = [r.bad]
    while True:
        ps = r.parents.get(chain[-1], ())
        if not ps or ps[0] not in r.parents:
            break
        chain.append(ps[0])
    chain.reverse()
    return chain


def _descendants(parents: list[tuple[int, ...]], tree_of: list[int]) -> list[int]:
    """Descendants of each index, itself included; every later tree's commits descend from it."""
    n = len(parents)
    desc = [1 << i for i in range(n)]
    for i in range(n - 1, -1, -1):
        for p in parents[i]:
            desc[p] |= desc[i]
    later = 0
    for i in range(n - 1, -1, -1):
        if i + 1 < n and tree_of[i + 1] != tree_of[i]:
            later = ((1 << n) - 1) & ~((1 << (i + 1)) - 1)
        desc[i] |= later
    return desc


def members(bits: int) -> list[int]:
    """The indices set in a bitset, ascending."""
    s = bin(bits)[:1:-1]
    out: list[int] = []
    i = s.find("1")
    while i >= 0:
        out.append(i)
        i = s.find("1", i + 1)
    return out
