"""A bisection's revision graph cut to what a person reads: the tested commits, the culprit and
the likeliest candidates with their neighbours, every other stretch collapsed into one *gap*.

A graph is the dict a lab bisection stores (``{"nodes": [...], "edges": [[child, parent]...]}``,
each node with ``id``, ``tree``, ``commit``, ``subject``, ``outcomes`` and ``probability``). The
outline is a graph of the same shape whose gap nodes carry ``gap`` (how many commits they stand
for) and ``first``/``last`` (the newest and oldest of them, in the graph's order). On 5,000 commits
a search tests a dozen or two: the outline keeps tens of nodes, so the page stays readable, with or
without Graphviz. Outlining an outline changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KEEP_CANDIDATES = 10
"""The likeliest candidates kept (with their neighbours) besides every tested commit."""
NEIGHBOURS = 2
"""Commits kept on each side (parents and children) of the culprit and of those candidates."""


def outline(
    graph: Mapping[str, Any], culprit: str | None = None, *, limit: int = 60
) -> dict[str, Any]:
    """``graph`` itself when it has at most ``limit`` nodes; otherwise its outline (see the
    module docs). ``culprit``: the culprit's commit (full or prefix), kept with its neighbours."""
    nodes = [n for n in graph.get("nodes", []) if isinstance(n, Mapping) and "id" in n]
    if len(nodes) <= limit:
        return {"nodes": list(nodes), "edges": list(graph.get("edges", []))}
    ids = [str(n["id"]) for n in nodes]
    position = {i: k for k, i in enumerate(ids)}
    edges = [
        (str(e[0]), str(e[1]))
        for e in graph.get("edges", [])
        if isinstance(e, list | tuple) and len(e) == 2
    ]
    shown = _kept(nodes, edges, culprit)
    # each connected stretch of hidden commits becomes one gap (union-find over hidden edges)
    root = {i: i for i in ids if i not in shown}

    def find(i: str) -> str:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for child, parent in edges:
        if child in root and parent in root:
            a, b = find(child), find(parent)
            if a != b:
                root[max(a, b, key=position.__getitem__)] = min(a, b, key=position.__getitem__)
    members: dict[str, list[str]] = {}
    for i in ids:
        if i in root:
            members.setdefault(find(i), []).append(i)
    by_id = {str(n["id"]): n for n in nodes}
    out_nodes: list[dict[str, Any]] = []
    placed: set[str] = set()
    for i in ids:
        if i in shown:
            out_nodes.append(dict(by_id[i]))
            continue
        group = find(i)
        if group in placed:
            continue
        placed.add(group)
        stretch = members[group]
        first, last = by_id[stretch[0]], by_id[stretch[-1]]
        out_nodes.append(
            {
                "id": f"gap:{group}",
                "tree": first.get("tree", ""),
                "gap": len(stretch),
                "first": first.get("commit", ""),
                "last": last.get("commit", ""),
                "outcomes": [],
            }
        )
    name = {i: (i if i in shown else f"gap:{find(i)}") for i in ids}
    out_edges: list[list[str]] = []
    seen: set[tuple[str, str]] = set()
    for child, parent in edges:
        if child not in name or parent not in name:
            continue
        pair = (name[child], name[parent])
        if pair[0] != pair[1] and pair not in seen:
            seen.add(pair)
            out_edges.append(list(pair))
    return {"nodes": out_nodes, "edges": out_edges}


def _kept(
    nodes: list[Mapping[str, Any]], edges: list[tuple[str, str]], culprit: str | None
) -> set[str]:
    """The nodes an outline shows: tested ones, gaps already made, the culprit and the likeliest
    candidates with their neighbours, and the graph's ends."""
    shown = {str(n["id"]) for n in nodes if n.get("outcomes") or n.get("gap")}
    shown |= {str(nodes[0]["id"]), str(nodes[-1]["id"])}
    ranked = sorted(
        (n for n in nodes if isinstance(n.get("probability"), int | float) and n["probability"]),
        key=lambda n: -float(n["probability"]),
    )
    focus = {str(n["id"]) for n in ranked[:KEEP_CANDIDATES]}
    if culprit:
        focus |= {str(n["id"]) for n in nodes if str(n.get("commit", "")).startswith(culprit)}
    near: dict[str, set[str]] = {}
    for child, parent in edges:
        near.setdefault(child, set()).add(parent)
        near.setdefault(parent, set()).add(child)
    frontier = set(focus)
    for _ in range(NEIGHBOURS):
        frontier = {m for i in frontier for m in near.get(i, ())} - focus
        focus |= frontier
    return shown | focus
