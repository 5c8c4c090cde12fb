"""The interface every code review connector implements: events in, votes out.

A connector (one folder per system: ``gerrit/``, ``github/``, ``reviewboard/``) turns what its
server says into :class:`ChangeEvent` values (a new patch set, or a request to test one again),
and posts the :class:`Vote` the loop decides for a :class:`ReviewRun`. Everything else (the
queue, the flight, the verdict, never voting twice) is the shared loop's, so a new system touches
one folder. A system whose patch sets are diffs rather than git refs (Review Board) also makes
the commit to test itself (:class:`PatchSource`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from labgate.git import Mirrors
    from labgate.model import ReviewSpec

EventKind = Literal["patchset", "recheck", "closed"]
VoteValue = Literal[-1, 0, 1]


@dataclass(frozen=True)
class OtherVote:
    """A Verified-like vote another CI account gave a patch set (for discrepancies)."""

    account: str
    label: str
    value: int


@dataclass(frozen=True)
class ChangeEvent:
    """A patch set to test. ``kind``: ``patchset`` (new, tested once) or ``recheck`` (a person
    asked to test it again), or ``closed``: the change was closed (merged, abandoned, submitted,
    discarded), so its runs are dropped or their flights cancelled, with no vote. ``source`` is
    the ``[[review]]`` name; ``change`` and ``patchset`` identify it in the review system
    (Gerrit: change and patch set numbers; GitHub: pull request number and head sha); ``ref``
    is fetched from the tree's URL and must point at ``revision``; ``branch`` is the review
    system's target branch. ``votes`` are other CI accounts' votes the event carried (Gerrit's
    comment-added approvals)."""

    kind: EventKind
    source: str
    project: str
    change: str
    patchset: str
    ref: str
    revision: str
    branch: str
    url: str | None = None
    author: str | None = None
    votes: tuple[OtherVote, ...] = ()
    created: datetime | None = None
    """When the review system made the patch set (for the time to a result), if it says."""
    delivery: str | None = None
    """What the server calls the event, when it is a thing that can be seen again (a recheck
    review polled twice): an event whose delivery the queue has seen queues nothing."""
    closed_as: str = ""
    """How a ``closed`` event's change was closed (``merged``, ``abandoned``, ``submitted``,
    ``discarded``)."""


class Refused(Exception):
    """The review system will never take this run's report (its change is closed): the run
    ends in ``error`` with this reason instead of being posted again and again."""


class Closed(Exception):
    """The run's change was closed before it could be tested (a connector finds out when it
    fetches the patch): the run ends ``superseded``, without a vote."""


class PatchFailed(Exception):
    """The patch does not apply to its base commit: the patch's failure (voted -1, never
    retried). The message is one line naming the file or hunk that did not apply."""


@dataclass(frozen=True)
class Vote:
    """What labgate says about a run: ``verified`` -1, 0 or +1 and the message that explains
    it. With ``voting`` False the connector comments without setting a vote."""

    verified: VoteValue
    message: str
    voting: bool = True
    summary: str = ""
    """One line (≤ 140 characters) for systems with short statuses (GitHub)."""
    target_url: str | None = None
    """The flight's page, when the lab has a web URL."""
    retest: bool = False
    """The lab failed the run (not tested): the loop queues another attempt."""


@dataclass(frozen=True)
class ReviewRun:
    """One test of a patch set: a row of the review queue (see :mod:`labgate.store.review`).

    ``state``: ``queued`` → ``running`` → ``voted``, or ``superseded`` (a newer patch set came,
    or the ref moved on) or ``error`` (it could not be tested; reported). ``vote_state`` is
    ``intent`` once the vote is decided and recorded, ``done`` once the server took it."""

    id: int
    connector: str
    change: str
    patchset: str
    attempt: int
    kind: EventKind
    project: str
    ref: str
    revision: str
    target: str
    url: str | None
    state: str
    flight_id: int | None
    vote: int | None
    voting: bool | None
    message: str | None
    vote_state: str | None
    retest: bool
    """The recorded vote says "not tested, will retry": another attempt follows it."""
    reason: str | None
    created: str
    updated: str
    report_id: str | None = None
    """What the connector said testing began with (a Review Board status update's id), so the
    result updates it, whatever restarts came between."""

    @property
    def marker(self) -> str:
        """The line every message of this run carries, so a connector can tell after a crash
        whether the server already has it."""
        return f"(labgate run {self.id}, attempt {self.attempt})"

    def event(self, kind: EventKind | None = None) -> ChangeEvent:
        """The event the run was queued for (to queue another attempt of it), or the same
        patch set as another ``kind`` (a recheck)."""
        return ChangeEvent(
            kind=kind or self.kind,
            source=self.connector,
            project=self.project,
            change=self.change,
            patchset=self.patchset,
            ref=self.ref,
            revision=self.revision,
            branch=self.target,
            url=self.url,
        )


class Connector(Protocol):
    """A code review system as the loop sees it."""

    name: str

    def events(self) -> AsyncIterator[ChangeEvent]:
        """The events as they happen (a long-lived stream; reconnects are the connector's
        business). A connector fed by webhooks enqueues from its receiver and yields nothing."""
        ...

    async def reconcile(self) -> list[ChangeEvent]:
        """The open changes whose current patch set may have no labgate result yet (asked
        after every (re)connect, so events missed while away are not lost)."""
        ...

    async def started(self, run: ReviewRun, target_url: str | None) -> str | None:
        """Say that testing began (a pending status); best effort, may do nothing. What it
        returns is stored as the run's ``report_id`` (for :meth:`report` to update)."""
        ...

    async def report(self, run: ReviewRun, vote: Vote) -> None:
        """Post the vote (or, with ``vote.voting`` False, the comment). Raise on failure."""
        ...

    async def reported(self, run: ReviewRun) -> bool:
        """Whether the server already has this run's report (looked up there, after a crash
        between posting and recording it). False when posting again is harmless."""
        ...


@runtime_checkable
class PatchSource(Protocol):
    """A connector whose patch sets are not git refs (Review Board's diffs): it makes the commit
    to test in the tree's mirror itself. Other connectors' runs name a ``ref`` the loop fetches."""

    async def patch_commit(self, run: ReviewRun, mirrors: Mirrors, tree: str, head: str) -> str:
        """The sha, in ``mirrors``' copy of ``tree``, of the run's patch applied to its base
        commit (``head``, the branch's tested revision, when the patch names none). Raises
        :class:`~labgate.git.GitError` (or the connector's error) when it cannot be made."""
        ...


@runtime_checkable
class QueueAcknowledger(Protocol):
    """A connector that says at once that a run is queued (Review Board: its status update,
    ``pending`` from the start, as its own review bots do), before the run starts."""

    async def queued(self, run: ReviewRun, *, again: bool = False) -> str | None:
        """Say that the run is queued; what it returns is stored as the run's ``report_id``
        (for :meth:`Connector.started` and :meth:`Connector.report` to update). ``again``:
        a controller may have said so before it was killed (look for what it posted)."""
        ...


@runtime_checkable
class Withdrawer(Protocol):
    """A connector that said something of a run before its result (a Review Board status
    update, a GitHub check run in progress) and so must say how the run ended when its change
    was closed before the run finished: no vote, a final state saying so."""

    async def withdrawn(self, run: ReviewRun, reason: str) -> None:
        """Finalise what was said of the run (``reason``: why it ended, e.g. "the change was
        discarded"). Raise on failure (it is tried again later)."""
        ...


@runtime_checkable
class ChangeStates(Protocol):
    """A connector that can say which changes are closed now (asked at start-up: a change
    closed while no controller listened, with its run queued or in flight)."""

    async def closed_changes(self, runs: Sequence[ReviewRun]) -> list[ChangeEvent]:
        """A ``closed`` event for each of the runs' changes the server says is closed."""
        ...


LOOKUPS_AT_ONCE = 8
"""Changes a :class:`ChangeStates` connector asks its server about at once."""


async def closed_of(
    runs: Sequence[ReviewRun], ask: Callable[[ReviewRun], Awaitable[ChangeEvent | None]]
) -> list[ChangeEvent]:
    """``ask`` (one call to the server) about one run of each of the runs' changes, at most
    ``LOOKUPS_AT_ONCE`` at once: the ``closed`` events it answers, oldest change first."""
    lane = asyncio.Semaphore(LOOKUPS_AT_ONCE)
    firsts = {run.change: run for run in reversed(runs)}

    async def one(run: ReviewRun) -> ChangeEvent | None:
        async with lane:
            return await ask(run)

    changes = sorted(firsts, key=lambda c: (len(c), c))
    found = await asyncio.gather(*(one(firsts[c]) for c in changes))
    return [event for event in found if event is not None]


def secret(spec: ReviewSpec, name: str, what: str, error: type[Exception]) -> str:
    """A driver's secret (``what``: "API token"...), from the environment variable ``name``
    that its ``*_env`` key names; ``error`` (the driver's) naming both when it is not set."""
    value = os.environ.get(name)
    if not value:
        raise error(
            f"[[review]] {spec.name}: the {what} is read from the environment variable {name}, "
            "which is not set"
        )
    return value
