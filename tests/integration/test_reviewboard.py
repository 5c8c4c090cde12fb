"""The review loop against a real Review Board server (tests/reviewboard.py): a person posts
review requests with diffs through its Web API, `labgate review run --once` tests each latest
diff (applied onto its base commit) and posts one status update per run, with the full message
in a review; a second diff, a recheck, a broken lab (an error, retried) and a diff that does not
apply (the patch's failure, once); runs a killed controller queued get `pending` when the next
one starts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from labgate.config import load_lab
from labgate.review.loop import ReviewLoop, queue_event
from labgate.review.reviewboard.connector import ReviewBoardConnector
from labgate.store import Store
from labs import labgate
from reviewboard import (
    TOKEN_ENV,
    WEB_URL,
    ReviewBoard,
    diff_of,
    ours,
    reviewboard_lab,
    session_server,
)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> ReviewBoard:
    return session_server(request)


@pytest.fixture
def labgate_env(server: ReviewBoard) -> dict[str, str]:
    """The environment of labgate's commands: an API token of a user `labgate-<n>` of its own."""
    user = f"labgate-{os.getpid()}-{len(server.person().call('GET', '/api/users/')['users'])}"
    token = server.api_token(user, server.add_user(user))
    return {**os.environ, TOKEN_ENV: token}


def review_run(lab_dir: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [*labgate(lab_dir, "review", "run", "--once"), "--json"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)
    assert isinstance(runs, list)
    return runs


def flight(lab_dir: Path, flight_id: int) -> dict[str, Any]:
    shown = subprocess.run(
        [*labgate(lab_dir, "flight", "show", str(flight_id)), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = json.loads(shown.stdout)
    assert isinstance(found, dict)
    return found


def test_each_latest_diff_gets_one_status_update(
    tmp_path: Path, server: ReviewBoard, labgate_env: dict[str, str]
) -> None:
    repository = f"xen-{tmp_path.name}"
    lab_dir, repo = reviewboard_lab(tmp_path / "lab", server, repository)
    person = server.person()
    base = repo.rev("master")
    failing = person.post_review_request(
        repository, diff_of(repo, {"result": "fail\n"}), base, summary="make it fail"
    )
    passing = person.post_review_request(
        repository, diff_of(repo, {"README": "xen, documented\n"}), base, summary="docs"
    )

    runs = review_run(lab_dir, labgate_env)
    assert [(r["change"], r["patchset"], r["state"], r["vote"]) for r in runs] == [
        (str(failing), "1", "voted", -1),
        (str(passing), "1", "voted", 1),
    ]
    [bad] = ours(person, failing)
    [good] = ours(person, passing)
    assert (bad["state"], good["state"]) == ("done-failure", "done-success")
    assert bad["summary"].startswith("Verified-1: regression in test")
    assert bad["url"] == f"{WEB_URL}/flights/{runs[0]['flight_id']}"
    assert bad["description"].startswith("Disabled tests")
    assert "doc / *: no sphinx on the hosts" in bad["description"]
    assert "change" not in bad["links"]  # the request as first published: its first diff
    [message] = [
        r for r in person.reviews(failing) if f"labgate run {runs[0]['id']}" in r["body_top"]
    ]
    assert bad["links"]["review"]["href"].endswith(f"/reviews/{message['id']}/")
    assert "test: fail" in message["body_top"] and "no sphinx on the hosts" in message["body_top"]

    # the flight tested the diff applied onto the base commit, against a baseline made first
    tested = flight(lab_dir, runs[0]["flight_id"])
    assert tested["blessing"] == "review"
    commit = tested["revisions"]["xen"]
    mirror = next((lab_dir / "mirrors").glob("xen*.git"))
    show = ["git", "--git-dir", str(mirror), "show", "-s", "--format=%P %s", commit]
    assert subprocess.run(show, capture_output=True, text=True, check=True).stdout.split(
        " ", 1
    ) == [base, "make it fail\n"]
    # pushed to the tree's URL, where a worker's mirror on another machine fetches it from
    ref = f"refs/labgate/reviewboard/rb/{failing}/1"
    remote = ["git", "ls-remote", str(repo.path), ref]
    assert subprocess.run(remote, capture_output=True, text=True, check=True).stdout == (
        f"{commit}\t{ref}\n"
    )
    listing = subprocess.run(
        [*labgate(lab_dir, "flight", "list"), "--json"], capture_output=True, text=True, check=True
    )
    blessings = sorted(f["blessing"] for f in json.loads(listing.stdout))
    assert blessings == ["real", "review", "review"]

    # nothing new: nothing tested, nothing posted
    assert review_run(lab_dir, labgate_env) == []

    # a second diff on the failing request: tested, with a status update of its own
    person.post_diff(failing, diff_of(repo, {"README": "xen, fixed\n"}), base)
    [second] = review_run(lab_dir, labgate_env)
    assert (second["change"], second["patchset"], second["vote"]) == (str(failing), "2", 1)
    first_again, newer = sorted(ours(person, failing), key=lambda u: u["id"])
    assert first_again["id"] == bad["id"] and first_again["state"] == "done-failure"
    assert newer["state"] == "done-success"
    assert newer["links"]["change"]["href"].endswith(f"/review-requests/{failing}/changes/1/")

    # a recheck review: tested again once, however often the loop polls
    person.review(passing, "recheck")
    [again] = review_run(lab_dir, labgate_env)
    assert (again["change"], again["kind"], again["attempt"]) == (str(passing), "recheck", 2)
    assert review_run(lab_dir, labgate_env) == []
    assert [u["state"] for u in ours(person, passing)] == ["done-success", "done-success"]


def test_a_broken_lab_is_an_error_and_retried_a_diff_not_applying_a_failure(
    tmp_path: Path, server: ReviewBoard, labgate_env: dict[str, str]
) -> None:
    repository = f"xen-{tmp_path.name}"
    lab_dir, repo = reviewboard_lab(tmp_path / "lab", server, repository, retries=1)
    person = server.person()
    base = repo.rev("master")
    broken = person.post_review_request(
        repository, diff_of(repo, {"result": "broken\n"}), base, summary="breaks the host"
    )
    # made against a README the tree never had: Review Board takes it, git cannot apply it
    other = diff_of(repo, {"README": "xen 2\n"}).replace("\n-xen\n", "\n-not xen\n")
    stale = person.post_review_request(repository, other, None, summary="another README")
    runs = review_run(lab_dir, labgate_env)
    by_change: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_change.setdefault(run["change"], []).append(run)
    assert [(r["attempt"], r["vote"], r["retest"]) for r in by_change[str(broken)]] == [
        (1, 0, True),
        (2, 0, False),
    ]
    updates = ours(person, broken)
    assert [u["state"] for u in updates] == ["error", "error"]
    assert "will retry" in updates[0]["summary"] and "gave up" in updates[1]["summary"]
    # the patch's failure, not the lab's: -1 once, naming the hunk, never retried
    [not_applied] = by_change[str(stale)]
    assert (not_applied["vote"], not_applied["retest"]) == (-1, False)
    [update] = ours(person, stale)
    assert update["state"] == "done-failure"
    assert update["summary"] == (
        f"Verified-1: the patch does not apply: README: the hunk at line 1 does not match "
        f"(on {repo.rev('master')[:12]} of xen)"
    )


def test_runs_queued_but_never_said_so_get_pending_at_the_start(
    tmp_path: Path,
    server: ReviewBoard,
    labgate_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repository = f"xen-{tmp_path.name}"
    lab_dir, repo = reviewboard_lab(tmp_path / "lab", server, repository)
    monkeypatch.setenv(TOKEN_ENV, labgate_env[TOKEN_ENV])
    person = server.person()
    base = repo.rev("master")
    silent, posted = (
        person.post_review_request(
            repository, diff_of(repo, {"README": f"{n}\n"}), base, summary=f"request {n}"
        )
        for n in (1, 2)
    )
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:

        async def scenario() -> None:
            connector = ReviewBoardConnector(lab.reviews[0])
            # queued by a controller killed before it said so, and by one killed after it
            # posted the status update but before it stored its id
            for event in await connector.reconcile():
                queue_event(store, event)
            [_, second] = store.review.runs("rb")
            await connector.queued(second)
            loop = ReviewLoop(lab, store, {"rb": connector})
            await asyncio.gather(*loop.acknowledge_queued())

        asyncio.run(scenario())
        runs = store.review.runs("rb")
    for rr, run in zip((silent, posted), runs, strict=True):
        [update] = ours(person, rr)  # one each: the second one found, not doubled
        assert (update["state"], update["summary"]) == ("pending", "queued: attempt 1")
        assert run.report_id == str(update["id"])


def test_listings_ask_for_a_few_fields_and_follow_every_page(
    tmp_path: Path,
    server: ReviewBoard,
    labgate_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repository = f"xen-{tmp_path.name}"
    lab_dir, repo = reviewboard_lab(tmp_path / "lab", server, repository)
    person = server.person()
    base = repo.rev("master")
    diffs = [diff_of(repo, {f"notes/{n}": f"{n}\n"}) for n in range(3)]
    posted = [person.post_review_request(repository, d, base, summary="a change") for d in diffs]
    person.review(posted[0], "recheck")
    person.close(posted[1], "discarded")
    monkeypatch.setenv(TOKEN_ENV, labgate_env[TOKEN_ENV])
    monkeypatch.setattr("labgate.review.reviewboard.api.PAGE", 1)  # a page per item
    lab = load_lab(lab_dir)
    [spec] = lab.reviews
    connector = ReviewBoardConnector(spec)

    async def listed() -> tuple[list[Any], list[Any]]:
        events = await connector.reconcile()
        with Store.open(lab.database_url) as store:
            runs = [run for e in events if (run := store.review.enqueue(e)) is not None]
            person.close(posted[2], "submitted")  # while its run is queued
            return events, await connector.closed_changes(runs)

    events, closed = asyncio.run(listed())
    assert [(e.kind, e.change, e.patchset) for e in events] == [
        ("patchset", str(posted[0]), "1"),
        ("patchset", str(posted[2]), "1"),
        ("recheck", str(posted[0]), "1"),
    ]
    assert events[0].url and events[0].author  # the fields and links asked for
    assert [(e.kind, e.change, e.closed_as) for e in closed] == [
        ("closed", str(posted[2]), "submitted")
    ]
