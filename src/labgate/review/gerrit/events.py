"""``gerrit stream-events`` lines → review events: pure functions over the documented JSON.

Checked against the shapes Gerrit documents (Documentation/cmd-stream-events.txt and json.txt),
and against the protocol double of the tests (never a real Gerrit server): one JSON object per
line with ``type`` (``patchset-created``, ``comment-added``, ``change-merged``,
``change-abandoned``); ``change`` (``project``, ``branch``, ``id``, ``number``, ``url``,
``status``...), ``patchSet`` (``number``, ``revision``, ``ref``, ``uploader``...), and for
``comment-added`` the ``author``, the ``comment`` text and the ``approvals`` (``type``,
``value``, ``oldValue`` as strings). "Any field may be missing", says the documentation: a
line without what a decision needs is reported as :class:`StreamError`, never guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from labgate.model import ReviewSpec
from labgate.review.base import ChangeEvent, OtherVote
from labgate.review.gerrit.settings import gerrit_settings

VERIFIED = "Verified"
CLOSING = {"change-merged": "merged", "change-abandoned": "abandoned"}
"""The events of a change closed, and how."""


class StreamError(ValueError):
    """A stream-events line that is not JSON, or lacks a field the event needs."""


def _field(obj: Mapping[str, Any], *path: str) -> Any:
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping) or value.get(key) is None:
            raise StreamError(f"no {'.'.join(path)} in the event")
        value = value[key]
    return value


def _account(account: Any) -> str | None:
    if not isinstance(account, Mapping):
        return None
    for key in ("username", "email", "name"):
        if isinstance(account.get(key), str):
            return str(account[key])
    return None


def _int_text(value: Any, what: str) -> str:
    # Gerrit sends numbers as JSON numbers in newer versions and as strings in older ones
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not text.isdigit():
        raise StreamError(f"{what} {value!r} is not a number")
    return text


def approvals(event: Mapping[str, Any]) -> tuple[OtherVote, ...]:
    """The ``approvals`` of a comment-added event whose author is one voting account, as votes
    (values are strings in the JSON: ``"-1"``)."""
    who = _account(event.get("author")) or "?"
    out = []
    for approval in event.get("approvals") or ():
        if not isinstance(approval, Mapping) or not isinstance(approval.get("type"), str):
            continue
        try:
            value = int(str(approval.get("value")))
        except ValueError:
            continue
        out.append(OtherVote(account=who, label=str(approval["type"]), value=value))
    return tuple(out)


def _change_event(spec: ReviewSpec, event: Mapping[str, Any], kind: str) -> ChangeEvent:
    change = _field(event, "change")
    number = _int_text(_field(event, "change", "number"), "change.number")
    revision = _field(event, "patchSet", "revision")
    if not isinstance(revision, str) or not re.fullmatch(r"[0-9a-f]{40}", revision):
        raise StreamError(f"patchSet.revision {revision!r} is not a commit sha")
    ref = _field(event, "patchSet", "ref")
    if not isinstance(ref, str) or not ref.startswith("refs/changes/"):
        raise StreamError(f"patchSet.ref {ref!r} is not a refs/changes/ ref")
    return ChangeEvent(
        kind="recheck" if kind == "recheck" else "patchset",
        source=spec.name,
        project=str(_field(event, "change", "project")),
        change=number,
        patchset=_int_text(_field(event, "patchSet", "number"), "patchSet.number"),
        ref=ref,
        revision=revision,
        branch=str(_field(event, "change", "branch")),
        url=change.get("url") if isinstance(change.get("url"), str) else None,
        author=_account(event.get("uploader") or event.get("author")),
        created=_epoch(_field(event, "patchSet").get("createdOn")),
    )


def _epoch(value: Any) -> datetime | None:
    """A json.txt time (seconds since the epoch), None when missing or not a number."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return datetime.fromtimestamp(value, UTC)
    return None


def _ours(spec: ReviewSpec, event: Mapping[str, Any]) -> bool:
    change = event.get("change")
    if not isinstance(change, Mapping) or change.get("project") != spec.project:
        return False
    return spec.target is None or change.get("branch") == spec.target


def is_recheck(spec: ReviewSpec, comment: str) -> bool:
    """Whether a comment asks to test again. Gerrit prefixes the text with ``Patch Set N:`` and
    a blank line (and any votes given), so the pattern is matched against each line."""
    return re.search(spec.recheck, comment, re.MULTILINE) is not None


def dropped_output(line: str) -> bool:
    """Whether the line is Gerrit's ``dropped-output`` event: it dropped events for this stream
    (so what they said must be asked again)."""
    try:
        event = json.loads(line)
    except ValueError:
        return False
    return isinstance(event, Mapping) and event.get("type") == "dropped-output"


def parse_event(spec: ReviewSpec, line: str) -> ChangeEvent | None:
    """One stream-events line → the event to queue, or None for an event that asks nothing of
    this ``[[review]]`` (another type, project or branch; a comment that is no recheck and
    carries no other CI's vote; labgate's own comments).

    ``patchset-created`` → a ``patchset`` event; ``change-merged`` and ``change-abandoned`` → a
    ``closed`` one (its runs end without a vote). ``comment-added`` matching the recheck pattern →
    a ``recheck`` event; one carrying another CI account's Verified vote → a ``patchset`` event
    whose ``votes`` hold it (the queue records the vote; the patch set itself is queued only if
    it never was)."""
    try:
        event = json.loads(line)
    except ValueError as error:
        raise StreamError(f"not JSON: {error}") from None
    if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
        raise StreamError("not an event object (no type)")
    kind = event["type"]
    if kind not in (*CLOSING, "patchset-created", "comment-added") or not _ours(spec, event):
        return None
    if kind in CLOSING:
        return ChangeEvent(
            kind="closed",
            source=spec.name,
            project=str(_field(event, "change", "project")),
            change=_int_text(_field(event, "change", "number"), "change.number"),
            patchset="",
            ref="",
            revision="",
            branch=str(_field(event, "change", "branch")),
            closed_as=CLOSING[kind],
        )
    if kind == "patchset-created":
        return _change_event(spec, event, "patchset")
    author = _account(event.get("author"))
    if author is not None and author == gerrit_settings(spec).user:
        return None  # our own vote coming back
    comment = event.get("comment")
    if isinstance(comment, str) and is_recheck(spec, comment):
        return _change_event(spec, event, "recheck")
    votes = tuple(
        v
        for v in approvals(event)
        if v.label == VERIFIED and (not spec.ci_accounts or v.account in spec.ci_accounts)
    )
    if not votes:
        return None
    base = _change_event(spec, event, "patchset")
    return replace(base, votes=votes)
