"""GitHub webhook payloads → review events: pure functions over the documented payload shapes.

- ``pull_request`` with ``action`` ``opened``, ``synchronize`` or ``reopened``: the pull request's
  head commit (``pull_request.head.sha``) is a patch set to test, fetched from the base
  repository's ``refs/pull/<number>/head``; ``closed`` ends its queued runs.
- ``issue_comment`` ``created`` on an issue that is a pull request (``issue.pull_request`` is
  present) whose ``comment.body`` matches the recheck pattern: test it again.
- ``status`` from another context than ours: another CI's verdict on a commit.
- ``check_run`` ``completed`` with another name than our context: another CI's verdict too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from labgate.model import ReviewSpec
from labgate.review.base import ChangeEvent, OtherVote
from labgate.review.github.settings import github_settings

PR_ACTIONS = frozenset({"opened", "synchronize", "reopened"})
STATUS_VALUES = {"success": 1, "failure": -1}  # "error" and "pending" are no verdict
CONCLUSION_VALUES = {"success": 1, "failure": -1}  # "neutral", "cancelled"... are no verdict


class PayloadError(ValueError):
    """A payload without a field GitHub documents for its event, or with a field of the wrong
    type or size; the message names the field."""


# The documented shapes labgate reads; GitHub's other fields are ignored. Strict: a number is a
# JSON number (``true`` is not 1), text is a JSON string, each of a size the store can keep.
class _Shape(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


Number = Annotated[int, Field(ge=1, le=2**31 - 1)]
Sha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
Short = Annotated[str, StringConstraints(max_length=200)]


class Repository(_Shape):
    full_name: Short


class User(_Shape):
    login: Short


class Head(_Shape):
    sha: Sha


class Base(_Shape):
    ref: Annotated[str, StringConstraints(min_length=1, max_length=255)]


class PullRequest(_Shape):
    number: Number
    head: Head
    base: Base
    html_url: str | None = None
    user: User | None = None


class PullRequestDelivery(_Shape):
    action: Short
    repository: Repository
    pull_request: PullRequest


class Issue(_Shape):
    number: Number
    pull_request: dict[str, Any] | None = None  # present when the issue is a pull request


class Comment(_Shape):
    body: str


class IssueCommentDelivery(_Shape):
    action: Short
    repository: Repository
    issue: Issue
    comment: Comment


class StatusDelivery(_Shape):
    repository: Repository
    sha: Sha
    context: Short
    state: Short


class CheckRun(_Shape):
    head_sha: Sha
    name: Short
    status: Short
    conclusion: Short | None = None


class CheckRunDelivery(_Shape):
    action: Short
    repository: Repository
    check_run: CheckRun


Shape = TypeVar("Shape", bound=_Shape)


def parse(shape: type[Shape], payload: Mapping[str, Any], what: str) -> Shape:
    """``payload`` read as ``shape``; PayloadError naming the first wrong field otherwise."""
    try:
        return shape.model_validate(payload)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the payload"
        raise PayloadError(f"{what}: {where}: {first['msg']}") from None


def _ours(spec: ReviewSpec, repository: Repository) -> bool:
    return repository.full_name.lower() == spec.project.lower()


def pull_request_ref(number: int | str) -> str:
    return f"refs/pull/{number}/head"


def event_from_pull_request(
    spec: ReviewSpec, pr: Mapping[str, Any] | PullRequest, kind: str = "patchset"
) -> ChangeEvent | None:
    """The patch set of a pull request object (as in the webhook and ``GET .../pulls/N``), or
    None when its base branch is not the one this ``[[review]]`` tests."""
    if not isinstance(pr, PullRequest):
        pr = parse(PullRequest, pr, "pull request")
    if spec.target is not None and pr.base.ref != spec.target:
        return None
    return ChangeEvent(
        kind="recheck" if kind == "recheck" else "patchset",
        source=spec.name,
        project=spec.project,
        change=str(pr.number),
        patchset=pr.head.sha,
        ref=pull_request_ref(pr.number),
        revision=pr.head.sha,
        branch=pr.base.ref,
        url=pr.html_url,
        author=pr.user.login if pr.user else None,
    )


def pull_request_event(spec: ReviewSpec, payload: Mapping[str, Any]) -> ChangeEvent | None:
    """A ``pull_request`` delivery → the patch set to test, or None (another action, another
    repository, another base branch)."""
    delivery = parse(PullRequestDelivery, payload, "pull_request")
    if delivery.action not in PR_ACTIONS or not _ours(spec, delivery.repository):
        return None
    return event_from_pull_request(spec, delivery.pull_request)


def closed_pull_request(spec: ReviewSpec, payload: Mapping[str, Any]) -> str | None:
    """The change (pull request number) a ``pull_request`` ``closed`` delivery ends."""
    delivery = parse(PullRequestDelivery, payload, "pull_request")
    if delivery.action != "closed" or not _ours(spec, delivery.repository):
        return None
    return str(delivery.pull_request.number)


def recheck_request(spec: ReviewSpec, payload: Mapping[str, Any]) -> int | None:
    """The pull request number an ``issue_comment`` delivery asks to test again, or None."""
    delivery = parse(IssueCommentDelivery, payload, "issue_comment")
    if delivery.action != "created" or not _ours(spec, delivery.repository):
        return None
    if not delivery.issue.pull_request:
        return None  # a comment on a plain issue
    if not re.search(spec.recheck, delivery.comment.body.strip(), re.MULTILINE):
        return None
    return delivery.issue.number


def status_vote(spec: ReviewSpec, payload: Mapping[str, Any]) -> tuple[str, OtherVote] | None:
    """Another CI's verdict from a ``status`` delivery: (commit sha, vote), or None for our own
    context, a context not in ``ci_accounts``, or a state that is no verdict."""
    delivery = parse(StatusDelivery, payload, "status")
    if not _ours(spec, delivery.repository):
        return None
    context, state = delivery.context, delivery.state
    if context == github_settings(spec).context or (
        spec.ci_accounts and context not in spec.ci_accounts
    ):
        return None
    if state not in STATUS_VALUES:
        return None
    return delivery.sha, OtherVote(account=context, label="status", value=STATUS_VALUES[state])


def check_run_vote(spec: ReviewSpec, payload: Mapping[str, Any]) -> tuple[str, OtherVote] | None:
    """Another CI's verdict from a ``check_run`` delivery: (commit sha, vote), or None for our
    own check runs (named as our context), a name not in ``ci_accounts``, a check run not
    completed or a conclusion that is no verdict."""
    delivery = parse(CheckRunDelivery, payload, "check_run")
    check = delivery.check_run
    if not _ours(spec, delivery.repository) or delivery.action != "completed":
        return None
    ours = github_settings(spec).context
    if check.name == ours or (spec.ci_accounts and check.name not in spec.ci_accounts):
        return None
    value = CONCLUSION_VALUES.get(check.conclusion or "")
    if value is None:
        return None
    return check.head_sha, OtherVote(account=check.name, label="check_run", value=value)
