"""The JSON API under ``/api/``: the same data as the pages, each object in the one JSON form
its model's ``to_json`` gives (the CLI's ``--json`` prints the same), described by
``/api/openapi.json``; ``/api/`` lists the endpoints (read from the app's routes).

Every list answers in one shape, :func:`listing`: ``{"items": [...], "next": URL or null}``,
newest first where the list has an order; ``next`` is the path and query of the following page
(the same filters, ``before`` the last item's id), null on the last page.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from labgate import __version__
from labgate.model import Blessing
from labgate.store import dashboard as queries
from labgate.web import pages
from labgate.web.pages import Web

MAX_LIMIT = 500


def limit_param(request: Request, default: int = queries.PAGE_SIZE) -> int:
    """The page size a list is asked for (``limit``, at most MAX_LIMIT)."""
    return min(pages.int_param(request, "limit") or default, MAX_LIMIT)


def listing(request: Request, items: Sequence[Any], after: int | None = None) -> Response:
    """The one shape of every list: ``{"items": [...], "next": URL or null}``. ``after``: the
    ``before`` of the next page (None on the last page); ``next`` keeps the request's other
    query parameters."""
    following = None
    if after is not None:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "before"]
        following = f"{request.url.path}?{urlencode([*query, ('before', str(after))])}"
    return JSONResponse({"items": [i.to_json() for i in items], "next": following})


def page_of(rows: Sequence[Any], limit: int, key: Any) -> tuple[Sequence[Any], int | None]:
    """``rows`` fetched with ``limit + 1``: the page and the ``before`` of the next, if any."""
    if len(rows) > limit:
        return rows[:limit], key(rows[limit - 1])
    return rows, None


def flights(web: Web, request: Request) -> Response:
    page = queries.flight_page(
        web.store,
        pages.viewer_of(request),
        branch=request.query_params.get("branch") or None,
        blessing=pages.choice_param(request, "blessing", {b.value for b in Blessing}),
        outcome=pages.choice_param(request, "outcome", set(queries.FLIGHT_FILTERS)),
        before=pages.int_param(request, "before"),
        limit=limit_param(request),
    )
    return listing(request, [r.flight for r in page.rows], page.older)


def flight(web: Web, request: Request) -> Response:
    flight = pages.flight_or_404(web, request, request.path_params["flight_id"])
    return JSONResponse(flight.to_json())


def verdict(web: Web, request: Request) -> Response:
    flight_id = request.path_params["flight_id"]
    pages.flight_or_404(web, request, flight_id)
    stored = web.store.verdict(flight_id)
    if stored is None:
        raise HTTPException(404, f"flight {flight_id} has no verdict yet")
    return JSONResponse(stored)


def history(web: Web, request: Request) -> Response:
    branch, job = request.path_params["branch"], request.path_params["job"]
    runs = queries.job_runs(
        web.store,
        pages.viewer_of(request),
        branch,
        job,
        limit=limit_param(request, 100),
    )
    return JSONResponse(
        {
            "branch": branch,
            "job": job,
            "runs": [r.to_json() for r in runs],
            "flake_rates": {
                name: rate.to_json() for name, rate in pages.runs_flake_rates(runs, job).items()
            },
        }
    )


def hosts(web: Web, request: Request) -> Response:
    return listing(request, queries.host_states(web.store, pages.viewer_of(request), web.lab.hosts))


def host_jobs(web: Web, request: Request) -> Response:
    limit = limit_param(request, 100)
    runs = queries.host_runs(
        web.store,
        pages.viewer_of(request),
        request.path_params["name"],
        limit=limit + 1,
        before=pages.int_param(request, "before"),
    )
    shown, after = page_of(runs, limit, lambda r: r.job.id)
    return listing(request, shown, after)


def branches(web: Web, request: Request) -> Response:
    return listing(request, pages.branch_states(web, pages.viewer_of(request)))


def pushes(web: Web, request: Request) -> Response:
    limit = limit_param(request, 100)
    found = web.store.pushes(
        request.path_params["name"],
        limit=limit + 1,
        before=pages.int_param(request, "before"),
        viewer=pages.viewer_of(request),
    )
    shown, after = page_of(found, limit, lambda p: p.id)
    return listing(request, shown, after)


def bisections(web: Web, request: Request) -> Response:
    limit = limit_param(request, 100)
    found = web.store.bisections(
        request.query_params.get("branch") or None,
        limit=limit + 1,
        before=pages.int_param(request, "before"),
        viewer=pages.viewer_of(request),
    )
    shown, after = page_of(found, limit, lambda b: b.id)
    return listing(request, shown, after)


def bisection(web: Web, request: Request) -> Response:
    viewer = pages.viewer_of(request)
    record = web.store.bisection(request.path_params["bisection_id"], viewer=viewer)
    return JSONResponse({**record.to_json(), "graph": dict(record.graph)})


def audit(web: Web, request: Request) -> Response:
    """Who saw the group's embargoed work: for the group's admins and the lab admin; the same
    404 as an unknown group for anyone else."""
    group = request.path_params["group"]
    viewer = pages.viewer_of(request)
    if not (viewer.admin or group in viewer.admin_of):
        raise HTTPException(404, f"no audit log of group {group!r} for you")
    limit = limit_param(request)
    found = web.users.audit(group, limit=limit + 1, before=pages.int_param(request, "before"))
    shown, after = page_of(found, limit, lambda entry: entry.id)
    return listing(request, shown, after)


async def cancel(web: Web, request: Request) -> Response:
    flight_id = await pages.cancel_action(web, request, "api")
    return JSONResponse({"flight": flight_id, "cancel_requested": True}, status_code=202)


async def retest(web: Web, request: Request) -> Response:
    new_id = await pages.retest_action(web, request)
    return JSONResponse({"flight": new_id, "state": "queued"}, status_code=201)


def openapi(web: Web, request: Request) -> Response:
    return JSONResponse(OPENAPI)


@dataclass(frozen=True)
class Endpoint:
    """An endpoint of the API as ``/api/`` lists it."""

    path: str
    methods: tuple[str, ...]
    summary: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "methods": list(self.methods), "summary": self.summary}


def described(path: str) -> str:
    """A route's path as the OpenAPI description names it (``{flight_id:int}`` is
    ``{flight_id}``)."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def endpoints(routes: Sequence[BaseRoute]) -> list[Endpoint]:
    """The app's routes under ``/api/``, each with its summary from the OpenAPI description."""
    out = []
    for route in routes:
        if not (isinstance(route, Route) and route.path.startswith("/api/")):
            continue
        path = described(route.path)
        methods = tuple(sorted(m for m in route.methods or () if m != "HEAD"))
        operations = OPENAPI["paths"].get(path, {})
        summary = "; ".join(
            operations[m.lower()]["summary"] for m in methods if m.lower() in operations
        )
        out.append(Endpoint(path, methods, summary))
    return out


def index(web: Web, request: Request) -> Response:
    return listing(request, endpoints(request.app.routes))


# --- the OpenAPI description ------------------------------------------------------------------

S: dict[str, Any] = {"type": "string"}
NS: dict[str, Any] = {"type": ["string", "null"]}
INT: dict[str, Any] = {"type": "integer"}
F: dict[str, Any] = {"type": "number"}
OBJECT: dict[str, Any] = {"type": "object"}
NI: dict[str, Any] = {"type": ["integer", "null"]}
NF: dict[str, Any] = {"type": ["number", "null"]}
B: dict[str, Any] = {"type": "boolean"}
STRMAP: dict[str, Any] = {"type": "object", "additionalProperties": S}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def listed(items: dict[str, Any]) -> dict[str, Any]:
    """The schema of a list answer (see :func:`listing`)."""
    return obj({"items": array(items), "next": NS})


def obj(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    required = [k for k in properties if k not in optional]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


SCHEMAS: dict[str, Any] = {
    "TestCase": obj({"name": S, "outcome": S, "duration_s": NF, "message": NS}),
    "Step": obj(
        {
            "name": S,
            "outcome": S,
            "exit_status": NI,
            "duration_s": NF,
            "log": NS,
            "reason": NS,
            "testcases": array(ref("TestCase")),
        }
    ),
    "Job": obj(
        {
            "name": S,
            "outcome": S,
            "host": NS,
            "runvars": STRMAP,
            "reason": NS,
            "steps": array(ref("Step")),
        }
    ),
    "Flight": obj(
        {
            "id": INT,
            "branch": S,
            "blessing": S,
            "revisions": STRMAP,
            "state": S,
            "started": NS,
            "finished": NS,
            "outcome": NS,
            "jobs": array(ref("Job")),
        }
    ),
    "Verdict": obj(
        {
            "flight": INT,
            "baseline_flight": NI,
            "push_allowed": B,
            "data": {"type": "object", "description": "the gate's verdict JSON"},
        }
    ),
    "JobRun": obj(
        {
            "flight": INT,
            "branch": S,
            "blessing": S,
            "revisions": STRMAP,
            "started": NS,
            "duration_s": NF,
            "job": ref("Job"),
        }
    ),
    "History": obj(
        {
            "branch": S,
            "job": S,
            "runs": array(ref("JobRun")),
            "flake_rates": {
                "type": ["object", "null"],
                "additionalProperties": obj(
                    {"flakes": INT, "runs": INT, "rate": NF, "estimate": {"type": "number"}}
                ),
                "description": 'flake rate of the job (key "") and of each step, with its '
                "evidence: failures among the runs at revisions that passed it (rate null: "
                "unknown, no such run); estimate is the smoothed rate the gate judges with",
            },
        }
    ),
    "Busy": obj({"flight": INT, "job": S, "since": NS}),
    "Host": obj(
        {
            "name": S,
            "flags": array(S),
            "slots": INT,
            "executor": S,
            "state": S,
            "busy": array(ref("Busy")),
            "in_lab": B,
            "status": {"oneOf": [ref("HostStatus"), {"type": "null"}]},
        }
    ),
    "HostStatus": obj(
        {
            "name": S,
            "state": S,
            "quarantined": NS,
            "quarantined_at": NS,
            "broken_streak": INT,
            "reserved_by": NS,
            "reserved_reason": NS,
            "reserved_until": NS,
        }
    ),
    "Ref": obj({"ref": S, "sha": NS}),
    "Push": obj(
        {
            "id": INT,
            "branch": S,
            "flight": INT,
            "tree": S,
            "sha": S,
            "previous_sha": NS,
            "status": S,
            "message": NS,
            "created": S,
        }
    ),
    "Branch": obj(
        {
            "name": S,
            "tree": S,
            "staging": ref("Ref"),
            "tested": ref("Ref"),
            "baseline_flight": NI,
            "last_flight": {"oneOf": [ref("Flight"), {"type": "null"}]},
            "last_push": {"oneOf": [ref("Push"), {"type": "null"}]},
        }
    ),
    "Culprit": obj({"tree": NS, "commit": S}),
    "Bisection": obj(
        {
            "id": INT,
            "branch": S,
            "job": S,
            "step": NS,
            "testcase": NS,
            "flight": INT,
            "baseline_flight": NI,
            "state": S,
            "culprit": {"oneOf": [ref("Culprit"), {"type": "null"}]},
            "confidence": NF,
            "executions": INT,
            "rounds": INT,
            "reason": NS,
            "flights": array(INT),
            "created": S,
            "finished": NS,
            "graph": {"type": "object", "description": "nodes and edges (single bisection only)"},
        },
        optional=("graph",),
    ),
    "Audit": obj({"id": INT, "user": S, "flight": INT, "group": S, "what": S, "created": S}),
    "Endpoint": obj({"path": S, "methods": array(S), "summary": S}),
    "Metric": obj({"job": S, "step": S, "metric": S, "flights": INT, "newest": INT, "trend": S}),
    "Trend": obj(
        {
            "branch": S,
            "job": S,
            "step": S,
            "metric": S,
            "series": array(
                obj(
                    {
                        "host_class": S,
                        "unit": S,
                        "flights": array(obj({"flight": INT, "value": F, "runs": INT})),
                        "change_points": array(
                            obj(
                                {
                                    "flight": INT,
                                    "index": INT,
                                    "before": F,
                                    "after": F,
                                    "change": F,
                                }
                            )
                        ),
                    }
                )
            ),
        }
    ),
    "Error": obj({"error": S}),
}


def _get(summary: str, schema: dict[str, Any], params: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": S} for p in params
            ],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
                "404": {
                    "description": "not found",
                    "content": {"application/json": {"schema": ref("Error")}},
                },
            },
        }
    }


def _text(summary: str, params: tuple[str, ...]) -> dict[str, Any]:
    """A GET answered with plain text."""
    get = _get(summary, S, params)
    get["get"]["responses"]["200"]["content"] = {"text/plain": {"schema": S}}
    return get


def _post(summary: str, params: tuple[str, ...]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"token": []}],
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": S} for p in params
            ],
            "responses": {
                "201": {"description": "a new queued flight"},
                "202": {"description": "cancel requested"},
                "403": {"description": "no token, or the lab has none"},
                "409": {"description": "not possible now"},
            },
        }
    }


PAGED = ("before", "limit")


def _query(get: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    get["get"]["parameters"] += [
        {"name": n, "in": "query", "required": False, "schema": S} for n in names
    ]
    return get


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "labgate", "version": __version__},
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
    },
    "paths": {
        "/api/": _get("the API's endpoints", listed(ref("Endpoint"))),
        "/api/openapi.json": _get("this description", {"type": "object"}),
        "/api/flights": _query(
            _get("flights, newest first", listed(ref("Flight"))),
            ("branch", "blessing", "outcome", *PAGED),
        ),
        "/api/flights/{flight_id}": _get("a flight", ref("Flight"), ("flight_id",)),
        "/api/flights/{flight_id}/verdict": _get(
            "the gate's verdict", ref("Verdict"), ("flight_id",)
        ),
        "/api/flights/{flight_id}/cancel": _post("ask the runner to cancel", ("flight_id",)),
        "/api/flights/{flight_id}/jobs/{job}/retest": _post(
            "plan a flight of the job on the same revisions", ("flight_id", "job")
        ),
        "/api/history/{branch}/{job}": _get(
            "the job across the branch's flights", ref("History"), ("branch", "job")
        ),
        "/api/hosts": _get("hosts and what they run", listed(ref("Host"))),
        "/api/hosts/{name}/jobs": _query(
            _get("jobs run on a host, newest first", listed(ref("JobRun")), ("name",)), PAGED
        ),
        "/api/branches": _get("branches", listed(ref("Branch"))),
        "/api/branches/{name}/pushes": _query(
            _get("a branch's pushes, newest first", listed(ref("Push")), ("name",)), PAGED
        ),
        "/api/bisections": _query(
            _get("bisections, newest first", listed(ref("Bisection"))), ("branch", *PAGED)
        ),
        "/api/bisections/{bisection_id}": _get(
            "a bisection with its graph", ref("Bisection"), ("bisection_id",)
        ),
        "/api/perf/{branch}": _get(
            "the metrics a branch's flights measured", listed(ref("Metric")), ("branch",)
        ),
        "/api/perf/{branch}/{job}/{step}/{metric}": _get(
            "a metric's values per flight and host class, with its change points",
            ref("Trend"),
            ("branch", "job", "step", "metric"),
        ),
        "/api/access/requests": _get(
            "access requests, newest first (the lab's admin only)", listed(OBJECT)
        ),
        "/api/access/requests/{request_id}/approve": _post(
            "approve an access request: its user, group and a token", ("request_id",)
        ),
        "/api/access/requests/{request_id}/refuse": _post(
            "refuse an access request, saying why (JSON body: why)", ("request_id",)
        ),
        "/api/ondemand": _get("who the token is, their quota and what they use", OBJECT),
        "/api/ondemand/flights": _post("submit an on-demand flight (JSON body)", ()),
        "/api/ondemand/flights/{flight_id}/public": _post(
            "make one's on-demand flight public", ("flight_id",)
        ),
        "/api/ondemand/queue": _get(
            "on-demand flights: each one's place and why it waits", listed(OBJECT)
        ),
        "/api/ondemand/hosts/{name}/reserve": _post(
            "reserve a host for a window (JSON body: for)", ("name",)
        ),
        "/api/ondemand/hosts/{name}/console": _text(
            "the console of a host one has reserved, while the reservation lasts", ("name",)
        ),
        "/api/ondemand/hosts/{name}/power-cycle": _post(
            "power-cycle a host one has reserved", ("name",)
        ),
        "/api/embargo/{group}/audit": _query(
            _get(
                "who saw the group's embargoed work, newest first (its admins only)",
                listed(ref("Audit")),
                ("group",),
            ),
            PAGED,
        ),
    },
}


def routes(web: Web) -> list[Route]:
    table = [
        ("/api/", index, "GET"),
        ("/api/openapi.json", openapi, "GET"),
        ("/api/flights", flights, "GET"),
        ("/api/flights/{flight_id:int}", flight, "GET"),
        ("/api/flights/{flight_id:int}/verdict", verdict, "GET"),
        ("/api/flights/{flight_id:int}/cancel", cancel, "POST"),
        ("/api/flights/{flight_id:int}/jobs/{job}/retest", retest, "POST"),
        ("/api/history/{branch}/{job}", history, "GET"),
        ("/api/hosts", hosts, "GET"),
        ("/api/hosts/{name}/jobs", host_jobs, "GET"),
        ("/api/branches", branches, "GET"),
        ("/api/branches/{name}/pushes", pushes, "GET"),
        ("/api/bisections", bisections, "GET"),
        ("/api/bisections/{bisection_id:int}", bisection, "GET"),
        ("/api/embargo/{group}/audit", audit, "GET"),
    ]
    return [
        Route(path, pages.bind(web, endpoint), methods=[method]) for path, endpoint, method in table
    ]
