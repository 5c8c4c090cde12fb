"""The GitHub connector: REST calls through httpx with a token from the environment.

Results are commit statuses, check runs or both (``report = ["status", "check_run"]``):

- a commit status (``POST /repos/{owner}/{repo}/statuses/{sha}``: ``state``
  ``pending``/``success``/``failure``/``error``, ``target_url``, ``description`` of at most 140
  characters, ``context``): +1 is ``success``, -1 ``failure``, 0 (the lab failed) ``error``. A
  status is set per (sha, context): posting it again replaces it;
- a check run (``POST /repos/{owner}/{repo}/check-runs`` with ``name`` (the context),
  ``head_sha``, ``external_id`` (the run's id), ``details_url``, ``status`` ``in_progress`` when
  testing starts, then ``PATCH .../check-runs/{id}`` to ``completed`` with a ``conclusion``
  (+1 ``success``, -1 ``failure``, 0 ``neutral``) and an ``output`` (``title``, ``summary``: the
  whole message). The run's check run is found again by its ``external_id``
  (``GET /repos/{owner}/{repo}/commits/{sha}/check-runs``), so a report repeated after a crash
  completes the same check run. Only a GitHub App's installation token may write check runs.

So a report repeated after a crash is no second vote. A run whose pull request was closed before
it finished gets no vote: its check run, if testing began, is completed ``cancelled`` (its
commit status, a vote, is left ``pending``). With ``voting = false`` the result is a
pull request comment instead (``POST /repos/{owner}/{repo}/issues/{number}/comments``), looked
up by the run's marker before it is posted again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx

from labgate.model import ReviewSpec
from labgate.review.base import ChangeEvent, ReviewRun, Vote, closed_of, secret
from labgate.review.github.events import PayloadError, event_from_pull_request
from labgate.review.github.settings import github_settings

API_VERSION = "2022-11-28"
STATES = {1: "success", -1: "failure", 0: "error"}
CONCLUSIONS = {1: "success", -1: "failure", 0: "neutral"}
DESCRIPTION_MAX = 140
OUTPUT_MAX = 65535


class GitHubError(Exception):
    """A GitHub API call failed or the connector is not configured; the message says which."""


def webhook_secret(spec: ReviewSpec) -> str:
    """The webhook secret, from the environment variable ``secret_env`` names."""
    return secret(spec, github_settings(spec).secret_env, "webhook secret", GitHubError)


class GitHubConnector:
    """One ``[[review]]`` with ``driver = "github"``."""

    def __init__(self, spec: ReviewSpec, *, transport: httpx.AsyncBaseTransport | None = None):
        self.spec = spec
        self.settings = github_settings(spec)
        self.name = spec.name
        self._transport = transport

    def _client(self) -> httpx.AsyncClient:
        token = secret(self.spec, self.settings.token_env, "API token", GitHubError)
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

    async def closed_changes(self, runs: Sequence[ReviewRun]) -> list[ChangeEvent]:
        """The runs' pull requests that are closed now (one ``GET .../pulls/{number}`` each)."""

        async def ask(run: ReviewRun) -> ChangeEvent | None:
            pr = await self._call("GET", f"{self._repo}/pulls/{run.change}")
            if not isinstance(pr, Mapping) or pr.get("state") != "closed":
                return None
            return replace(
                run.event("closed"), closed_as="merged" if pr.get("merged") else "closed"
            )

        return await closed_of(runs, ask)

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
            "context": self.settings.context,
        }
        if target_url:
            body["target_url"] = target_url
        await self._call("POST", f"{self._repo}/statuses/{sha}", json=body)

    async def check_run(self, run: ReviewRun, body: dict[str, Any]) -> None:
        """Create the run's check run, or update it when GitHub has it already (found by the
        run's id as its ``external_id``)."""
        found = await self._call(
            "GET",
            f"{self._repo}/commits/{run.revision}/check-runs",
            params={"check_name": self.settings.context, "filter": "all", "per_page": "100"},
        )
        listed = found.get("check_runs") if isinstance(found, Mapping) else None
        ours = [
            c
            for c in listed or []
            if isinstance(c, Mapping) and c.get("external_id") == str(run.id)
        ]
        if ours:
            await self._call("PATCH", f"{self._repo}/check-runs/{ours[0]['id']}", json=body)
            return
        await self._call(
            "POST",
            f"{self._repo}/check-runs",
            json={
                "name": self.settings.context,
                "head_sha": run.revision,
                "external_id": str(run.id),
                **body,
            },
        )

    async def started(self, run: ReviewRun, target_url: str | None) -> None:
        if not self.spec.voting:
            return
        text = f"labgate is testing this (flight {run.flight_id}, attempt {run.attempt})"
        if "status" in self.settings.report:
            await self.status(run.revision, "pending", text, target_url)
        if "check_run" in self.settings.report:
            body: dict[str, Any] = {
                "status": "in_progress",
                "started_at": _now(),
                "output": {"title": text, "summary": text},
            }
            if target_url:
                body["details_url"] = target_url
            await self.check_run(run, body)

    async def report(self, run: ReviewRun, vote: Vote) -> None:
        if vote.voting:
            summary = vote.summary or vote.message.split("\n", 1)[0]
            if "status" in self.settings.report:
                await self.status(run.revision, STATES[vote.verified], summary, vote.target_url)
            if "check_run" in self.settings.report:
                await self.check_run(run, _completed(vote, summary))
        else:
            await self._call(
                "POST", f"{self._repo}/issues/{run.change}/comments", json={"body": vote.message}
            )

    async def withdrawn(self, run: ReviewRun, reason: str) -> None:
        """A run whose testing began: its check run is completed ``cancelled``."""
        if run.flight_id is None or "check_run" not in self.settings.report:
            return
        if not self.spec.voting:
            return
        text = f"cancelled: {reason} before the run finished"
        await self.check_run(
            run,
            {
                "status": "completed",
                "conclusion": "cancelled",
                "completed_at": _now(),
                "output": {"title": text, "summary": f"{text} {run.marker}"},
            },
        )

    async def reported(self, run: ReviewRun) -> bool:
        if run.voting:
            # a status replaces the one of the same context, a check run is found again by its
            # external_id: posting again is harmless
            return False
        comments = await self._call(
            "GET", f"{self._repo}/issues/{run.change}/comments", params={"per_page": "100"}
        )
        return any(
            isinstance(c, Mapping) and run.marker in str(c.get("body", "")) for c in comments or []
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _completed(vote: Vote, title: str) -> dict[str, Any]:
    """A check run's completion: its conclusion, and the whole message as its output (in a code
    block: the message is laid out in columns)."""
    fence = "```"
    text = vote.message[: OUTPUT_MAX - 2 * len(fence) - 2]
    body: dict[str, Any] = {
        "status": "completed",
        "conclusion": CONCLUSIONS[vote.verified],
        "completed_at": _now(),
        "output": {"title": title, "summary": f"{fence}\n{text}\n{fence}"},
    }
    if vote.target_url:
        body["details_url"] = vote.target_url
    return body
