"""A bisection's graph outlined for reading: tested commits, the culprit and its neighbourhood
shown, every untested stretch one gap, on linear histories and histories with merges."""

from __future__ import annotations

import itertools
import random
from typing import Any

from labgate.bisect.outline import NEIGHBOURS, outline


def linear_graph(n: int, tested: dict[int, list[str]], culprit: int) -> dict[str, Any]:
    """c{n-1} (newest) .. c0, each the parent of the next; probabilities peak at ``culprit``."""
    nodes = [
        {
            "id": f"x:c{i}",
            "tree": "x",
            "commit": f"c{i:039d}",
            "outcomes": tested.get(i, []),
            "probability": 0.9 if i == culprit else (0.01 if abs(i - culprit) < 30 else 0.0),
        }
        for i in reversed(range(n))
    ]
    edges = [[f"x:c{i}", f"x:c{i - 1}"] for i in range(1, n)]
    return {"nodes": nodes, "edges": edges}


def shown_commits(graph: dict[str, Any]) -> set[int]:
    return {int(n["id"].split(":c")[1]) for n in graph["nodes"] if "gap" not in n}


def test_five_thousand_commits_outline_to_the_tested_ones_and_the_culprits_neighbourhood() -> None:
    rng = random.Random(5)
    tested = {i: [rng.choice(["good", "bad"])] for i in rng.sample(range(5000), 13)}
    graph = linear_graph(5000, tested, culprit=3217)
    out = outline(graph, f"c{3217:039d}")
    assert len(out["nodes"]) <= 80
    shown = shown_commits(out)
    assert set(tested) <= shown
    assert {3217 + d for d in range(-NEIGHBOURS, NEIGHBOURS + 1)} <= shown
    gaps = [n for n in out["nodes"] if "gap" in n]
    # nothing lost: every commit is shown or counted in exactly one gap
    assert len(shown) + sum(g["gap"] for g in gaps) == 5000
    # still a path, newest first: each node's one edge leads to the next
    order = [n["id"] for n in out["nodes"]]
    path = set(itertools.pairwise(order))
    assert {(a, b) for a, b in out["edges"]} == path and len(out["edges"]) == len(path)
    for gap in gaps:  # a gap names its newest and oldest commit
        assert gap["first"] > gap["last"]
    assert outline(out, f"c{3217:039d}") == out  # outlining an outline changes nothing


def test_a_small_graph_is_left_whole() -> None:
    graph = linear_graph(40, {3: ["bad"]}, culprit=3)
    assert outline(graph, None) == graph


def test_stretches_joined_by_merges_are_one_gap_and_edges_stay_between_what_is_shown() -> None:
    # two branches of 100 untested commits each, forked at a tested base, merged at a tested tip
    nodes = [{"id": "tip", "commit": "tip", "outcomes": ["bad"]}]
    edges = [["tip", "a99"], ["tip", "b99"]]
    for side in "ab":
        for i in reversed(range(100)):
            nodes.append({"id": f"{side}{i}", "commit": f"{side}{i}", "outcomes": []})
            edges.append([f"{side}{i}", f"{side}{i - 1}" if i else "base"])
    nodes.append({"id": "base", "commit": "base", "outcomes": ["good"]})
    out = outline({"nodes": nodes, "edges": edges}, None, limit=20)
    ids = [n["id"] for n in out["nodes"]]
    gaps = [n for n in out["nodes"] if "gap" in n]
    assert ids[0] == "tip" and ids[-1] == "base"
    assert sorted(g["gap"] for g in gaps) == [100, 100]  # the two sides stay apart
    for gap in gaps:
        assert ["tip", gap["id"]] in out["edges"] and [gap["id"], "base"] in out["edges"]
    assert len(out["edges"]) == 4
