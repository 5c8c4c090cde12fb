"""A fake of the part of GitHub's REST API labgate uses, served on a loopback port, and a thread
that serves any ASGI app with uvicorn on a socket bound before the thread starts (so a client can
connect at once: no waiting, no sleeping).

The fake follows GitHub's documented shapes: `Authorization: Bearer <token>` (401 "Bad
credentials" otherwise), `Accept: application/vnd.github+json` and `X-GitHub-Api-Version`;
`POST /repos/{owner}/{repo}/statuses/{sha}` takes `state` (error, failure, pending, success),
optional `target_url`, `description` and `context` (422 "Validation Failed" otherwise, as for a
description over 140 characters) and answers 201 with the status; `GET .../pulls/{number}` and
`GET .../pulls?state=open` answer pull request objects; `.../issues/{number}/comments` takes and
lists comments. Check runs (docs.github.com/rest/checks/runs): `POST .../check-runs` needs `name`
and `head_sha` and answers 201 with the check run (`id`, `status`, `conclusion`, ...);
`PATCH .../check-runs/{id}` updates one; `GET .../commits/{ref}/check-runs` (`check_name`) answers
`{"total_count", "check_runs"}`. `status` is one of queued, in_progress, completed (waiting,
requested and pending are GitHub Actions'); a `conclusion` (action_required, cancelled, failure,
neutral, success, skipped, timed_out) makes it completed, and completed needs one; `output` needs
`title` and `summary` (at most 65535 characters); anything else is 422 "Validation Failed".
Every request is recorded.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

STATES = {"error", "failure", "pending", "success"}
CHECK_STATUSES = {"queued", "in_progress", "completed"}
CONCLUSIONS = {
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "timed_out",
}
CHECK_FIELDS = {
    "name",
    "head_sha",
    "details_url",
    "external_id",
    "status",
    "started_at",
    "conclusion",
    "completed_at",
    "output",
    "actions",
}


class ServerThread:
    """`with ServerThread(app) as server:` serves `app` at `server.url` until the block ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@dataclass
class FakeGitHub:
    token: str
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    check_runs: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        repo = "/repos/{owner}/{repo}"
        return Starlette(
            routes=[
                Route(repo + "/statuses/{sha}", self.create_status, methods=["POST"]),
                Route(repo + "/pulls", self.list_pulls, methods=["GET"]),
                Route(repo + "/pulls/{number:int}", self.get_pull, methods=["GET"]),
                Route(
                    repo + "/issues/{number:int}/comments",
                    self.issue_comments,
                    methods=["GET", "POST"],
                ),
                Route(repo + "/check-runs", self.create_check_run, methods=["POST"]),
                Route(repo + "/check-runs/{id:int}", self.update_check_run, methods=["PATCH"]),
                Route(repo + "/commits/{ref}/check-runs", self.list_check_runs, methods=["GET"]),
            ]
        )

    def _check(self, request: Request) -> JSONResponse | None:
        self.requests.append((request.method, request.url.path))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        if "application/vnd.github+json" not in request.headers.get("accept", ""):
            return JSONResponse({"message": "want Accept: application/vnd.github+json"}, 415)
        if not request.headers.get("x-github-api-version"):
            return JSONResponse({"message": "no X-GitHub-Api-Version"}, status_code=400)
        return None

    async def create_status(self, request: Request) -> JSONResponse:
        if (refused := self._check(request)) is not None:
            return refused
        sha = request.path_params["sha"]
        body = await request.json()
        known = {"state", "target_url", "description", "context"}
        valid = (
            isinstance(body, dict)
            and re.fullmatch(r"[0-9a-f]{40}", sha) is not None
            and body.get("state") in STATES
            and set(body) <= known
            and isinstance(body.get("description", ""), str)
            and len(body.get("description", "")) <= 140
            and isinstance(body.get("context", "default"), str)
            and isinstance(body.get("target_url", ""), str)
        )
        if not valid:
            return JSONResponse({"message": "Validation Failed"}, status_code=422)
        status = {
            "id": len(self.statuses) + 1,
            "sha": sha,
            "state": body["state"],
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "context": body.get("context", "default"),
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "creator": {"login": "labgate-bot"},
        }
        self.statuses.append(status)
        return JSONResponse(status, status_code=201)

    async def list_pulls(self, request: Request) -> JSONResponse:
        if (refused := self._check(request)) is not None:
            return refused
        base = request.query_params.get("base")
        pulls = [p for p in self.pulls.values() if base is None or p["base"]["ref"] == base]
        return JSONResponse(pulls)

    async def get_pull(self, request: Request) -> JSONResponse:
        if (refused := self._check(request)) is not None:
            return refused
        pull = self.pulls.get(request.path_params["number"])
        if pull is None:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        return JSONResponse(pull)

    async def issue_comments(self, request: Request) -> JSONResponse:
        if (refused := self._check(request)) is not None:
            return refused
        comments = self.comments.setdefault(request.path_params["number"], [])
        if request.method == "GET":
            return JSONResponse(comments)
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
            return JSONResponse({"message": "Validation Failed"}, status_code=422)
        comment = {"id": len(comments) + 1, "body": body["body"], "user": {"login": "labgate"}}
        comments.append(comment)
        return JSONResponse(comment, status_code=201)

    async def create_check_run(self, request: Request) -> JSONResponse:
        if (refused := self._check(request)) is not None:
            return refused
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return JSONResponse({"message": "Validation Failed"}, status_code=422)
        if not re.fullmatch(r"[0-9a-f]{40}", str(body.get("head_sha"))):
            return JSONResponse({"message": "Validation Failed"}, status_code=422)
        check = {
            "id": len(self.check_runs) + 1,
            "head_sha": body["head_sha"],
            "name": body["name"],
            "status": "queued",
            "conclusion": None,
            "external_id": "",
            "details_url": None,
            "started_at": None,
            "completed_at": None,
            "output": {"title": None, "summary": None, "text": None},
            "app": {"slug": "labgate"},
        }
        problem = _apply_check_run(check, body)
        if problem:
            return JSONResponse({"message": "Validation Failed", "errors": [problem]}, 422)
        self.check_runs.append(check)
        return JSONResponse(check, status_code=201)

    async def update_check_run(self, request: Request) -> JSONResponse:
        if (refused := self._check(request)) is not None:
            return refused
        found = [c for c in self.check_runs if c["id"] == request.path_params["id"]]
        if not found:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        body = await request.json()
        if not isinstance(body, dict) or "head_sha" in body:
            return JSONResponse({"message": "Validation Failed"}, status_code=422)
        updated = {**found[0], "output": dict(found[0]["output"])}
        problem = _apply_check_run(updated, body)
        if problem:
            return JSONResponse({"message": "Validation Failed", "errors": [problem]}, 422)
        found[0].update(updated)
        return JSONResponse(found[0])

    async def list_check_runs(self, request: Request) -> JSONResponse:
        if (refused := self._check(request)) is not None:
            return refused
        name = request.query_params.get("check_name")
        runs = [
            c
            for c in self.check_runs
            if c["head_sha"] == request.path_params["ref"] and name in (None, c["name"])
        ]
        return JSONResponse({"total_count": len(runs), "check_runs": runs})


def _apply_check_run(check: dict[str, Any], body: dict[str, Any]) -> str | None:
    """Apply a create or update body to a check run; what is invalid, or None."""
    if not set(body) <= CHECK_FIELDS:
        return f"unknown fields {sorted(set(body) - CHECK_FIELDS)}"
    status, conclusion = body.get("status"), body.get("conclusion")
    if status is not None and status not in CHECK_STATUSES:
        return f"status {status!r}"
    if conclusion is not None and conclusion not in CONCLUSIONS:
        return f"conclusion {conclusion!r}"
    if (status == "completed" or "completed_at" in body) and conclusion is None:
        return "conclusion is required when the check run is completed"
    output = body.get("output")
    if output is not None:
        if not isinstance(output, dict) or not {"title", "summary"} <= set(output):
            return "output needs title and summary"
        if len(str(output["summary"])) > 65535 or len(str(output.get("text") or "")) > 65535:
            return "output summary or text over 65535 characters"
        check["output"] = {**check["output"], **output}
    for key in ("name", "details_url", "external_id", "started_at", "completed_at"):
        if key in body:
            check[key] = body[key]
    if status is not None:
        check["status"] = status
    if conclusion is not None:
        check["conclusion"], check["status"] = conclusion, "completed"
    return None


def pull_request(number: int, sha: str, *, repo: str, base: str = "master") -> dict[str, Any]:
    """A pull request object with the fields GitHub documents and labgate reads."""
    owner = repo.split("/")[0]
    return {
        "url": f"https://api.github.com/repos/{repo}/pulls/{number}",
        "html_url": f"https://github.com/{repo}/pull/{number}",
        "number": number,
        "state": "open",
        "title": f"Change {number}",
        "user": {"login": "contributor", "id": 1},
        "head": {
            "label": f"contributor:pr-{number}",
            "ref": f"pr-{number}",
            "sha": sha,
            "repo": {"full_name": f"contributor/{repo.split('/')[1]}"},
        },
        "base": {
            "label": f"{owner}:{base}",
            "ref": base,
            "sha": "0" * 40,
            "repo": {"full_name": repo},
        },
    }
