"""The GitHub connector: REST calls through httpx with a token from the environment.

Results are commit statuses (``POST /repos/{owner}/{repo}/statuses/{sha}``: ``state``
``pending``/``success``/``failure``/``error``, ``target_url``, ``description`` of at most 140
characters, ``context``): +1 is ``success``, -1 ``failure``, 0 (the lab failed) ``error``. A status
is set per (sha, context): posting it again replaces it, so a report repeated after a crash is no
second vote. With ``voting = false`` the result is a pull request comment instead
(``POST /repos/{owner}/{repo}/issues/{number}/comments``), looked up by the run's marker before
it is posted again.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from labgate.model import ReviewSpec
from labgate.review.base import ChangeEvent, ReviewRun, Vote
from labgate.review.github.events import PayloadError, event_from_pull_request

API_VERSION = "2022-11-28"
STATES = {1: "success", -1: "failure", 0: "error"}
DESCRIPTION_MAX = 140


class GitHubError(Exception):
    """A GitHub API call failed or the connector is not configured; the message says which."""


def _env(name: str | None, what: str, spec: ReviewSpec) -> str:
    value = os.environ.get(name or "")
    if not name or not value:
        raise GitHubError(
            f"[[review]] {spec.name}: the {what} is read from the environment variable "
            f"{name or '(none named)'}, which is not set"
        )
    return value


def webhook_secret(spec: ReviewSpec) -> str:
    """The webhook secret, from the environment variable ``secret_env`` names."""
    return _env(spec.secret_env, "webhook secret", spec)


class GitHubConnector:
    """One ``[[review]]`` with ``driver = "github"``."""

    def __init__(self, spec: ReviewSpec, *, transport: httpx.AsyncBaseTransport | None = None):
        self.spec = spec
        self.name = spec.name
        self._transport = transport

    def _client(self) -> httpx.AsyncClient:
        token = _env(self.spec.token_env, "API token", self.spec)
        return httpx.AsyncClient(
            base_url=self.spec.server,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "labgate",
            },
            timeout=30.0,
            transport=self._transport,
        )

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self._client() as client:
            try:
                response = await client.request(method, path, **kwargs)
            except httpx.HTTPError as error:
                raise GitHubError(f"{method} {self.spec.server}{path}: {error}") from error
        if response.status_code >= 300:
            raise GitHubError(
                f"{method} {self.spec.server}{path}: HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        try:
            return response.json() if response.content else None
        except ValueError as error:  # a proxy's HTML page, a truncated answer
            raise GitHubError(
                f"{method} {self.spec.server}{path}: the answer is not JSON ({error}): "
                f"{response.text[:100]!r}"
            ) from None

    @property
    def _repo(self) -> str:
        return f"/repos/{self.spec.project}"

    # --- events in ---------------------------------------------------------------------

    async def pull_request(self, number: int, kind: str = "patchset") -> ChangeEvent | None:
        """The pull request's current patch set (``GET /repos/{owner}/{repo}/pulls/{number}``)."""
        pr = await self._call("GET", f"{self._repo}/pulls/{number}")
        if not isinstance(pr, Mapping):
            raise GitHubError(f"pull request {number}: not an object")
        try:
            return event_from_pull_request(self.spec, pr, kind)
        except PayloadError as error:  # GitHub's answer, not the delivery, is wrong
            raise GitHubError(f"pull request {number}: {error}") from None

    async def reconcile(self) -> list[ChangeEvent]:
        """Every open pull request's head (the queue ignores those already tested)."""
        params = {"state": "open", "per_page": "100"}
        if self.spec.target is not None:
            params["base"] = self.spec.target
        pulls = await self._call("GET", f"{self._repo}/pulls", params=params)
        events = []
        for pr in pulls if isinstance(pulls, list) else []:
            try:
                event = event_from_pull_request(self.spec, pr)
            except PayloadError:
                continue
            if event is not None:
                events.append(event)
        return events

    async def events(self) -> AsyncIterator[ChangeEvent]:
        """What was missed while away, once: live events arrive through the webhook."""
        for event in await self.reconcile():
            yield event

    # --- results out -------------------------------------------------------------------

    async def status(self, sha: str, state: str, description: str, target_url: str | None) -> None:
        if len(description) > DESCRIPTION_MAX:
            description = description[: DESCRIPTION_MAX - 1] + "…"
        body: dict[str, Any] = {
            "state": state,
            "description": description,
            "context": self.spec.context,
        }
        if target_url:
            body["target_url"] = target_url
        await self._call("POST", f"{self._repo}/statuses/{sha}", json=body)

    async def started(self, run: ReviewRun, target_url: str | None) -> None:
        if self.spec.voting:
            text = f"labgate is testing this (flight {run.flight_id}, attempt {run.attempt})"
            await self.status(run.revision, "pending", text, target_url)

    async def report(self, run: ReviewRun, vote: Vote) -> None:
        if vote.voting:
            summary = vote.summary or vote.message.split("\n", 1)[0]
            await self.status(run.revision, STATES[vote.verified], summary, vote.target_url)
        else:
            await self._call(
                "POST", f"{self._repo}/issues/{run.change}/comments", json={"body": vote.message}
            )

    async def reported(self, run: ReviewRun) -> bool:
        if run.voting:
            return False  # a status replaces the one of the same context: posting is harmless
        comments = await self._call(
            "GET", f"{self._repo}/issues/{run.change}/comments", params={"per_page": "100"}
        )
        return any(
            isinstance(c, Mapping) and run.marker in str(c.get("body", "")) for c in comments or []
        )
