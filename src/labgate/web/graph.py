"""A bisection's tested revision graph drawn by Graphviz (``dot -Tsvg``), for inlining in a page.

Node ids are generated (``n0``, ``n1``...); every piece of outside text (commit subjects, tree
names) reaches dot only inside a quoted string with its quotes and backslashes escaped, so it can
neither end the string nor use dot's escapes; dot itself escapes text for XML in the SVG.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labgate.bisect.outline import outline

DOT_TIMEOUT = 10.0
MAX_NODES = 2000
PAGE_NODES = 80
"""A graph larger than this is drawn as its outline (untested stretches collapsed)."""

OUTCOME_FILL = {
    "pass": "#b7f0b1",
    "fail": "#ffb3b3",
    "broken": "#f3b3f3",
    "blocked": "#fff2a8",
    "skip": "#e0e0e0",
    "running": "#b3d7ff",
}


ALIASES = {"good": "pass", "bad": "fail"}


class GraphError(Exception):
    """Graphviz is missing or failed; the page says so instead of the graph."""


@dataclass(frozen=True)
class Node:
    key: str
    tree: str
    commit: str
    subject: str
    outcomes: tuple[str, ...]
    probability: float | None
    gap: int = 0
    """For a gap of an outline: how many untested commits it stands for (newest ``commit``,
    oldest ``last``)."""
    last: str = ""


def nodes_of(graph: Mapping[str, Any]) -> list[Node]:
    out = []
    for raw in graph.get("nodes", []):
        if not isinstance(raw, Mapping):
            continue
        probability = raw.get("probability")
        gap = raw.get("gap")
        out.append(
            Node(
                key=str(raw.get("id", "")),
                tree=str(raw.get("tree") or ""),
                commit=str(raw.get("first" if gap else "commit") or ""),
                subject=str(raw.get("subject") or ""),
                outcomes=tuple(str(o) for o in raw.get("outcomes") or ()),
                probability=float(probability) if isinstance(probability, int | float) else None,
                gap=int(gap) if isinstance(gap, int) else 0,
                last=str(raw.get("last") or ""),
            )
        )
    return out


def dot_string(text: str) -> str:
    """``text`` as a DOT quoted string: one line, quotes and backslashes escaped."""
    one_line = re.sub(r"[\x00-\x1f\x7f]+", " ", text)
    return '"' + one_line.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fill_for(outcomes: Sequence[str]) -> str:
    """Green when every run passed, red when every run failed, orange when both (a flake),
    magenta when only the lab broke, white when untested."""
    # the gate writes a bisection's observations as good/bad; flights' outcomes are pass/fail
    seen = {ALIASES.get(o, o) for o in outcomes}
    if "pass" in seen and "fail" in seen:
        return "#ffd28a"
    for outcome in ("fail", "pass", "broken", "blocked", "skip", "running"):
        if outcome in seen:
            return OUTCOME_FILL[outcome]
    return "#ffffff"


def _label(node: Node) -> str:
    if node.gap:
        return f"{node.gap} untested commits\n{node.commit[:12]} .. {node.last[:12]}"
    subject = node.subject if len(node.subject) <= 48 else node.subject[:47] + "…"
    runs = " ".join(node.outcomes) or "untested"
    probability = "" if node.probability is None else f"  p={node.probability:.3f}"
    return f"{node.tree} {node.commit[:12]}\n{subject}\n{runs}{probability}"


def page_outline(graph: Mapping[str, Any], culprit: str | None) -> dict[str, Any]:
    """The graph as the page shows it, drawn or listed: its outline past ``PAGE_NODES`` (see
    :func:`labgate.bisect.outline.outline`)."""
    return outline(graph, culprit, limit=PAGE_NODES)


def to_dot(graph: Mapping[str, Any], culprit: str | None) -> str:
    """The DOT text of the graph (gap nodes of an outline drawn as such); ``culprit`` is the
    culprit's commit (full or prefix)."""
    nodes = nodes_of(graph)[:MAX_NODES]
    ids = {n.key: f"n{i}" for i, n in enumerate(nodes)}
    lines = [
        "digraph bisection {",
        '  graph [rankdir=TB, nodesep=0.25, ranksep=0.3, bgcolor="transparent"];',
        '  node [shape=box, style="rounded,filled", fontname="DejaVu Sans Mono", fontsize=10];',
        '  edge [color="#888888", arrowsize=0.6];',
    ]
    for node in nodes:
        attrs = ["label=" + _multiline(_label(node))]
        attrs.append(f'fillcolor="{fill_for(node.outcomes)}"')
        if node.gap:
            attrs += ['style="rounded,dashed"', 'fontcolor="#666666"']
        attrs.append(f"tooltip={dot_string(node.tree + ' ' + node.commit + ': ' + node.subject)}")
        if culprit and node.commit and node.commit.startswith(culprit[:40]):
            attrs += ["penwidth=3", 'color="#b00000"', "peripheries=2"]
        lines.append(f"  {ids[node.key]} [{', '.join(attrs)}];")
    for edge in graph.get("edges", []):
        if isinstance(edge, Sequence) and len(edge) == 2:
            child, parent = (str(e) for e in edge)
            if child in ids and parent in ids:
                lines.append(f"  {ids[child]} -> {ids[parent]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _multiline(text: str) -> str:
    """A quoted DOT label whose lines are joined by dot's centred line break ``\\n``."""
    return '"' + "\\n".join(dot_string(line)[1:-1] for line in text.split("\n")) + '"'


def render_svg(dot: str) -> str:
    """The SVG element dot draws (XML prolog and doctype removed), for inlining."""
    try:
        done = subprocess.run(
            ["dot", "-Tsvg"],
            input=dot,
            capture_output=True,
            text=True,
            timeout=DOT_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as error:
        raise GraphError("Graphviz is not installed (Debian package graphviz)") from error
    except subprocess.TimeoutExpired as error:
        raise GraphError(f"dot took more than {DOT_TIMEOUT:.0f} s") from error
    if done.returncode != 0:
        raise GraphError(f"dot failed: {done.stderr.strip()[:500]}")
    start = done.stdout.find("<svg")
    if start < 0:
        raise GraphError("dot gave no SVG")
    svg = done.stdout[start:]
    if re.search(r"<script", svg, re.IGNORECASE):
        raise GraphError("refusing an SVG with script in it")
    return svg
