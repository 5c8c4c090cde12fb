"""The HTML pages: flights, a flight, a job, a step's log (live), history, hosts, branches,
bisections, trends; and the two actions (cancel, retest) behind the lab's token.

Each request's viewer (see ``auth``) is found once, in :func:`bind`, and every read goes through
``labgate.store.dashboard`` with it: what the viewer may not see is what does not exist."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from labgate.commandline import MAX_ID
from labgate.config import Lab
from labgate.findings.web import routes as findings_routes
from labgate.flight import FlightError, mirrors_for, plan_flight
from labgate.git import GitError, Mirrors
from labgate.model import Blessing, FlightResult, JobResult, Outcome, StepResult
from labgate.store import Store
from labgate.store import dashboard as queries
from labgate.store.branches import regressions_of
from labgate.store.users import ANONYMOUS, Users, Viewer
from labgate.verdict import FlakeRate, flake_rates
from labgate.web import graph, perf, plots
from labgate.web.auth import SESSION_COOKIE, Access, BadToken, same_origin
from labgate.web.logs import (
    LiveStep,
    LogOutsideLogDir,
    NotARegularFile,
    file_chunks,
    log_path,
    open_log,
    read_tail,
    stream_log,
)
from labgate.web.review import review_page

FORM_LIMIT = 16 * 1024
STATE_CLASS = {
    "quarantined": "o-broken",
    "reserved": "o-blocked",
    "busy": "o-running",
    "free": "o-free",
}


@dataclass
class Web:
    """What every page needs: the lab, its store, who may act, the templates."""

    lab: Lab
    store: Store
    access: Access
    templates: Jinja2Templates
    mirrors: Mirrors = field(init=False)
    users: Users = field(init=False)

    def __post_init__(self) -> None:
        self.mirrors = mirrors_for(self.lab)
        self.users = Users(self.store.engine)

    def render(
        self, request: Request, name: str, context: Mapping[str, Any], status: int = 200
    ) -> Response:
        viewer = viewer_of(request)
        base = {
            "lab": self.lab,
            "writable": self.access.enabled,
            "csrf": self.access.csrf_for(request),
            "viewer": viewer,
            "branches": visible_branches(self, viewer) if self.open_to(viewer) else [],
            "commit": self.commit,
        }
        return self.templates.TemplateResponse(
            request, name, {**base, **context}, status_code=status
        )

    def open_to(self, viewer: Viewer) -> bool:
        """False for anonymous under ``[web] anonymous = false``: they see the login form only."""
        return self.lab.web_anonymous or not viewer.anonymous

    def commit(self, tree: str | None, sha: str | None) -> Any:
        """Author, date and subject of a tested commit (or a culprit) from the lab's mirror,
        None when unknown."""
        if not tree or not sha:
            return None
        path = self.mirrors.path(tree)
        if not (path / "HEAD").exists():
            return None
        return _commit(self.mirrors, tree, sha)


@lru_cache(maxsize=4096)
def _commit(mirrors: Mirrors, tree: str, sha: str) -> Any:
    try:  # a sha names one commit forever: cached
        return mirrors.commit(tree, sha)
    except GitError:
        return None


def int_param(request: Request, name: str) -> int | None:
    """A query parameter that is a number from 0 to MAX_ID (400 otherwise), None when absent."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    # isascii: "²" is a digit to str.isdigit, and no number to int()
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_ID:
        raise HTTPException(400, f"{name} must be a number from 0 to {MAX_ID}")
    return int(value)


def _ids_in_range(request: Request) -> None:
    """A path's number past MAX_ID names nothing stored (and would overflow the store's query)."""
    for name, value in request.path_params.items():
        if isinstance(value, int) and value > MAX_ID:
            raise HTTPException(404, f"no {name.removesuffix('_id')} {value}")


def choice_param(request: Request, name: str, allowed: set[str]) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and value not in allowed:
        raise HTTPException(400, f"{name} must be one of {', '.join(sorted(allowed))}")
    return value


def viewer_of(request: Request) -> Viewer:
    """Who the request comes from (found by :func:`bind`)."""
    # an error page may come before bind() found the viewer (no such route, a bad token)
    viewer: Viewer = getattr(request.state, "viewer", ANONYMOUS)
    return viewer


def flight_or_404(web: Web, request: Request, flight_id: int) -> FlightResult:
    """The flight, if the viewer may see it (FlightNotFound, a 404, for a hidden one as for a
    missing one); a look at embargoed work goes to the audit log."""
    viewer = viewer_of(request)
    flight, embargo = queries.flight(web.store, viewer, flight_id)
    if embargo is not None:
        web.users.record_view(viewer, flight_id, embargo.group, request.url.path)
    return flight


def visible_branches(web: Web, viewer: Viewer) -> list[str]:
    """The lab's branches the viewer may see: an embargoed branch only for its group."""
    return sorted(name for name, spec in web.lab.branches.items() if viewer.sees(spec.embargo))


def job_or_404(flight: FlightResult, name: str) -> JobResult:
    try:
        return flight.job(name)
    except KeyError:
        raise HTTPException(404, f"flight {flight.id} has no job {name!r}") from None


def step_or_404(job: JobResult, seq: int) -> StepResult:
    if not 0 <= seq < len(job.steps):
        raise HTTPException(404, f"job {job.name!r} has no step {seq}")
    return job.steps[seq]


# --- flights -------------------------------------------------------------------------------


def flight_list(web: Web, request: Request) -> Response:
    branch = request.query_params.get("branch") or None
    blessing = choice_param(request, "blessing", {b.value for b in Blessing})
    outcome = choice_param(request, "outcome", set(queries.FLIGHT_FILTERS))
    page = queries.flight_page(
        web.store,
        viewer_of(request),
        branch=branch,
        blessing=blessing,
        outcome=outcome,
        before=int_param(request, "before"),
    )
    filters = {"branch": branch, "blessing": blessing, "outcome": outcome}
    older = None
    if page.older is not None:
        older = "?" + "&".join(
            [f"{k}={quote(v)}" for k, v in filters.items() if v] + [f"before={page.older}"]
        )
    return web.render(
        request,
        "flights.html",
        {
            "page": page,
            "filters": filters,
            "older": older,
            "blessings": [b.value for b in Blessing],
            "outcomes": queries.FLIGHT_FILTERS,
        },
    )


@dataclass(frozen=True)
class VerdictView:
    push_allowed: bool
    baseline: int | None
    details: list[dict[str, str]]
    retest: list[str]
    job_kinds: dict[str, str]


def verdict_view(stored: Mapping[str, Any] | None) -> VerdictView | None:
    """The stored verdict (the gate's JSON) in the shape the page shows; tolerant of fields the
    gate does not write."""
    if stored is None:
        return None
    data = stored.get("data") if isinstance(stored.get("data"), Mapping) else {}
    assert isinstance(data, Mapping)

    def rows(key: str) -> list[dict[str, str]]:
        items = data.get(key)
        if not isinstance(items, list):
            return []
        out = []
        for item in items:
            if isinstance(item, Mapping):
                out.append({k: "" if v is None else str(v) for k, v in item.items()})
        return out

    kinds = {
        r.get("job", ""): r.get("kind", "")
        for r in rows("items")
        if not r.get("step") and not r.get("testcase")
    }
    retest = data.get("retest")
    return VerdictView(
        push_allowed=bool(stored.get("push_allowed")),
        baseline=stored.get("baseline_flight"),
        details=rows("details"),
        retest=[str(r) for r in retest] if isinstance(retest, list) else [],
        job_kinds=kinds,
    )


def flight_page(web: Web, request: Request) -> Response:
    flight = flight_or_404(web, request, request.path_params["flight_id"])
    viewer = viewer_of(request)
    commits = {tree: web.commit(tree, sha) for tree, sha in flight.revisions.items()}
    steps = max((len(j.steps) for j in flight.jobs), default=0)
    stored = web.store.verdict(flight.id)
    pushes = web.store.pushes(flight_id=flight.id, viewer=viewer)[::-1]
    gate = None
    if stored is not None:
        regressions = regressions_of(stored.get("data"))
        gate = queries.GateState(
            bool(stored["push_allowed"]), regressions, pushes[-1] if pushes else None
        )
    served = (
        queries.bisection_served(web.store, viewer, flight.id)
        if flight.blessing is Blessing.BISECT
        else None
    )
    return web.render(
        request,
        "flight.html",
        {
            "flight": flight,
            "commits": commits,
            "max_steps": steps,
            "verdict": verdict_view(stored),
            "gate": gate,
            "served": served,
            "pushes": pushes,
            "bisections": web.store.bisections(flight_id=flight.id, viewer=viewer),
            "findings": web.store.count_findings(flight.id),
            "cancel_requested": web.store.cancel_requested(flight.id),
            "durations": {j.name: _job_seconds(j) for j in flight.jobs},
        },
    )


def _job_seconds(job: JobResult) -> float | None:
    total = [s.duration_s for s in job.steps if s.duration_s is not None]
    return sum(total) if total else None


def job_page(web: Web, request: Request) -> Response:
    flight = flight_or_404(web, request, request.path_params["flight_id"])
    job = job_or_404(flight, request.path_params["job"])
    trends = perf.job_trends(web, flight, job)
    return web.render(request, "job.html", {"flight": flight, "job": job, "trends": trends})


# --- logs ----------------------------------------------------------------------------------


def _step_log(
    web: Web, request: Request
) -> tuple[FlightResult, JobResult, StepResult, Path | None]:
    flight = flight_or_404(web, request, request.path_params["flight_id"])
    job = job_or_404(flight, request.path_params["job"])
    step = step_or_404(job, request.path_params["seq"])
    if not step.log:
        return flight, job, step, None
    try:
        return flight, job, step, log_path(web.lab.log_dir, step.log)
    except LogOutsideLogDir:
        raise HTTPException(403, "the stored log path is outside the lab's log dir") from None


def log_page(web: Web, request: Request) -> Response:
    flight, job, step, path = _step_log(web, request)
    text, size, cut = read_tail(path) if path is not None else ("", 0, False)
    return web.render(
        request,
        "log.html",
        {
            "flight": flight,
            "job": job,
            "step": step,
            "seq": request.path_params["seq"],
            "text": text,
            "size": size,
            "cut": cut,
            "live": not step.outcome.finished,
            "has_log": path is not None,
        },
    )


def log_raw(web: Web, request: Request) -> Response:
    _, _, _, path = _step_log(web, request)
    if path is None:
        raise HTTPException(404, "no log (the step has not run)")
    try:
        log = open_log(path)
    except FileNotFoundError:
        raise HTTPException(404, "no log (the step has not run)") from None
    except NotARegularFile:
        raise HTTPException(403, "the stored log path is not a regular file") from None
    size = os.fstat(log.fileno()).st_size
    return StreamingResponse(
        file_chunks(log, size),
        media_type="text/plain; charset=utf-8",
        headers={"cache-control": "no-store", "content-length": str(size)},
    )


async def log_stream(web: Web, request: Request) -> Response:
    """Server-sent events of a step's log from ``offset`` on, until the step ends (a queued
    step's stream waits for the runner to start it and name its log)."""
    _, _, step, _ = await asyncio.to_thread(_step_log, web, request)
    offset = int_param(request, "offset") or 0

    def state() -> LiveStep:
        outcome, stored, exit_status, duration_s = queries.step_state(web.store, step.id)
        try:
            path = log_path(web.lab.log_dir, stored) if stored else None
        except LogOutsideLogDir:
            return LiveStep(Outcome.BROKEN, None)
        return LiveStep(outcome, path, exit_status, duration_s)

    return StreamingResponse(
        stream_log(state, offset),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


# --- actions -------------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > FORM_LIMIT:
        raise HTTPException(413, "form too large")
    parsed = parse_qs(body.decode(errors="replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


async def authorize(web: Web, request: Request) -> None:
    if not web.access.enabled:
        raise HTTPException(403, "this dashboard is read-only: lab.toml has no [web] token")
    form = await _form(request)
    if not web.access.may_act(request, form.get("csrf")):
        raise HTTPException(403, "log in with the lab's token first (and post from this site)")


async def cancel_action(web: Web, request: Request, source: str) -> int:
    """The cancel action of a page's form or the API: ask the runner to cancel the request's
    flight (409 once it ended); returns the flight's id."""
    await authorize(web, request)
    flight_id: int = request.path_params["flight_id"]
    asked = await asyncio.to_thread(web.store.request_cancel, flight_id, source)
    if not asked:
        raise HTTPException(409, f"flight {flight_id} already ended")
    return flight_id


async def cancel_flight(web: Web, request: Request) -> Response:
    flight_id = await cancel_action(web, request, "web")
    return RedirectResponse(f"/flights/{flight_id}", status_code=303)


def runs_flake_rates(runs: Sequence[queries.JobRun], job: str) -> dict[str, FlakeRate]:
    """The flake rates of a job (key ``""``) and its steps over these runs of it, with their
    evidence."""
    return flake_rates([replace(r.flight, jobs=(r.job,)) for r in runs], job)


def glob_literal(name: str) -> str:
    """A glob that matches exactly ``name``."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def retest(web: Web, flight: FlightResult, job: str) -> int:
    """Plan a flight of ``job`` (and what it depends on) on the flight's revision tuple and hand
    it to the host pool, as ``labgate host queue`` does: ``labgate serve`` (or any ``labgate host
    worker``) runs it."""
    try:
        flight_id = plan_flight(
            web.lab,
            web.store,
            flight.branch,
            revisions=flight.revisions,
            job_globs=[glob_literal(job)],
            blessing=Blessing.ADHOC,
            embargo=web.users.embargo(flight.id),  # a retest stays under the flight's embargo
        )
    except (FlightError, LookupError) as error:
        raise HTTPException(409, f"cannot retest {job!r}: {error}") from None
    web.store.submit_flight(flight_id)
    return flight_id


async def retest_action(web: Web, request: Request) -> int:
    """The retest action of a page's form or the API: the new flight's id."""
    await authorize(web, request)
    flight = await asyncio.to_thread(flight_or_404, web, request, request.path_params["flight_id"])
    job = job_or_404(flight, request.path_params["job"]).name
    return await asyncio.to_thread(retest, web, flight, job)


async def retest_job(web: Web, request: Request) -> Response:
    new_id = await retest_action(web, request)
    return RedirectResponse(f"/flights/{new_id}", status_code=303)


def login_form(web: Web, request: Request) -> Response:
    return web.render(request, "login.html", {"error": None})


async def login(web: Web, request: Request) -> Response:
    form = await _form(request)
    token = form.get("token", "")
    known = await asyncio.to_thread(web.access.viewer_for, token)
    if not same_origin(request) or known is None:
        return web.render(request, "login.html", {"error": "wrong token"}, 403)
    response = RedirectResponse("/flights", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        web.access.new_session(token),
        max_age=int(web.access.ttl_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(web: Web, request: Request) -> Response:
    web.access.end_session(request)
    response = RedirectResponse("/flights", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# --- history, hosts, branches ---------------------------------------------------------------


def history_page(web: Web, request: Request) -> Response:
    branch, job = request.path_params["branch"], request.path_params["job"]
    step = request.query_params.get("step") or None
    runs = queries.job_runs(web.store, viewer_of(request), branch, job, limit=100)
    step_names = _step_names(runs)
    shown = [step] if step else step_names
    # per run, per shown step: (the step, its index in the job) or None; built here, as a
    # template would build it a hundred times slower
    cells = []
    for run in runs:
        by_name = {s.name: (s, i) for i, s in enumerate(run.job.steps)}
        cells.append([by_name.get(name) for name in shown])
    return web.render(
        request,
        "history.html",
        {
            "branch": branch,
            "job": job,
            "qjob": quote(job, safe=""),
            "step": step,
            "runs": runs,
            "step_names": step_names,
            "shown_steps": shown,
            "cells": cells,
            "rates": runs_flake_rates(runs, job),
        },
    )


def _step_names(runs: Sequence[queries.JobRun]) -> list[str]:
    """The names of the runs' steps, each once, in the order they first appear."""
    return list(dict.fromkeys(s.name for run in runs for s in run.job.steps))


def hosts_page(web: Web, request: Request) -> Response:
    hosts = queries.host_states(web.store, viewer_of(request), web.lab.hosts)
    return web.render(request, "hosts.html", {"hosts": hosts, "state_class": STATE_CLASS})


def host_page(web: Web, request: Request) -> Response:
    name = request.path_params["name"]
    viewer = viewer_of(request)
    hosts = {h.name: h for h in queries.host_states(web.store, viewer, web.lab.hosts)}
    if name not in hosts:
        raise HTTPException(404, f"no host {name!r} in this lab")
    runs = queries.host_runs(web.store, viewer, name, limit=100)
    events = queries.host_events(web.store, viewer, name)
    context = {"host": hosts[name], "runs": runs, "events": events, "state_class": STATE_CLASS}
    return web.render(request, "host.html", context)


def branch_states(web: Web, viewer: Viewer) -> list[queries.BranchState]:
    return [branch_state(web, viewer, name) for name in web.lab.branches if name in
            visible_branches(web, viewer)]  # fmt: skip


def branch_state(web: Web, viewer: Viewer, name: str, with_pushes: int = 1) -> queries.BranchState:
    """A branch of lab.toml with its last ``with_pushes`` pushes (those the viewer may see)."""
    spec = web.lab.branches[name]
    recent = web.store.pushes(name, limit=max(with_pushes, 20), viewer=viewer)
    pushes = recent[:with_pushes]
    pushed = next((p for p in recent[:20] if p.status == "pushed"), None)
    return queries.BranchState(
        name=name,
        tree=spec.tree,
        staging_ref=spec.staging,
        tested_ref=spec.tested,
        staging_sha=_ref(web, spec.tree, spec.staging),
        # what labgate last pushed there (the mirror may predate the push)
        tested_sha=pushed.sha if pushed else _ref(web, spec.tree, spec.tested),
        baseline=queries.baseline(web.store, viewer, name),
        last_flight=queries.last_flight(web.store, viewer, name),
        last_push=pushes[0] if pushes else None,
        pushes=tuple(pushes),
    )


def _ref(web: Web, tree: str, ref: str) -> str | None:
    """The ref's sha in the lab's mirror (as last fetched), None without a mirror."""
    if not (web.mirrors.path(tree) / "HEAD").exists():
        return None
    try:
        return web.mirrors.resolve(tree, ref)
    except GitError:
        return None


def branches_page(web: Web, request: Request) -> Response:
    return web.render(
        request, "branches.html", {"branches": branch_states(web, viewer_of(request))}
    )


def branch_page(web: Web, request: Request) -> Response:
    name = request.path_params["name"]
    viewer = viewer_of(request)
    if name not in visible_branches(web, viewer):
        raise HTTPException(404, f"no branch {name!r} in this lab")
    state = branch_state(web, viewer, name, with_pushes=100)
    recent = queries.flight_page(web.store, viewer, branch=name, limit=20)
    bisections = web.store.bisections(name, limit=5, viewer=viewer)
    context = {"branch": state, "recent": recent, "bisections": bisections}
    return web.render(request, "branch.html", context)


# --- bisections ----------------------------------------------------------------------------


def bisections_page(web: Web, request: Request) -> Response:
    branch = request.query_params.get("branch") or None
    return web.render(
        request,
        "bisections.html",
        {
            "bisections": web.store.bisections(branch, limit=100, viewer=viewer_of(request)),
            "branch": branch,
        },
    )


def bisection_page(web: Web, request: Request) -> Response:
    record = web.store.bisection(request.path_params["bisection_id"], viewer=viewer_of(request))
    shown = graph.page_outline(record.graph, record.culprit_commit)
    svg, error = None, None
    try:
        svg = graph.render_svg(graph.to_dot(shown, record.culprit_commit))
    except graph.GraphError as problem:
        error = str(problem)
    nodes = graph.nodes_of(record.graph)
    candidates = sorted(
        (n for n in nodes if n.probability), key=lambda n: n.probability or 0.0, reverse=True
    )
    # without Graphviz, the same outline as a list, newest first
    listed = [] if svg else graph.nodes_of(shown)
    return web.render(
        request,
        "bisection.html",
        {"b": record, "svg": svg, "graph_error": error, "candidates": candidates[:30],
         "outline": listed},
    )  # fmt: skip


# --- trends --------------------------------------------------------------------------------


def trends_page(web: Web, request: Request) -> Response:
    viewer = viewer_of(request)
    branches = visible_branches(web, viewer) or queries.branch_names(web.store, viewer)
    branch = request.query_params.get("branch") or (branches[0] if branches else None)
    job = request.query_params.get("job") or None
    charts: list[str] = []
    jobs: list[str] = []
    if branch:
        jobs = queries.job_names(web.store, viewer, branch)
        rates = queries.pass_rates(web.store, viewer, branch)
        charts.append(
            plots.line_chart(
                [plots.Series("jobs passed", tuple((r.flight, r.rate) for r in rates))],
                title=f"{branch}: share of jobs passed per flight",
                y_format=lambda v: f"{100 * v:.0f}%",
                y_max=1.0,
            )
        )
        if job:
            charts += _job_charts(web, viewer, branch, job)
    return web.render(
        request,
        "trends.html",
        {"branch": branch, "job": job, "jobs": jobs, "charts": charts, "all_branches": branches},
    )


def _job_charts(web: Web, viewer: Viewer, branch: str, job: str) -> list[str]:
    runs = list(reversed(queries.job_runs(web.store, viewer, branch, job, limit=200)))
    names = _step_names(runs)
    steps_by_name = [{s.name: s for s in run.job.steps} for run in runs]
    durations = []
    passes = []
    for name in names:
        points = []
        window: list[bool] = []
        rolling = []
        for run, by_name in zip(runs, steps_by_name, strict=True):
            step = by_name.get(name)
            points.append((run.flight.id, step.duration_s if step else None))
            if step is not None and step.outcome in (Outcome.PASS, Outcome.FAIL):
                window = [*window[-9:], step.outcome is Outcome.PASS]
            rolling.append((run.flight.id, sum(window) / len(window) if window else None))
        durations.append(plots.Series(name, tuple(points)))
        passes.append(plots.Series(name, tuple(rolling)))
    return [
        plots.line_chart(
            durations, title=f"{job}: step durations (s) per flight", y_format=lambda v: f"{v:g}s"
        ),
        plots.line_chart(
            passes,
            title=f"{job}: step pass rate, last 10 runs",
            y_format=lambda v: f"{100 * v:.0f}%",
            y_max=1.0,
        ),
    ]


def home(web: Web, request: Request) -> Response:
    return RedirectResponse("/flights", status_code=302)


def robots(web: Web, request: Request) -> Response:
    return PlainTextResponse("User-agent: *\nDisallow: /\n")


OPEN = frozenset({"home", "robots", "login_form", "login", "logout", "access_form", "access_apply"})
"""Endpoints anyone reaches, even under ``[web] anonymous = false`` (to log in)."""


def find_viewer(web: Web, request: Request, endpoint: Any) -> None:
    """Who the request comes from, on ``request.state.viewer``; 401 for a bearer token that is
    no one's, and for anonymous requests when the lab wants none."""
    try:
        viewer = web.access.viewer(request)
    except BadToken:
        raise HTTPException(
            403, "the bearer token is not valid (revoked, expired, or never made)"
        ) from None
    if not web.open_to(viewer) and endpoint.__name__ not in OPEN:
        raise HTTPException(401, "log in first: this lab's dashboard is not open to anonymous")
    request.state.viewer = viewer


def bind(web: Web, endpoint: Any) -> Any:
    """A Starlette endpoint of ``endpoint(web, request)``, async when it is (pages and API),
    that knows its viewer."""
    if asyncio.iscoroutinefunction(endpoint):

        async def async_page(request: Request) -> Response:
            _ids_in_range(request)
            await asyncio.to_thread(find_viewer, web, request, endpoint)
            return await endpoint(web, request)

        return async_page

    def page(request: Request) -> Response:
        _ids_in_range(request)
        find_viewer(web, request, endpoint)
        return endpoint(web, request)

    return page


def routes(web: Web) -> list[Route]:
    flight = "/flights/{flight_id:int}"
    step = flight + "/jobs/{job}/steps/{seq:int}"
    table = [
        ("/", home, ["GET"]),
        ("/robots.txt", robots, ["GET"]),
        ("/flights", flight_list, ["GET"]),
        (flight, flight_page, ["GET"]),
        (flight + "/cancel", cancel_flight, ["POST"]),
        (flight + "/jobs/{job}", job_page, ["GET"]),
        (flight + "/jobs/{job}/retest", retest_job, ["POST"]),
        (step + "/log", log_page, ["GET"]),
        (step + "/log.txt", log_raw, ["GET"]),
        (step + "/log/stream", log_stream, ["GET"]),
        ("/history/{branch}/{job}", history_page, ["GET"]),
        ("/hosts", hosts_page, ["GET"]),
        ("/hosts/{name}", host_page, ["GET"]),
        ("/branches", branches_page, ["GET"]),
        ("/branches/{name}", branch_page, ["GET"]),
        ("/bisections", bisections_page, ["GET"]),
        ("/bisections/{bisection_id:int}", bisection_page, ["GET"]),
        ("/trends", trends_page, ["GET"]),
        ("/review", review_page, ["GET"]),
        *findings_routes(),
        ("/login", login_form, ["GET"]),
        ("/login", login, ["POST"]),
        ("/logout", logout, ["POST"]),
    ]
    return [Route(path, bind(web, endpoint), methods=methods) for path, endpoint, methods in table]
