"""The GitHub webhook receiver: Starlette routes ``labgate serve`` mounts.

``POST /review/github/{name}`` (``name``: the ``[[review]]`` entry). In order, a delivery is:

1. refused with 413 when larger than ``max_body`` (by its Content-Length before reading, or
   while reading a chunked body), 415 when not ``application/json``;
2. refused with 401 unless ``X-Hub-Signature-256`` is ``sha256=`` and the HMAC-SHA256 of the raw
   body under the secret (from the environment variable ``secret_env`` names), compared in
   constant time; 503 when that variable is not set;
3. refused with 400 without ``X-GitHub-Event`` or ``X-GitHub-Delivery`` (or one that is not a
   short name), or when the body is not a JSON object of the event's documented shape (the
   answer names the wrong field: ``pull_request.number: Input should be a valid integer``);
4. answered 200 ``duplicate`` when its ``X-GitHub-Delivery`` was handled before (a replay);
5. handled: ``ping`` 200; ``pull_request``, ``issue_comment`` (recheck), ``status`` and
   ``check_run`` 202;
   any other event 202 ``ignored``. A delivery is recorded as seen only once handled: one whose
   handling failed (GitHub's API down: 502, anything else: 500) or was cut short (the server
   killed) is handled when GitHub redelivers it, and the queue drops what it already has.

Every refusal is logged (``labgate.review.github``) with the delivery id and the client.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from labgate.config import Lab
from labgate.model import ReviewSpec
from labgate.review.base import ChangeEvent, OtherVote, ReviewRun
from labgate.review.github.connector import GitHubConnector, GitHubError, webhook_secret
from labgate.review.github.events import (
    CheckRunDelivery,
    IssueCommentDelivery,
    PayloadError,
    PullRequestDelivery,
    StatusDelivery,
    check_run_vote,
    closed_pull_request,
    parse,
    pull_request_event,
    recheck_request,
    status_vote,
)
from labgate.review.loop import queue_event
from labgate.review.webhook import (
    MAX_BODY,
    Refused,
    check_json,
    check_signature,
    json_object,
    read_body,
)
from labgate.store import Store

log = logging.getLogger("labgate.review.github")

HEADER_VALUE = re.compile(r"[A-Za-z0-9_-]{1,100}")
Delivery = PullRequestDelivery | IssueCommentDelivery | StatusDelivery | CheckRunDelivery
SHAPES: dict[str, type[Delivery]] = {
    "pull_request": PullRequestDelivery,
    "issue_comment": IssueCommentDelivery,
    "status": StatusDelivery,
    "check_run": CheckRunDelivery,
}


class GitHubReceiver:
    """Receives the deliveries of every ``[[review]]`` with ``driver = "github"``."""

    def __init__(
        self,
        lab: Lab,
        store: Store,
        *,
        max_body: int = MAX_BODY,
        on_queued: Callable[[], None] | None = None,
        deliver: Callable[[ChangeEvent], ReviewRun | None] | None = None,
    ) -> None:
        self.specs = {r.name: r for r in lab.reviews if r.driver == "github"}
        self.queue = store.review
        self.max_body = max_body
        self.on_queued = on_queued
        self.deliver = deliver or partial(queue_event, store)

    async def endpoint(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        delivery = request.headers.get("x-github-delivery", "")
        client = request.client.host if request.client else "?"
        try:
            spec = self.specs.get(name)
            if spec is None:
                raise Refused(404, f"no [[review]] named {name!r} with driver github")
            status, answer = await self.receive(spec, request, delivery)
        except Refused as refused:
            log.warning(
                "refused GitHub delivery %r for %s from %s: %d %s",
                delivery, name, client, refused.status, refused.message,
            )  # fmt: skip
            return JSONResponse({"error": refused.message}, status_code=refused.status)
        return JSONResponse({"status": answer}, status_code=status)

    async def receive(self, spec: ReviewSpec, request: Request, delivery: str) -> tuple[int, str]:
        body = await read_body(request, self.max_body)
        check_json(request)
        try:
            secret = webhook_secret(spec)
        except GitHubError as error:
            raise Refused(503, str(error)) from None
        header = "X-Hub-Signature-256"
        check_signature(secret, body, header, request.headers.get(header), "sha256")
        event = request.headers.get("x-github-event")
        if not event or not delivery:
            raise Refused(400, "no X-GitHub-Event or X-GitHub-Delivery header")
        for header, value in (("X-GitHub-Event", event), ("X-GitHub-Delivery", delivery)):
            if not HEADER_VALUE.fullmatch(value):
                raise Refused(400, f"{header} is not a name of at most 100 letters, digits, - _")
        payload = json_object(body)
        shape = SHAPES.get(event)
        try:
            if shape is not None:  # checked before the delivery counts as seen
                parse(shape, payload, event)
        except PayloadError as error:
            raise Refused(400, str(error)) from None
        if self.queue.delivery_seen(spec.name, delivery):
            log.info("GitHub delivery %s seen before: ignored", delivery)
            return 200, "duplicate"
        try:
            answer = await self.handle(spec, event, payload)
        except GitHubError as error:
            raise Refused(502, str(error)) from None
        # seen only once handled: a delivery whose handling failed or was cut short (the server
        # killed) is handled again when GitHub redelivers it, and the queue drops a repeat
        self.queue.record_delivery(spec.name, delivery, event)
        return answer

    async def handle(
        self, spec: ReviewSpec, event: str, payload: Mapping[str, Any]
    ) -> tuple[int, str]:
        handlers: dict[str, Callable[[ReviewSpec, Mapping[str, Any]], Awaitable[str]]] = {
            "pull_request": self.pull_request,
            "issue_comment": self.issue_comment,
            "status": self.status,
            "check_run": self.check_run,
        }
        if event == "ping":
            return 200, "pong"
        handler = handlers.get(event)
        if handler is None:
            return 202, "ignored"
        return 202, await handler(spec, payload)

    def _enqueue(self, event: ChangeEvent | None) -> str:
        if event is None:
            return "ignored"
        run = self.deliver(event)
        if run is None:
            return "already queued"
        if self.on_queued is not None:
            self.on_queued()
        return "queued"

    async def pull_request(self, spec: ReviewSpec, payload: Mapping[str, Any]) -> str:
        closed = closed_pull_request(spec, payload)
        if closed is not None:
            closing = ChangeEvent(
                kind="closed", source=spec.name, project=spec.project, change=closed,
                patchset="", ref="", revision="", branch="", closed_as="closed",
            )  # fmt: skip
            self.deliver(closing)
            return "closed"
        return self._enqueue(pull_request_event(spec, payload))

    async def issue_comment(self, spec: ReviewSpec, payload: Mapping[str, Any]) -> str:
        number = recheck_request(spec, payload)
        if number is None:
            return "ignored"
        latest = self.queue.latest_run(spec.name, str(number))
        if latest is not None:
            return self._enqueue(latest.event("recheck"))
        return self._enqueue(await GitHubConnector(spec).pull_request(number, "recheck"))

    async def status(self, spec: ReviewSpec, payload: Mapping[str, Any]) -> str:
        return self._record(spec, status_vote(spec, payload))

    async def check_run(self, spec: ReviewSpec, payload: Mapping[str, Any]) -> str:
        return self._record(spec, check_run_vote(spec, payload))

    def _record(self, spec: ReviewSpec, found: tuple[str, OtherVote] | None) -> str:
        """Record another CI's verdict on a commit (for ``labgate review discrepancies``)."""
        if found is None:
            return "ignored"
        sha, vote = found
        run = self.queue.run_for_revision(spec.name, sha)
        self.queue.record_votes(
            ChangeEvent(
                kind="patchset",
                source=spec.name,
                project=spec.project,
                change=run.change if run else "",
                patchset=sha,
                ref="",
                revision=sha,
                branch=run.target if run else "",
                votes=(vote,),
            )
        )
        return "recorded"


def github_routes(lab: Lab, store: Store, **options: Any) -> list[Route]:
    """The webhook receiver's routes, for ``labgate serve`` to mount: one per lab, serving every
    GitHub ``[[review]]`` at ``/review/github/{name}``. ``options`` go to
    :class:`GitHubReceiver` (``max_body``, ``on_queued``, ``deliver``: what queues an event; by
    default straight into the store's queue)."""
    receiver = GitHubReceiver(lab, store, **options)
    return [Route("/review/github/{name}", receiver.endpoint, methods=["POST"])]
