"""GitHub webhook payloads → review events: pure functions over the documented payload shapes.

- ``pull_request`` with ``action`` ``opened``, ``synchronize`` or ``reopened``: the pull request's
  head commit (``pull_request.head.sha``) is a patch set to test, fetched from the base
  repository's ``refs/pull/<number>/head``; ``closed`` ends its queued runs.
- ``issue_comment`` ``created`` on an issue that is a pull request (``issue.pull_request`` is
  present) whose ``comment.body`` matches the recheck pattern: test it again.
- ``status`` from another context than ours: another CI's verdict on a commit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from labgate.model import ReviewSpec
from labgate.review.base import ChangeEvent, OtherVote

PR_ACTIONS = frozenset({"opened", "synchronize", "reopened"})
STATUS_VALUES = {"success": 1, "failure": -1}  # "error" and "pending" are no verdict


class PayloadError(ValueError):
    """A payload without a field GitHub documents for its event."""


def _get(payload: Mapping[str, Any], *path: str) -> Any:
    value: Any = payload
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            raise PayloadError(f"no {'.'.join(path)} in the payload")
        value = value[key]
    return value


def _ours(spec: ReviewSpec, payload: Mapping[str, Any]) -> bool:
    name = _get(payload, "repository", "full_name")
    return isinstance(name, str) and name.lower() == spec.project.lower()


def pull_request_ref(number: int | str) -> str:
    return f"refs/pull/{number}/head"


def event_from_pull_request(
    spec: ReviewSpec, pr: Mapping[str, Any], kind: str = "patchset"
) -> ChangeEvent | None:
    """The patch set of a pull request object (as in the webhook and ``GET .../pulls/N``), or
    None when its base branch is not the one this ``[[review]]`` tests."""
    number = _get(pr, "number")
    sha = _get(pr, "head", "sha")
    base = _get(pr, "base", "ref")
    if not isinstance(number, int) or not isinstance(sha, str) or not isinstance(base, str):
        raise PayloadError("pull_request.number, head.sha or base.ref has the wrong type")
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise PayloadError(f"pull_request.head.sha {sha!r} is not a commit sha")
    if spec.target is not None and base != spec.target:
        return None
    user = pr.get("user")
    return ChangeEvent(
        kind="recheck" if kind == "recheck" else "patchset",
        source=spec.name,
        project=spec.project,
        change=str(number),
        patchset=sha,
        ref=pull_request_ref(number),
        revision=sha,
        branch=base,
        url=pr.get("html_url") if isinstance(pr.get("html_url"), str) else None,
        author=user.get("login") if isinstance(user, Mapping) else None,
    )


def pull_request_event(spec: ReviewSpec, payload: Mapping[str, Any]) -> ChangeEvent | None:
    """A ``pull_request`` delivery → the patch set to test, or None (another action, another
    repository, another base branch)."""
    if _get(payload, "action") not in PR_ACTIONS or not _ours(spec, payload):
        return None
    return event_from_pull_request(spec, _get(payload, "pull_request"))


def closed_pull_request(spec: ReviewSpec, payload: Mapping[str, Any]) -> str | None:
    """The change (pull request number) a ``pull_request`` ``closed`` delivery ends."""
    if _get(payload, "action") != "closed" or not _ours(spec, payload):
        return None
    return str(_get(payload, "pull_request", "number"))


def recheck_request(spec: ReviewSpec, payload: Mapping[str, Any]) -> int | None:
    """The pull request number an ``issue_comment`` delivery asks to test again, or None."""
    if _get(payload, "action") != "created" or not _ours(spec, payload):
        return None
    issue = _get(payload, "issue")
    if not isinstance(issue, Mapping) or not issue.get("pull_request"):
        return None  # a comment on a plain issue
    body = _get(payload, "comment", "body")
    if not isinstance(body, str) or not re.search(spec.recheck, body.strip(), re.MULTILINE):
        return None
    number = _get(issue, "number")
    if not isinstance(number, int):
        raise PayloadError("issue.number is not a number")
    return number


def status_vote(spec: ReviewSpec, payload: Mapping[str, Any]) -> tuple[str, OtherVote] | None:
    """Another CI's verdict from a ``status`` delivery: (commit sha, vote), or None for our own
    context, a context not in ``ci_accounts``, or a state that is no verdict."""
    if not _ours(spec, payload):
        return None
    sha, context, state = (_get(payload, k) for k in ("sha", "context", "state"))
    if not all(isinstance(v, str) for v in (sha, context, state)):
        raise PayloadError("status sha, context or state is not a string")
    if context == spec.context or (spec.ci_accounts and context not in spec.ci_accounts):
        return None
    if state not in STATUS_VALUES:
        return None
    return sha, OtherVote(account=context, label="status", value=STATUS_VALUES[state])
