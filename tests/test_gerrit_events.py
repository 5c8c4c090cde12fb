"""Gerrit's side without a Gerrit server (none can be had here): parsing `gerrit stream-events`
lines and building/reading REST requests, against the JSON shapes Gerrit documents
(cmd-stream-events.txt, json.txt, rest-api-changes.txt). Nothing here talks to a server: the
Gerrit connector stays untested against a real one."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from labgate.model import ReviewSpec
from labgate.review.base import ChangeEvent, OtherVote, ReviewRun, Vote
from labgate.review.gerrit.events import StreamError, parse_event
from labgate.review.gerrit.rest import (
    TAG,
    RestError,
    has_marker,
    messages_request,
    open_changes,
    open_changes_request,
    read_json,
    review_request,
)
from labgate.review.gerrit.settings import GerritSettings
from labgate.store import Store
from labgate.store.review import ReviewQueue, percentile

REV = "3f2a9c1d" * 5
SPEC = ReviewSpec(
    name="xen-gerrit",
    driver="gerrit",
    server="https://review.example.org",
    project="xen",
    branch="xen-unstable",
    target="master",
    settings=GerritSettings(
        user="labgate-ci",
        password_env="GERRIT_HTTP_PASSWORD",
        ssh="labgate-ci@review.example.org:29418",
    ),
)
ANN = {"name": "Ann Author", "email": "ann@example.org", "username": "ann"}


def change(number: Any = 1234, project: str = "xen", branch: str = "master") -> dict[str, Any]:
    return {
        "project": project,
        "branch": branch,
        "id": "I8473b95934b5732ac55d26311a706c9c2bde9940",
        "number": number,
        "subject": "x86/mm: fix a leak",
        "owner": ANN,
        "url": f"https://review.example.org/c/{project}/+/{number}",
        "commitMessage": "x86/mm: fix a leak\n\nChange-Id: I8473b959\n",
        "createdOn": 1700000000,
        "status": "NEW",
    }


def patch_set(number: Any = 2, ref: str = "refs/changes/34/1234/2") -> dict[str, Any]:
    return {
        "number": number,
        "revision": REV,
        "parents": ["1" * 40],
        "ref": ref,
        "uploader": ANN,
        "createdOn": 1700000100,
        "author": ANN,
        "kind": "REWORK",
        "sizeInsertions": 4,
        "sizeDeletions": -2,
    }


def created(**overrides: Any) -> str:
    event = {
        "type": "patchset-created",
        "change": change(),
        "patchSet": patch_set(),
        "uploader": ANN,
        "eventCreatedOn": 1700000100,
        **overrides,
    }
    return json.dumps(event)


def comment(
    text: str, author: dict[str, str], approvals: list[dict[str, str]], **overrides: Any
) -> str:
    return json.dumps(
        {
            "type": "comment-added",
            "change": change(),
            "patchSet": patch_set(),
            "author": author,
            "approvals": approvals,
            "comment": text,
            "eventCreatedOn": 1700000200,
            **overrides,
        }
    )


OTHER_CI = {"name": "Other CI", "username": "other-ci"}
VERIFIED_MINUS = [
    {"type": "Verified", "description": "Verified", "value": "-1", "oldValue": "0"},
    {"type": "Code-Review", "description": "Code-Review", "value": "0"},
]


def test_patchset_created() -> None:
    assert parse_event(SPEC, created()) == ChangeEvent(
        kind="patchset",
        source="xen-gerrit",
        project="xen",
        change="1234",
        patchset="2",
        ref="refs/changes/34/1234/2",
        revision=REV,
        branch="master",
        url="https://review.example.org/c/xen/+/1234",
        author="ann",
        created=datetime.fromtimestamp(1700000100, UTC),
    )


@pytest.mark.parametrize(
    ("kind", "closed_as"), [("change-merged", "merged"), ("change-abandoned", "abandoned")]
)
def test_a_merged_or_abandoned_change_is_closed(kind: str, closed_as: str) -> None:
    event = parse_event(SPEC, created(type=kind))
    assert event is not None
    assert (event.kind, event.change, event.closed_as) == ("closed", "1234", closed_as)


def test_older_gerrit_sends_numbers_as_strings() -> None:
    line = created(change=change(number="1234"), patchSet=patch_set(number="2"))
    event = parse_event(SPEC, line)
    assert event is not None and (event.change, event.patchset) == ("1234", "2")


@pytest.mark.parametrize(
    "line",
    [
        created(change=change(project="linux")),
        created(change=change(branch="stable-4.19")),
        created(type="change-merged", change=change(project="linux")),
        json.dumps({"type": "ref-updated", "refUpdate": {"refName": "refs/heads/master"}}),
        comment("Patch Set 2: Code-Review+1\n\nLooks good", ANN, []),
        comment("Patch Set 2:\n\nplease recheck this", ANN, []),
        comment("Patch Set 2: Code-Review+2", OTHER_CI, [VERIFIED_MINUS[1]]),
    ],
)
def test_events_that_ask_nothing(line: str) -> None:
    assert parse_event(SPEC, line) is None


@pytest.mark.parametrize("text", ["Patch Set 2:\n\nrecheck", "Patch Set 2:\n\nrecheck labgate"])
def test_recheck_comments(text: str) -> None:
    event = parse_event(SPEC, comment(text, ANN, []))
    assert event is not None and (event.kind, event.patchset, event.votes) == ("recheck", "2", ())


def test_a_configured_recheck_pattern() -> None:
    spec = replace(SPEC, recheck=r"^run-labgate$")
    assert parse_event(spec, comment("Patch Set 2:\n\nrecheck", ANN, [])) is None
    assert parse_event(spec, comment("Patch Set 2:\n\nrun-labgate", ANN, [])) is not None


def test_another_ci_vote_is_carried_for_discrepancies() -> None:
    line = comment("Patch Set 2: Verified-1\n\nBuild failed", OTHER_CI, VERIFIED_MINUS)
    event = parse_event(SPEC, line)
    assert event is not None
    assert (event.kind, event.votes) == ("patchset", (OtherVote("other-ci", "Verified", -1),))
    only_third = replace(SPEC, ci_accounts=("third-ci",))
    assert parse_event(only_third, line) is None


def test_our_own_comments_are_ignored() -> None:
    ours = {"name": "labgate", "username": "labgate-ci"}
    line = comment("Patch Set 2: Verified+1\n\nrecheck", ours, VERIFIED_MINUS)
    assert parse_event(SPEC, line) is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        ("[]", "no type"),
        (created(patchSet={**patch_set(), "revision": None}), "patchSet.revision"),
        (created(patchSet=patch_set(ref="refs/heads/master")), "not a refs/changes/"),
        (created(change=change(number="12a")), "change.number"),
        (created(patchSet={**patch_set(), "revision": "abc"}), "not a commit sha"),
    ],
)
def test_malformed_lines(line: str, message: str) -> None:
    with pytest.raises(StreamError, match=message):
        parse_event(SPEC, line)


def test_parsed_events_feed_the_queue_and_discrepancies(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/lab.db") as store:
        queue = ReviewQueue(store)
        first = parse_event(SPEC, created())
        assert first is not None
        run = queue.enqueue(first)
        assert run is not None
        queue.record_intent(run.id, Vote(1, "labgate: Verified+1"))
        queue.mark_voted(run.id)
        vote = parse_event(SPEC, comment("Patch Set 2: Verified-1", OTHER_CI, VERIFIED_MINUS))
        assert vote is not None and queue.enqueue(vote) is None  # recorded, not queued again
        [found] = queue.discrepancies()
    assert (found.change, found.patchset, found.labgate, found.account, found.value) == (
        "1234",
        "2",
        1,
        "other-ci",
        -1,
    )


def test_ready_to_vote_figures_from_parsed_events(database_url: str) -> None:
    """Four patch sets made ten minutes ago: one agreed on, one disputed, one the lab broke
    twice before a result, one no other CI judged; read back on each store."""
    made = int(time.time()) - 600
    with Store.open(database_url) as store:
        queue = ReviewQueue(store)

        def tested(number: int, votes: list[int]) -> str:
            sha = f"{number:08x}" * 5
            ps = {**patch_set(1, f"refs/changes/{number % 100:02d}/{number}/1"), "revision": sha}
            ps["createdOn"] = made
            event = parse_event(SPEC, created(change=change(number), patchSet=ps))
            assert event is not None and event.created is not None
            run = queue.enqueue(event)
            for i, value in enumerate(votes):
                assert run is not None
                retry = i < len(votes) - 1
                queue.record_intent(run.id, Vote(value, "labgate", retest=retry))  # type: ignore[arg-type]
                run = queue.mark_voted(run.id, retry=run.event() if retry else None)
            return sha

        def other_ci(number: int, sha: str, value: str) -> None:
            ps = {**patch_set(1, f"refs/changes/{number % 100:02d}/{number}/1"), "revision": sha}
            approval = [{"type": "Verified", "description": "Verified", "value": value}]
            line = comment("Patch Set 1:", OTHER_CI, approval, change=change(number), patchSet=ps)
            event = parse_event(SPEC, line)
            assert event is not None and queue.enqueue(event) is None

        other_ci(1, tested(1, [1]), "1")  # agreed
        other_ci(2, tested(2, [1]), "-1")  # disputed
        other_ci(3, tested(3, [0, 0, -1]), "-1")  # broken twice, then agreed
        tested(4, [1])  # nobody else judged it
        [ready] = queue.readiness()
        [last_two] = queue.readiness(last=2)
    assert (ready.connector, ready.target, ready.patchsets) == ("xen-gerrit", "master", 4)
    assert (ready.compared, ready.agreed, ready.agreement) == (3, 2, 2 / 3)
    assert (ready.runs, ready.broken) == (6, 2)
    assert ready.to_result_p50_s is not None and ready.to_result_p95_s is not None
    assert 600 <= ready.to_result_p50_s <= ready.to_result_p95_s < 900
    assert (last_two.patchsets, last_two.compared, last_two.agreed, last_two.runs) == (2, 1, 1, 4)


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert (percentile(values, 0.5), percentile(values, 0.95)) == (10.0, 19.0)


# --- REST -----------------------------------------------------------------------------------


def run(project: str = "xen") -> ReviewRun:
    return ReviewRun(
        id=5, connector="xen-gerrit", change="1234", patchset="2", attempt=1, kind="patchset",
        project=project, ref="refs/changes/34/1234/2", revision=REV, target="master", url=None,
        state="running", flight_id=9, vote=None, voting=None, message=None, vote_state=None,
        retest=False, reason=None, created="", updated="",
    )  # fmt: skip


def test_responses_lose_their_xssi_prefix() -> None:
    assert read_json(')]}\'\n{"_number": 1234}') == {"_number": 1234}
    assert read_json("[]") == []
    with pytest.raises(RestError):
        read_json(")]}'\n<html>Sign in</html>")


def test_a_vote_is_a_review_input() -> None:
    request = review_request(run("xen/tools"), Vote(-1, "labgate: Verified-1: regression"))
    assert (request.method, request.path) == (
        "POST",
        f"/a/changes/xen%2Ftools~1234/revisions/{REV}/review",
    )
    assert request.body == {
        "message": "labgate: Verified-1: regression",
        "labels": {"Verified": -1},
        "tag": "autogenerated:labgate",
    }
    comment_only = review_request(run(), Vote(1, "would give +1", voting=False))
    assert comment_only.body == {"message": "would give +1", "tag": TAG}


def test_finding_a_run_in_the_change_messages() -> None:
    assert messages_request(run()).path == "/a/changes/xen~1234/messages"
    messages = [
        {"id": "a", "message": "Patch Set 2: Code-Review+1", "_revision_number": 2},
        {"id": "b", "tag": TAG, "message": "labgate: ...\n(labgate run 4, attempt 1)"},
    ]
    assert not has_marker(messages, run())
    messages.append({"id": "c", "tag": TAG, "message": "labgate: ...\n(labgate run 5, attempt 1)"})
    assert has_marker(messages, run())
    with pytest.raises(RestError):
        has_marker({"not": "a list"}, run())


def test_reconcile_query_and_change_infos() -> None:
    request = open_changes_request(SPEC)
    assert request.path == (
        "/a/changes/?q=status%3Aopen+project%3Axen+branch%3Amaster"
        "&o=CURRENT_REVISION&o=DETAILED_LABELS&o=DETAILED_ACCOUNTS"
    )
    infos = [
        {
            "id": "xen~master~I8473",
            "project": "xen",
            "branch": "master",
            "_number": 1234,
            "status": "NEW",
            "current_revision": REV,
            "revisions": {
                REV: {
                    "kind": "REWORK",
                    "_number": 2,
                    "ref": "refs/changes/34/1234/2",
                    "created": "2013-02-01 09:59:32.126000000",
                }
            },
            "labels": {
                "Verified": {
                    "all": [
                        {"value": -1, "_account_id": 1, "username": "other-ci"},
                        {"value": 1, "_account_id": 2, "username": "labgate-ci"},  # ours
                        {
                            "value": 1,
                            "_account_id": 3,
                            "username": "third-ci",
                        },  # not in ci_accounts
                        {"value": 0, "_account_id": 4, "username": "other-ci"},
                        {"_account_id": 5, "username": "other-ci"},  # a reviewer, no vote
                    ],
                    "values": {"-1": "Fails", " 0": "No score", "+1": "Verified"},
                }
            },
        }
    ]
    [event] = open_changes(replace(SPEC, ci_accounts=("other-ci",)), infos)
    assert (event.change, event.patchset, event.ref, event.revision) == (
        "1234",
        "2",
        "refs/changes/34/1234/2",
        REV,
    )
    assert event.votes == (OtherVote("other-ci", "Verified", -1),)
    assert event.created == datetime(2013, 2, 1, 9, 59, 32, 126000, UTC)
    with pytest.raises(RestError, match="CURRENT_REVISION"):
        open_changes(SPEC, [{"_number": 1}])
