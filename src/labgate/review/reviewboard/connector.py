"""The Review Board connector: review requests and recheck reviews in by polling (and by the
webhook receiver, :mod:`labgate.review.reviewboard.webhook`, which builds its events here),
status updates out (see the package docstring).

Polling: ``GET /api/review-requests/?repository=ID&status=all&last-updated-from=CURSOR`` (a
new diff revision, a publish, a review or a close all move a request's ``last_updated``) and
``GET /api/reviews/?repository=NAME&public=1&last-updated-from=CURSOR``. The cursor is the
newest timestamp seen less ``CURSOR_OVERLAP_S`` (the server's timestamps are whole seconds, and
a request is stamped before its transaction commits); the first poll (and :meth:`reconcile`)
reads every open request (``status=pending``), and the queue drops what it already has. A
submitted or discarded request is a ``closed`` event; one closed before its run fetched the
diff ends that run (:class:`~labgate.review.base.Closed`). A recheck review is an event named
``review-<id>``: the queue takes it once, however often it is polled.

Results: one status update per run, created when the run is queued (``pending``, linked to the
change description that added the diff revision; its summary says when testing begins), then
updated to ``done-success`` (+1), ``done-failure`` (-1, a regression, or a diff that does not
apply) or ``error`` (0, the lab failed: retried), or ``cancelled`` when the request was
submitted or discarded before the run finished (no result: "cancelled: the change was
discarded before the run finished"). Its id is kept with the run, and it carries
``extra_data.labgate_run``, so a restart at any point updates the same one. A status update's
description holds 255 characters: the full message (every job, the disabled tests, the
flight's link) is a review attached to it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from labgate.git import Mirrors
from labgate.model import ReviewSpec
from labgate.review.base import ChangeEvent, Closed, ReviewRun, Vote, closed_of
from labgate.review.reviewboard.api import ReviewBoardAPI, ReviewBoardError
from labgate.review.reviewboard.patch import Patch, apply_patch
from labgate.review.reviewboard.settings import reviewboard_settings

log = logging.getLogger("labgate.review.reviewboard")

STATES = {1: "done-success", -1: "done-failure", 0: "error"}
SUMMARY_MAX = 255
DESCRIPTION_MAX = 255
RUN_KEY = "labgate_run"
CURSOR_OVERLAP_S = 10.0
CLOSED = ("submitted", "discarded")
REQUEST_FIELDS = {
    "only-fields": "id,status,public,branch,absolute_url,last_updated",
    "only-links": "latest_diff,submitter",
}
"""What a listing of review requests asks for: the fields labgate reads (the server serializes
nothing else: a restart's listing of every open request is several times cheaper)."""
REVIEW_FIELDS = {"only-fields": "id,body_top,timestamp", "only-links": "self"}
_REVISION = re.compile(r"/diffs/(\d+)/?$")
_REQUEST = re.compile(r"/review-requests/(\d+)/")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _href(item: dict[str, Any], link: str) -> str:
    found = item.get("links", {}).get(link)
    return str(found.get("href", "")) if isinstance(found, dict) else ""


def _when(stamp: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(stamp))
    except ValueError:
        return None


def latest_revision(request: dict[str, Any]) -> str | None:
    """The latest published diff revision of a review request (from ``links.latest_diff``)."""
    found = _REVISION.search(_href(request, "latest_diff"))
    return found.group(1) if found else None


def description_of(vote: Vote) -> str:
    """The status update's description: the disabled tests, from the vote's message."""
    lines = vote.message.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Disabled tests")), None)
    if start is None:
        return ""
    tests = [line.strip() for line in lines[start + 1 :] if line.startswith("  ")]
    return _cut("; ".join([lines[start].rstrip(":"), *tests]), DESCRIPTION_MAX)


class ReviewBoardConnector:
    """One ``[[review]]`` with ``driver = "reviewboard"``."""

    def __init__(self, spec: ReviewSpec) -> None:
        self.spec = spec
        self.settings = reviewboard_settings(spec)
        self.name = spec.name
        self.api = ReviewBoardAPI(spec)
        self.cursor: datetime | None = None
        self._repository: int | None = None

    # --- events in ---------------------------------------------------------------------

    async def repository_id(self) -> int:
        """The id of the repository named ``project``."""
        if self._repository is None:
            found = await self.api.items("/api/repositories/", "repositories",
                                         {"name": self.spec.project})  # fmt: skip
            ids = [r["id"] for r in found if r.get("name") == self.spec.project]
            if not ids:
                raise ReviewBoardError(
                    f"[[review]] {self.spec.name}: {self.spec.server} has no repository named "
                    f"{self.spec.project!r} (project = the repository's name in Review Board)"
                )
            self._repository = int(ids[0])
        return self._repository

    def _event(
        self, request: dict[str, Any], kind: str, delivery: str | None = None
    ) -> ChangeEvent:
        revision = latest_revision(request) or ""
        submitter = request.get("links", {}).get("submitter", {})
        return ChangeEvent(
            kind="recheck" if kind == "recheck" else "closed" if kind == "closed" else "patchset",
            source=self.spec.name,
            project=self.spec.project,
            change=str(request["id"]),
            patchset=revision,
            ref=f"review-requests/{request['id']}/diffs/{revision}",
            revision="",
            branch=str(request.get("branch") or ""),
            url=request.get("absolute_url"),
            author=submitter.get("title") if isinstance(submitter, dict) else None,
            delivery=delivery,
            closed_as=str(request.get("status")) if kind == "closed" else "",
        )

    def _wanted(self, request: dict[str, Any]) -> bool:
        if not request.get("public") or request.get("status") != "pending":
            return False
        if latest_revision(request) is None:
            return False  # published without a diff: nothing to test
        return self.spec.target is None or request.get("branch") == self.spec.target

    def request_events(self, requests: list[dict[str, Any]]) -> list[ChangeEvent]:
        """The events of review requests as the API shows them, oldest first: each open one's
        latest diff revision, and each closed one (``submitted``, ``discarded``)."""
        events = []
        for request in sorted(requests, key=lambda r: int(r["id"])):
            if request.get("status") in CLOSED:
                events.append(self._event(request, "closed"))
            elif self._wanted(request):
                events.append(self._event(request, "patchset"))
        return events

    async def recheck_event(
        self, review: dict[str, Any], request: dict[str, Any] | None = None
    ) -> ChangeEvent | None:
        """The recheck a published review asks for (named ``review-<id>``: the queue takes it
        once, however often it is seen), if its text matches the recheck pattern. Its review
        ``request`` is asked for unless given (a webhook's payload holds it)."""
        pattern = re.compile(self.spec.recheck, re.MULTILINE)
        if not pattern.search(str(review.get("body_top", "")).strip()):
            return None
        if request is None:
            change = _REQUEST.search(_href(review, "self"))
            if change is None:
                return None
            answer = await self.api.call("GET", f"/api/review-requests/{change.group(1)}/")
            request = answer.get("review_request", {})
        if not self._wanted(request):
            return None
        return self._event(request, "recheck", f"review-{review['id']}")

    async def poll(self) -> list[ChangeEvent]:
        """The events since the cursor: requests updated since (closed ones too), rechecks.
        The first time, every open request's latest diff (the closed ones of all time are not
        asked for: a run whose request was closed meanwhile ends when it fetches its diff)."""
        return [event async for part in self._poll() for event in part]

    async def _poll(self) -> AsyncIterator[list[ChangeEvent]]:
        """:meth:`poll` in two parts: the requests' events as soon as they are listed (a
        restart's missed requests get their ``pending`` before the reviews are read: every
        labgate result is one), then the rechecks; the cursor moves after both."""
        since = {"last-updated-from": self.cursor.isoformat()} if self.cursor else {}
        requests = await self.api.items(
            "/api/review-requests/",
            "review_requests",
            {
                "repository": str(await self.repository_id()),
                "status": "all" if self.cursor else "pending",
                **since,
                **REQUEST_FIELDS,
            },
        )
        yield self.request_events(requests)
        reviews = await self.api.items(
            "/api/reviews/",
            "reviews",
            {"repository": self.spec.project, "public": "1", **since, **REVIEW_FIELDS},
        )
        rechecks = []
        for review in reviews:
            recheck = await self.recheck_event(review)
            if recheck is not None:
                rechecks.append(recheck)
        stamps = [_when(r.get("last_updated")) for r in requests]
        stamps += [_when(r.get("timestamp")) for r in reviews]
        newest = max((s for s in stamps if s is not None), default=None)
        if newest is not None:
            cursor = newest - timedelta(seconds=CURSOR_OVERLAP_S)
            self.cursor = cursor if self.cursor is None else max(self.cursor, cursor)
        yield rechecks

    async def reconcile(self) -> list[ChangeEvent]:
        """Every open request's latest diff revision (the queue ignores those it has)."""
        self.cursor = None
        return await self.poll()

    async def closed_changes(self, runs: Sequence[ReviewRun]) -> list[ChangeEvent]:
        """The closed requests among the runs': the open ones are listed at once (one paged
        call); each other one is asked for (it may be closed, or moved to another
        repository)."""
        listed = await self.api.items(
            "/api/review-requests/",
            "review_requests",
            {
                "repository": str(await self.repository_id()),
                "status": "pending",
                "only-fields": "id",
                "only-links": "",
            },
        )
        open_ = {str(r["id"]) for r in listed}

        async def ask(run: ReviewRun) -> ChangeEvent | None:
            answer = await self.api.call("GET", f"/api/review-requests/{run.change}/")
            request = answer.get("review_request", {})
            return self._event(request, "closed") if request.get("status") in CLOSED else None

        return await closed_of([r for r in runs if r.change not in open_], ask)

    async def events(self) -> AsyncIterator[ChangeEvent]:
        """Poll every ``poll_interval`` seconds; a failed poll is logged and tried again."""
        while True:
            try:
                async for events in self._poll():
                    for event in events:
                        yield event
            except ReviewBoardError as error:
                log.warning("[[review]] %s: polling failed: %s", self.name, error)
            await asyncio.sleep(self.settings.poll_interval)

    # --- the commit to test ----------------------------------------------------------------

    async def patch_commit(self, run: ReviewRun, mirrors: Mirrors, tree: str, head: str) -> str:
        """The commit of the run's diff (see :class:`~labgate.review.base.PatchSource`);
        :class:`~labgate.review.base.Closed` when the request was closed meanwhile."""
        request = (await self.api.call("GET", f"/api/review-requests/{run.change}/")).get(
            "review_request", {}
        )
        if request.get("status") in CLOSED:
            raise Closed(f"review request {run.change} was {request['status']}")
        path = f"/api/review-requests/{run.change}/diffs/{run.patchset}/"
        diff = (await self.api.call("GET", path)).get("diff", {})
        submitter = str(request.get("links", {}).get("submitter", {}).get("title", "reviewboard"))
        patch = Patch(
            diff=await self.api.raw_diff(run.change, run.patchset),
            base=str(diff.get("base_commit_id") or head),
            subject=str(request.get("summary") or f"review request {run.change}"),
            author=submitter,
            email=f"{submitter}@reviewboard.invalid",
            date=str(diff.get("timestamp") or request.get("time_added") or ""),
            trailer=(
                f"Review Board: {request.get('absolute_url', run.url or '')} "
                f"diff revision {run.patchset}"
            ),
            ref=f"refs/labgate/reviewboard/{self.name}/{run.change}/{run.patchset}",
        )
        return await asyncio.to_thread(apply_patch, mirrors, tree, patch)

    # --- results out -------------------------------------------------------------------

    def _updates(self, run: ReviewRun) -> str:
        return f"/api/review-requests/{run.change}/status-updates/"

    async def _find(self, run: ReviewRun) -> str | None:
        """The status update of this run on the server (made before a crash), if any."""
        found = await self.api.items(
            self._updates(run), "status_updates", {"service-id": self.settings.context}
        )
        for update in found:
            if str(update.get("extra_data", {}).get(RUN_KEY)) == str(run.id):
                return str(update["id"])
        return None

    async def _change_id(self, run: ReviewRun) -> str | None:
        """The change description that published the run's diff revision (None for the first:
        a status update without one belongs to the request as first published)."""
        if run.patchset in ("", "1"):
            return None
        changes = await self.api.items(f"/api/review-requests/{run.change}/changes/", "changes")
        for change in changes:
            added = change.get("fields_changed", {}).get("diff", {}).get("added", {})
            if isinstance(added, dict) and str(added.get("revision")) == run.patchset:
                return str(change["id"])
        return None

    async def _status(self, run: ReviewRun, fields: dict[str, str], *, new: bool = False) -> str:
        """Update the run's status update (found by its stored id or on the server), or
        create it (at once when the run is ``new``: it cannot have one); returns its id."""
        update_id = run.report_id or (None if new else await self._find(run))
        if update_id is not None:
            await self.api.call("PUT", f"{self._updates(run)}{update_id}/", data=fields)
            return update_id
        create = {
            "service_id": self.settings.context,
            f"extra_data.{RUN_KEY}": str(run.id),
            **fields,
        }
        change_id = await self._change_id(run)
        if change_id is not None:
            create["change_id"] = change_id
        made = await self.api.call("POST", self._updates(run), data=create)
        return str(made["status_update"]["id"])

    async def queued(self, run: ReviewRun, *, again: bool = False) -> str | None:
        # a new run cannot have a status update yet; one a killed controller queued may have
        # (posted before its id was stored): then it is found by the run's id, not doubled
        fields = {
            "state": "pending",
            "summary": f"queued: attempt {run.attempt}",
            "description": f"diff revision {run.patchset}",
        }
        return await self._status(run, fields, new=not again)

    async def started(self, run: ReviewRun, target_url: str | None) -> str | None:
        fields = {
            "state": "pending",
            "summary": f"testing: flight {run.flight_id}, attempt {run.attempt}",
            "description": f"diff revision {run.patchset}",
        }
        if target_url:
            fields |= {"url": target_url, "url_text": f"flight {run.flight_id}"}
        return await self._status(run, fields)

    async def _review(self, run: ReviewRun, vote: Vote) -> str:
        """The review holding the run's full message: found by the run's marker (posted before
        a crash), or published now."""
        reviews = await self.api.items(f"/api/review-requests/{run.change}/reviews/", "reviews")
        for review in reviews:
            if run.marker in str(review.get("body_top", "")):
                return str(review["id"])
        made = await self.api.call(
            "POST",
            f"/api/review-requests/{run.change}/reviews/",
            data={"body_top": vote.message, "body_top_text_type": "plain", "public": "1"},
        )
        return str(made["review"]["id"])

    async def report(self, run: ReviewRun, vote: Vote) -> None:
        fields = {
            # a status update gates nothing in Review Board: a non-voting entry posts the same
            "state": STATES[vote.verified],
            "summary": _cut(vote.summary or vote.message.split("\n", 1)[0], SUMMARY_MAX),
            "description": description_of(vote),
            "review_id": await self._review(run, vote),
        }
        if vote.target_url:
            fields |= {"url": vote.target_url, "url_text": "flight"}
        await self._status(run, fields)

    async def reported(self, run: ReviewRun) -> bool:
        return False  # updating the run's one status update again is harmless

    async def withdrawn(self, run: ReviewRun, reason: str) -> None:
        """The run's status update (if it has one) becomes ``cancelled``: no result."""
        update_id = run.report_id or await self._find(run)
        if update_id is None:
            return  # never said it was queued: nothing to finalise
        fields = {
            "state": "cancelled",
            "summary": _cut(f"cancelled: {reason} before the run finished", SUMMARY_MAX),
            "description": f"diff revision {run.patchset}",
        }
        await self.api.call("PUT", f"{self._updates(run)}{update_id}/", data=fields)
