"""The Review Board webhook receiver: the Starlette route ``labgate serve`` mounts, so the loop
learns of a publish, a review or a close at once (polling stays, as the reconciliation).

``POST /review/reviewboard/{name}`` (``name``: the ``[[review]]`` entry). Review Board's WebHook
(Administration → WebHooks, or ``POST /api/webhooks/``) with encoding ``application/json``, the
events ``review_request_published``, ``review_published`` and ``review_request_closed``, and a
secret: Review Board signs each body with ``X-Hub-Signature: sha1=<HMAC-SHA1 of the body under
the secret>`` and names the event in ``X-ReviewBoard-Event``
(``reviewboard/notifications/webhooks.py``). In order, a delivery is:

1. refused with 404 when no ``[[review]]`` of this driver has that name, 403 when the entry has
   no ``secret_env`` (webhooks are not enabled for it), 413 when larger than ``max_body``, 415
   when not ``application/json``;
2. refused with 401 unless ``X-Hub-Signature`` is the body's signature (constant-time compare);
   503 when the environment variable ``secret_env`` names is not set;
3. refused with 400 without ``X-ReviewBoard-Event``, or when the body is not a JSON object with
   the ``review_request`` (and for a review, the ``review``) the event carries;
4. handled, 202: a published request's latest diff is queued and its ``pending`` status update
   posted in the background; a review matching the recheck pattern queues a recheck (named by
   the review's id, as the poll does: never twice); a closed request's runs are dropped or
   their flights cancelled. Another repository's or branch's request, or another event, is
   answered 202 ``ignored``.

Review Board has no delivery id and never redelivers: a delivery lost (labgate down) is found by
the next poll. Every refusal is logged (``labgate.review.reviewboard``) with the client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from labgate.config import Lab
from labgate.model import ReviewSpec
from labgate.review.base import ChangeEvent, ReviewRun, secret
from labgate.review.loop import queue_event
from labgate.review.reviewboard.api import ReviewBoardError
from labgate.review.reviewboard.connector import ReviewBoardConnector
from labgate.review.reviewboard.settings import reviewboard_settings
from labgate.review.webhook import (
    MAX_BODY,
    Refused,
    check_json,
    check_signature,
    json_object,
    read_body,
)
from labgate.store import Store

log = logging.getLogger("labgate.review.reviewboard")

SIGNATURE = "X-Hub-Signature"
EVENT = "X-ReviewBoard-Event"

Deliver = Callable[[ChangeEvent], ReviewRun | None]


def _object(payload: Mapping[str, Any], key: str, event: str) -> dict[str, Any]:
    found = payload.get(key)
    if not isinstance(found, dict) or "id" not in found:
        raise Refused(400, f"{event}: no {key} object with an id in the body")
    return found


class ReviewBoardReceiver:
    """Receives the deliveries of every ``[[review]]`` with ``driver = "reviewboard"``;
    ``deliver`` queues what they ask for (``labgate serve``: its loop's
    :meth:`~labgate.review.loop.ReviewLoop.receive`; else straight into the store's queue)."""

    def __init__(
        self,
        lab: Lab,
        store: Store,
        *,
        max_body: int = MAX_BODY,
        deliver: Deliver | None = None,
    ) -> None:
        self.specs = {r.name: r for r in lab.reviews if r.driver == "reviewboard"}
        self.connectors = {name: ReviewBoardConnector(spec) for name, spec in self.specs.items()}
        self.max_body = max_body
        self.deliver: Deliver = deliver or partial(queue_event, store)

    async def endpoint(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        client = request.client.host if request.client else "?"
        try:
            spec = self.specs.get(name)
            if spec is None:
                raise Refused(404, f"no [[review]] named {name!r} with driver reviewboard")
            answer = await self.receive(spec, request)
        except Refused as refused:
            log.warning("refused Review Board delivery for %s from %s: %d %s",
                        name, client, refused.status, refused.message)  # fmt: skip
            return JSONResponse({"error": refused.message}, status_code=refused.status)
        return JSONResponse({"status": answer}, status_code=202)

    async def receive(self, spec: ReviewSpec, request: Request) -> str:
        env = reviewboard_settings(spec).secret_env
        if env is None:
            raise Refused(403, f"[[review]] {spec.name}: webhooks are not enabled (set secret_env)")
        body = await read_body(request, self.max_body)
        check_json(request)
        try:
            key = secret(spec, env, "webhook secret", ReviewBoardError)
        except ReviewBoardError as error:
            raise Refused(503, str(error)) from None
        check_signature(key, body, SIGNATURE, request.headers.get(SIGNATURE), "sha1")
        event = request.headers.get(EVENT)
        if not event:
            raise Refused(400, f"no {EVENT} header")
        payload = json_object(body)
        review_request = _object(payload, "review_request", event)
        answer = await self._handle(spec, event, payload, review_request)
        log.info("[[review]] %s: webhook %s for review request %s: %s", spec.name, event,
                 review_request["id"], answer)  # fmt: skip
        return answer

    async def _handle(
        self,
        spec: ReviewSpec,
        event: str,
        payload: Mapping[str, Any],
        review_request: dict[str, Any],
    ) -> str:
        connector = self.connectors[spec.name]
        if not self._ours(spec, review_request):
            return "ignored"
        if event == "review_request_published":
            found = connector.request_events([review_request])
        elif event == "review_request_closed":
            closed = {**review_request, "status": payload.get("close_type") or "submitted"}
            found = connector.request_events([closed])
        elif event == "review_published":
            review = _object(payload, "review", event)
            recheck = await connector.recheck_event(review, review_request)
            found = [recheck] if recheck is not None else []
        else:
            return "ignored"
        if not found:
            return "ignored"
        queued = [self.deliver(e) for e in found]
        if found[0].kind == "closed":
            return "closed"
        return "queued" if any(queued) else "already queued"

    def _ours(self, spec: ReviewSpec, review_request: Mapping[str, Any]) -> bool:
        repository = review_request.get("links", {}).get("repository", {})
        return isinstance(repository, dict) and repository.get("title") == spec.project


def reviewboard_routes(lab: Lab, store: Store, **options: Any) -> list[Route]:
    """The webhook receiver's route, for ``labgate serve`` to mount: one per lab, serving every
    Review Board ``[[review]]`` at ``/review/reviewboard/{name}``. ``options`` go to
    :class:`ReviewBoardReceiver` (``max_body``, ``deliver``)."""
    receiver = ReviewBoardReceiver(lab, store, **options)
    return [Route("/review/reviewboard/{name}", receiver.endpoint, methods=["POST"])]
