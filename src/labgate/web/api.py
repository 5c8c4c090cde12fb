"""The JSON API under ``/api/``: the same data as the pages, each object in the one JSON form
its model's ``to_json`` gives (the CLI's ``--json`` prints the same), described by
``/api/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from labgate import __version__
from labgate.model import Blessing
from labgate.store import dashboard as queries
from labgate.web import pages
from labgate.web.pages import Web


def flights(web: Web, request: Request) -> Response:
    page = queries.flight_page(
        web.store,
        pages.viewer_of(request),
        branch=request.query_params.get("branch") or None,
        blessing=pages.choice_param(request, "blessing", {b.value for b in Blessing}),
        outcome=pages.choice_param(request, "outcome", set(queries.FLIGHT_FILTERS)),
        before=pages.int_param(request, "before"),
        limit=min(pages.int_param(request, "limit") or queries.PAGE_SIZE, 500),
    )
    return JSONResponse({"flights": [r.flight.to_json() for r in page.rows], "older": page.older})


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
        limit=min(pages.int_param(request, "limit") or 100, 500),
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
    states = queries.host_states(web.store, pages.viewer_of(request), web.lab.hosts)
    return JSONResponse([h.to_json() for h in states])


def host_jobs(web: Web, request: Request) -> Response:
    name = request.path_params["name"]
    runs = queries.host_runs(web.store, pages.viewer_of(request), name, limit=100)
    return JSONResponse([r.to_json() for r in runs])


def branches(web: Web, request: Request) -> Response:
    return JSONResponse([b.to_json() for b in pages.branch_states(web, pages.viewer_of(request))])


def pushes(web: Web, request: Request) -> Response:
    name = request.path_params["name"]
    found = web.store.pushes(name, limit=100, viewer=pages.viewer_of(request))
    return JSONResponse([p.to_json() for p in found])


def bisections(web: Web, request: Request) -> Response:
    branch = request.query_params.get("branch") or None
    found = web.store.bisections(branch, limit=100, viewer=pages.viewer_of(request))
    return JSONResponse([b.to_json() for b in found])


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
    return JSONResponse([e.to_json() for e in web.users.audit(group)])


async def cancel(web: Web, request: Request) -> Response:
    flight_id = await pages.cancel_action(web, request, "api")
    return JSONResponse({"flight": flight_id, "cancel_requested": True}, status_code=202)


async def retest(web: Web, request: Request) -> Response:
    new_id = await pages.retest_action(web, request)
    return JSONResponse({"flight": new_id, "state": "queued"}, status_code=201)


def openapi(web: Web, request: Request) -> Response:
    return JSONResponse(OPENAPI)


# --- the OpenAPI description ------------------------------------------------------------------

S: dict[str, Any] = {"type": "string"}
NS: dict[str, Any] = {"type": ["string", "null"]}
INT: dict[str, Any] = {"type": "integer"}
NI: dict[str, Any] = {"type": ["integer", "null"]}
NF: dict[str, Any] = {"type": ["number", "null"]}
B: dict[str, Any] = {"type": "boolean"}
STRMAP: dict[str, Any] = {"type": "object", "additionalProperties": S}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


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
    "FlightPage": obj({"flights": array(ref("Flight")), "older": NI}),
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
    "Audit": obj({"user": S, "flight": INT, "group": S, "what": S, "created": S}),
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
        "/api/flights": _query(
            _get("flights, newest first", ref("FlightPage")),
            ("branch", "blessing", "outcome", "before", "limit"),
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
        "/api/hosts": _get("hosts and what they run", array(ref("Host"))),
        "/api/hosts/{name}/jobs": _get("jobs run on a host", array(ref("JobRun")), ("name",)),
        "/api/branches": _get("branches", array(ref("Branch"))),
        "/api/branches/{name}/pushes": _get("a branch's pushes", array(ref("Push")), ("name",)),
        "/api/bisections": _query(_get("bisections", array(ref("Bisection"))), ("branch",)),
        "/api/bisections/{bisection_id}": _get(
            "a bisection with its graph", ref("Bisection"), ("bisection_id",)
        ),
        "/api/embargo/{group}/audit": _get(
            "who saw the group's embargoed work (its admins only)", array(ref("Audit")), ("group",)
        ),
    },
}


def routes(web: Web) -> list[Route]:
    table = [
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
