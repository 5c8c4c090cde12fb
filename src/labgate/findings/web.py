"""The dashboard's findings pages: a flight's findings against its baseline (with triage forms
behind the ``[web] token``), a file at a tested revision with its lines numbered (what a
finding's ``file:line`` links to), and each rule's count over a branch's flights."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from labgate.findings.compare import State
from labgate.findings.model import TriageState
from labgate.findings.report import flight_comparison
from labgate.git import GitError, git
from labgate.store import dashboard as queries
from labgate.web import plots

if TYPE_CHECKING:
    from labgate.web.pages import Web

SOURCE_LIMIT = 2 * 1024 * 1024  # a file shown at a revision: at most this many characters
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


def findings_page(web: Web, request: Request) -> Response:
    """``/flights/{id}/findings``: new and fixed findings against the baseline (and the
    unchanged ones with ``?unchanged=1``)."""
    from labgate.web.pages import flight_or_404

    flight = flight_or_404(web, request, request.path_params["flight_id"])
    comparison = flight_comparison(web.store, flight.id, web.lab.findings)
    baseline = web.store.get_flight(comparison.baseline) if comparison.baseline else None
    unchanged = request.query_params.get("unchanged") == "1"
    rows = [r for r in comparison.rows if unchanged or r.state is not State.UNCHANGED]
    return web.render(
        request,
        "findings.html",
        {
            "flight": flight,
            "baseline": baseline,
            "comparison": comparison,
            "rows": rows,
            "show_unchanged": unchanged,
            "counts": comparison.counts(),
            "states": [str(s) for s in TriageState],
        },
    )


async def triage_finding(web: Web, request: Request) -> Response:
    """``POST /findings/{identity}/triage`` (token): set or clear (state ``none``) a finding's
    triage; back to the flight page it was posted from."""
    from labgate.web.pages import _form, authorize

    await authorize(web, request)
    form = await _form(request)
    identity = request.path_params["identity"]
    state, reason, by = form.get("state", ""), form.get("reason", "").strip(), form.get("by", "")
    flight = form.get("flight", "")
    if not re.fullmatch(r"[0-9a-f]{20}", identity):
        raise HTTPException(404, f"no finding {identity!r}")
    if not flight.isascii() or not flight.isdigit():
        raise HTTPException(400, "flight: the flight the form was posted from is missing")
    if state == "none":
        await asyncio.to_thread(web.store.clear_triage, identity)
    elif state in {str(s) for s in TriageState}:
        if not reason or not by.strip():
            raise HTTPException(400, "reason and by: say why, and who says so")
        await asyncio.to_thread(
            web.store.set_triage, identity, TriageState(state), reason, by.strip()
        )
    else:
        raise HTTPException(400, "state must be false-positive, intentional or none")
    return RedirectResponse(f"/flights/{int(flight)}/findings#f-{identity}", status_code=303)


def source_page(web: Web, request: Request) -> Response:
    """``/source/{tree}/{sha}/{path}``: a file of a tree at a revision, lines numbered."""
    from labgate.web.pages import viewer_of

    tree, sha, path = (request.path_params[k] for k in ("tree", "sha", "path"))
    if tree not in web.lab.trees:
        raise HTTPException(404, f"no tree {tree!r} in this lab")
    if not _SHA.match(sha) or path.startswith(("-", "/")) or ".." in path.split("/"):
        raise HTTPException(404, "no such file at that revision")
    missing = HTTPException(404, f"{tree} has no {path} at {sha[:12]}")
    # only a revision a flight the viewer may see tested: an embargoed one is missing to others
    if not queries.revision_seen(web.store, viewer_of(request), tree, sha):
        raise missing
    try:
        text = git(["show", f"{sha}:{path}"], git_dir=web.mirrors.path(tree))
    except GitError:
        raise missing from None
    cut = len(text) > SOURCE_LIMIT
    return web.render(
        request,
        "source.html",
        {
            "tree": tree,
            "sha": sha,
            "path": path,
            "lines": text[:SOURCE_LIMIT].splitlines(),
            "cut": cut,
        },
    )


def findings_trend_page(web: Web, request: Request) -> Response:
    """``/findings/trend?branch=B``: each rule's count of findings per flight of the branch
    (a branch under embargo only for its group)."""
    from labgate.web.pages import viewer_of, visible_branches

    branches = visible_branches(web, viewer_of(request))
    branch = request.query_params.get("branch") or (branches[0] if branches else None)
    if branch is not None and branch not in branches:
        raise HTTPException(404, f"no branch {branch!r} in this lab")
    chart = None
    if branch:
        counts = web.store.rule_counts(branch, limit=200, viewer=viewer_of(request))
        flights = sorted({f for f, _, _ in counts})
        by_rule: dict[str, dict[int, float]] = {}
        for flight_id, rule, n in counts:
            by_rule.setdefault(rule, {})[flight_id] = n
        series = [
            plots.Series(rule, tuple((f, values.get(f, 0.0)) for f in flights))
            for rule, values in sorted(by_rule.items())
        ]
        if series:
            chart = plots.line_chart(series, title=f"{branch}: findings per rule per flight")
    return web.render(
        request,
        "findings_trend.html",
        {"branch": branch, "all_branches": branches, "chart": chart},
    )


def routes() -> list[tuple[str, object, list[str]]]:
    """The findings pages, for the dashboard's table of routes."""
    return [
        ("/flights/{flight_id:int}/findings", findings_page, ["GET"]),
        ("/findings/trend", findings_trend_page, ["GET"]),
        ("/findings/{identity}/triage", triage_finding, ["POST"]),
        ("/source/{tree}/{sha}/{path:path}", source_page, ["GET"]),
    ]
