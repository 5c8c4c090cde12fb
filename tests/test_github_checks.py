"""GitHub results as check runs (`report = ["check_run"]`, or with statuses): `labgate review run`
against the fake of GitHub's REST API (tests/fakegithub.py, extended with the check runs
endpoints as GitHub documents them): in_progress when testing starts, then completed with the
conclusion and the whole message; a report repeated after a crash completes the same check run;
a pull request closed while its run was in flight (and the controller down) gets no vote, its
check run completed `cancelled`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from fakegithub import FakeGitHub, ServerThread, pull_request
from labgate.model import FlightState
from labgate.review.base import Vote
from labgate.review.github.connector import GitHubConnector
from labgate.store import Store
from labgate.store.review import ReviewQueue
from labs import labgate
from reviewlab import PROJECT, TOKEN_ENV, WEB_URL, make_review_lab

TOKEN = "ghs_installation_token_of_the_app"


def run_once(lab_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, TOKEN_ENV: TOKEN}
    done = subprocess.run(
        labgate(lab_dir, "review", "run", "--once"),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_check_runs_go_in_progress_then_completed_beside_statuses(tmp_path: Path) -> None:
    github = FakeGitHub(TOKEN)
    with ServerThread(github.app()) as api:
        extra = 'report = ["status", "check_run"]\n'
        rl = make_review_lab(tmp_path, f"sqlite:///{tmp_path}/lab.db", server=api.url, extra=extra)
        good, broken = rl.propose(1, "pass"), rl.propose(2, "broken")
        with Store.open(rl.lab.database_url) as store:
            queue = ReviewQueue(store)
            first = queue.enqueue(rl.event(1, good))
            second = queue.enqueue(rl.event(2, broken))
        assert first is not None and second is not None
        run_once(rl.path)
    by_run = {c["external_id"]: c for c in github.check_runs}
    passed, lab_failed = by_run[str(first.id)], by_run[str(second.id)]
    assert (passed["name"], passed["head_sha"], passed["status"], passed["conclusion"]) == (
        "labgate",
        good,
        "completed",
        "success",
    )
    assert (lab_failed["head_sha"], lab_failed["conclusion"]) == (broken, "neutral")
    assert re.fullmatch(re.escape(WEB_URL) + r"flights/\d+", passed["details_url"])
    assert passed["started_at"] and passed["completed_at"]
    assert passed["output"]["title"].startswith("Verified+1: nothing regressed")
    summary = passed["output"]["summary"]
    assert summary.startswith("```\nlabgate: Verified+1") and f"(labgate run {first.id}," in summary
    # created in_progress when testing began, then found again by external_id and completed
    # (the runs are worked on in order: the first four check run calls are the first run's)
    repo = f"/repos/{PROJECT}"
    calls = [(m, p) for m, p in github.requests if "check-runs" in p]
    assert calls[:4] == [
        ("GET", f"{repo}/commits/{good}/check-runs"),
        ("POST", f"{repo}/check-runs"),
        ("GET", f"{repo}/commits/{good}/check-runs"),
        ("PATCH", f"{repo}/check-runs/{passed['id']}"),
    ]
    assert [s["state"] for s in github.statuses if s["sha"] == good] == ["pending", "success"]
    # the lab's failure is retried: each attempt has a check run of its own
    assert len([c for c in github.check_runs if c["head_sha"] == broken]) == 3


def test_check_runs_alone_and_a_repeated_report_is_one_check_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    github = FakeGitHub(TOKEN)
    with ServerThread(github.app()) as api:
        extra = 'report = ["check_run"]\n'
        rl = make_review_lab(tmp_path, f"sqlite:///{tmp_path}/lab.db", server=api.url, extra=extra)
        sha = rl.propose(3, "pass")
        with Store.open(rl.lab.database_url) as store:
            run = ReviewQueue(store).enqueue(rl.event(3, sha))
        assert run is not None
        [spec] = rl.lab.reviews
        connector = GitHubConnector(spec)
        vote = Vote(-1, "labgate: Verified-1: regression in test/check\n", summary="regression")

        async def twice() -> bool:
            await connector.report(run, vote)
            await connector.report(run, vote)  # after a crash between posting and recording
            return await connector.reported(run)

        assert asyncio.run(twice()) is False  # posting again is harmless
    assert github.statuses == []
    [check] = github.check_runs
    assert (check["external_id"], check["conclusion"], check["output"]["title"]) == (
        str(run.id),
        "failure",
        "regression",
    )


@pytest.mark.timeout(120)
def test_a_pull_request_closed_while_its_run_is_in_flight_gets_a_cancelled_check_run(
    tmp_path: Path,
) -> None:
    started, hold = tmp_path / "started.fifo", tmp_path / "hold.fifo"
    os.mkfifo(started)
    os.mkfifo(hold)
    wait = f"echo started > {started}; cat {hold}; exit 0"  # held until the end of the test
    extra = (
        'report = ["check_run"]\n'
        f'[[job]]\nname = "slow"\n[[job.step]]\nname = "wait"\nrun = {json.dumps(wait)}\n'
    )
    github = FakeGitHub(TOKEN)
    env = {**os.environ, TOKEN_ENV: TOKEN}
    with ServerThread(github.app()) as api:
        rl = make_review_lab(tmp_path, f"sqlite:///{tmp_path}/lab.db", server=api.url, extra=extra)
        sha = rl.propose(1, "pass")
        github.pulls[1] = pull_request(1, sha, repo=PROJECT)
        with Store.open(rl.lab.database_url) as store:
            ReviewQueue(store).enqueue(rl.event(1, sha))
        controller = subprocess.Popen(
            labgate(rl.path, "review", "run"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert started.read_text() == "started\n"  # blocks until the step runs
            [check] = github.check_runs
            assert check["status"] == "in_progress"
        finally:
            controller.kill()
            controller.wait(timeout=30)
        github.pulls[1]["state"] = "closed"  # closed while no controller listens
        try:
            again = run_once(rl.path)
        finally:
            with contextlib.suppress(OSError):  # a step left running would wait for ever
                os.close(os.open(hold, os.O_WRONLY | os.O_NONBLOCK))
        with Store.open(rl.lab.database_url) as store:
            [run] = ReviewQueue(store).runs()
            assert run.flight_id is not None
            flight = store.get_flight(run.flight_id)
    assert "run 1: said cancelled: the change was closed" in again.stderr
    assert (run.state, run.vote, run.vote_state) == ("superseded", None, "withdrawn")
    assert flight.state is FlightState.CANCELLED
    [check] = github.check_runs  # the same check run, completed without a vote
    assert (check["status"], check["conclusion"]) == ("completed", "cancelled")
    assert check["output"]["title"] == "cancelled: the change was closed before the run finished"
    assert github.statuses == [] and github.comments == {}
