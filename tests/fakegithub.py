"""A fake of the part of GitHub's REST API labgate uses, served on a loopback port, and a thread
that serves any ASGI app with uvicorn on a socket bound before the thread starts (so a client can
connect at once: no waiting, no sleeping).

The fake follows GitHub's documented shapes: `Authorization: Bearer <token>` (401 "Bad
credentials" otherwise), `Accept: application/vnd.github+json` and `X-GitHub-Api-Version`;
`POST /repos/{owner}/{repo}/statuses/{sha}` takes `state` (error, failure, pending, success),
optional `target_url`, `description` and `context` (422 "Validation Failed" otherwise, as for a
description over 140 characters) and answers 201 with the status; `GET .../pulls/{number}` and
`GET .../pulls?state=open` answer pull request objects; `.../issues/{number}/comments` takes and
lists comments. Every request is recorded.
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
