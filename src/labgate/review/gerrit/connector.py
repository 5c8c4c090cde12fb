"""The Gerrit connector: events from ``gerrit stream-events`` over SSH (asyncssh), the open
changes and votes through the REST API (httpx, HTTP basic auth with the account's HTTP
password from the environment).

The stream is kept open for good: when it ends or the connection drops, the connector waits
(1 s, doubling up to a minute; reset once a stream is open again) and reconnects; after every
(re)connect, and when Gerrit says it dropped events (``dropped-output``), it asks the REST API
for the open changes, so a patch set uploaded while it was away is queued (the queue drops the
ones it already has: never tested twice).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import asyncssh
import httpx

from labgate.model import ReviewSpec
from labgate.review.base import ChangeEvent, Refused, ReviewRun, Vote, closed_of, secret
from labgate.review.gerrit.events import StreamError, dropped_output, parse_event
from labgate.review.gerrit.rest import (
    Request,
    RestError,
    change_request,
    closed_as,
    has_marker,
    messages_request,
    open_changes,
    open_changes_request,
    read_json,
    review_request,
)
from labgate.review.gerrit.settings import gerrit_settings

log = logging.getLogger("labgate.review.gerrit")

STREAM_COMMAND = "gerrit stream-events"
DEFAULT_SSH_PORT = 29418
SSH_TARGET = r"(?:([^@\s]+)@)?([^@:\s]+|\[[0-9a-fA-F:.]+\])(?::(\d{1,5}))?"


class GerritError(Exception):
    """A Gerrit call failed or the connector is not configured; the message says which."""


def ssh_target(spec: ReviewSpec) -> tuple[str, str, int]:
    """(user, host, port) of ``ssh = "[user@]host[:port]"`` (user: ``user``; port 29418)."""
    settings = gerrit_settings(spec)
    found = re.fullmatch(
        r"(?:([^@\s]+)@)?([^@:\s]+|\[[0-9a-fA-F:.]+\])(?::(\d{1,5}))?", settings.ssh
    )
    if found is None:
        raise GerritError(
            f"[[review]] {spec.name}: ssh = {settings.ssh!r} is not [user@]host[:port]"
        )
    user = found.group(1) or settings.user
    if not user:
        raise GerritError(f"[[review]] {spec.name}: no user for SSH (set user or ssh = user@host)")
    return user, found.group(2).strip("[]"), int(found.group(3) or DEFAULT_SSH_PORT)


class GerritConnector:
    """One ``[[review]]`` with ``driver = "gerrit"``. ``backoff`` is the first and the longest
    wait before reconnecting the stream, in seconds."""

    def __init__(
        self,
        spec: ReviewSpec,
        *,
        backoff: tuple[float, float] = (1.0, 60.0),
        keepalive_s: float = 30.0,
    ) -> None:
        self.spec = spec
        self.settings = gerrit_settings(spec)
        self.name = spec.name
        self.backoff = backoff
        self.keepalive_s = keepalive_s

    # --- REST --------------------------------------------------------------------------

    def _password(self) -> str:
        return secret(self.spec, self.settings.password_env, "HTTP password", GerritError)

    async def _call(self, request: Request) -> Any:
        url = f"{self.spec.server}{request.path}"
        async with httpx.AsyncClient(
            auth=(self.settings.user, self._password()),
            headers={"Accept": "application/json", "User-Agent": "labgate"},
            timeout=30.0,
        ) as client:
            try:
                response = await client.request(request.method, url, json=request.body)
            except httpx.HTTPError as error:
                raise GerritError(f"{request.method} {url}: {error}") from error
        if response.status_code == 409:
            raise Refused(
                f"Gerrit answered {request.method} {url} with 409 Conflict (the change's state "
                f"does not allow it): {response.text.strip()[:300]}"
            )
        if response.status_code >= 300:
            raise GerritError(
                f"{request.method} {url}: HTTP {response.status_code}: {response.text[:300]}"
            )
        try:
            return read_json(response.text)
        except RestError as error:
            raise GerritError(f"{request.method} {url}: {error}") from None

    async def reconcile(self) -> list[ChangeEvent]:
        """The current patch set of every open change of the project (and target branch), with
        the other CI accounts' Verified votes on it."""
        answer = await self._call(open_changes_request(self.spec))
        try:
            return [e for e in open_changes(self.spec, answer) if e.project == self.spec.project]
        except RestError as error:
            raise GerritError(f"the open changes of {self.spec.project}: {error}") from None

    async def closed_changes(self, runs: Sequence[ReviewRun]) -> list[ChangeEvent]:
        """The runs' changes merged or abandoned now (one ``GET /a/changes/{id}`` each)."""

        async def ask(run: ReviewRun) -> ChangeEvent | None:
            try:
                how = closed_as(await self._call(change_request(run)))
            except RestError as error:
                raise GerritError(f"change {run.change}: {error}") from None
            return None if how is None else replace(run.event("closed"), closed_as=how)

        return await closed_of(runs, ask)

    async def started(self, run: ReviewRun, target_url: str | None) -> None:
        """Gerrit has no pending state; the vote's message is the only report."""

    async def report(self, run: ReviewRun, vote: Vote) -> None:
        """Set Review on the run's revision: the message, and Verified unless non-voting. A
        closed change answers 409: :class:`~labgate.review.base.Refused`."""
        await self._call(review_request(run, vote))

    async def reported(self, run: ReviewRun) -> bool:
        messages = await self._call(messages_request(run))
        try:
            return has_marker(messages, run)
        except RestError as error:
            raise GerritError(f"the messages of change {run.change}: {error}") from None

    # --- the event stream --------------------------------------------------------------

    async def events(self) -> AsyncIterator[ChangeEvent]:
        """Stream events for good: reconnect with backoff, reconcile after each connect."""
        wait = self.backoff[0]
        while True:
            try:
                async for event in self._stream():
                    wait = self.backoff[0]  # connected: the next loss starts over
                    if event is not None:
                        yield event
                why = "the stream ended"
            except (OSError, asyncssh.Error, GerritError, Refused) as error:
                why = str(error) or type(error).__name__
            log.warning("%s: %s; reconnecting in %gs", self.name, why, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, self.backoff[1])

    async def _stream(self) -> AsyncIterator[ChangeEvent | None]:
        """One connection's events, after None once the stream is open."""
        user, host, port = ssh_target(self.spec)
        options: dict[str, Any] = {}
        if self.settings.identity_file:
            options["client_keys"] = [self.settings.identity_file]
        if self.settings.known_hosts_file:
            options["known_hosts"] = self.settings.known_hosts_file
        try:
            conn = await asyncssh.connect(
                host,
                port,
                username=user,
                keepalive_interval=self.keepalive_s,
                keepalive_count_max=3,
                **options,
            )
        except asyncssh.HostKeyNotVerifiable as error:
            known = self.settings.known_hosts_file or "~/.ssh/known_hosts"
            raise GerritError(
                f"{host}:{port}: its SSH host key is not in {known} ({error.reason})"
            ) from None
        async with conn:
            process = await conn.create_process(STREAM_COMMAND)
            log.info("%s: streaming events from %s@%s:%d", self.name, user, host, port)
            yield None
            # the stream is open before the reconcile: nothing happens unseen in between
            for event in await self.reconcile():
                yield event
            async for line in process.stdout:
                if dropped_output(line):
                    log.warning("%s: Gerrit dropped events: asking for the open changes", self.name)
                    for event in await self.reconcile():
                        yield event
                    continue
                try:
                    found = parse_event(self.spec, line)
                except StreamError as error:
                    log.warning("%s: an event line skipped: %s: %.200s", self.name, error, line)
                    continue
                if found is not None:
                    yield found
            status = await process.wait()
            if status.exit_status:
                raise GerritError(
                    f"{STREAM_COMMAND} exited with {status.exit_status}: "
                    f"{str(status.stderr or '').strip()[:300]}"
                )
