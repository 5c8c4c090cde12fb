"""The GitHub side of the review loop over real HTTP: the webhook receiver served by uvicorn on a
loopback port and by `labgate serve`, real signed requests (bad and missing signatures,
replays, oversized and malformed bodies), and results posted to a fake of GitHub's REST API
(tests/fakegithub.py) that checks the token and the documented request shapes.

GitHub itself cannot be reached from here; these tests are what stands for it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from fakegithub import FakeGitHub, ServerThread, pull_request
from labgate.flight import plan_flight
from labgate.flights import Flights
from labgate.model import Blessing
from labgate.review.github.connector import GitHubConnector
from labgate.review.github.webhook import github_routes
from labgate.review.loop import ReviewLoop
from labgate.store import Store, schema
from labgate.store.review import ReviewQueue
from labs import labgate as command_line
from reviewlab import PROJECT, SECRET_ENV, TOKEN_ENV, WEB_URL, ReviewLab, make_review_lab

SECRET = "It's a Secret to Everybody"
TOKEN = "ghp_fake_token_for_tests"
REPOSITORY = {"full_name": PROJECT, "name": "xen", "owner": {"login": "acme"}}


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def pr_payload(number: int, sha: str, action: str = "opened") -> dict[str, Any]:
    return {
        "action": action,
        "number": number,
        "pull_request": pull_request(number, sha, repo=PROJECT),
        "repository": REPOSITORY,
        "sender": {"login": "contributor"},
    }


def comment_payload(number: int, body: str, *, on_pr: bool = True) -> dict[str, Any]:
    issue: dict[str, Any] = {"number": number, "title": f"Change {number}"}
    if on_pr:
        issue["pull_request"] = {"url": f"https://api.github.com/repos/{PROJECT}/pulls/{number}"}
    return {
        "action": "created",
        "issue": issue,
        "comment": {"id": 7, "body": body, "user": {"login": "maintainer"}},
        "repository": REPOSITORY,
        "sender": {"login": "maintainer"},
    }


def status_payload(sha: str, context: str, state: str) -> dict[str, Any]:
    return {
        "id": 1,
        "sha": sha,
        "name": PROJECT,
        "target_url": "https://ci.example.org/1",
        "context": context,
        "description": "done",
        "state": state,
        "commit": {"sha": sha},
        "branches": [],
        "repository": REPOSITORY,
        "sender": {"login": "other-ci-bot"},
    }


def deliver(
    url: str,
    event: str,
    payload: Any = None,
    *,
    body: bytes | None = None,
    delivery: str | None = None,
    signature: str | None = "sign",
    content_type: str = "application/json",
) -> httpx.Response:
    """POST a delivery as GitHub sends it: the raw JSON body, signed unless told otherwise."""
    raw = body if body is not None else json.dumps(payload).encode()
    headers = {
        "Content-Type": content_type,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "User-Agent": "GitHub-Hookshot/test",
    }
    if signature == "sign":
        headers["X-Hub-Signature-256"] = sign(raw)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return httpx.post(url, content=raw, headers=headers, timeout=30)


@dataclass
class Hook:
    rl: ReviewLab
    store: Store
    github: FakeGitHub
    url: str

    def runs(self) -> list[Any]:
        return ReviewQueue(self.store).runs()


@contextlib.contextmanager
def receiving(tmp_path: Path, database_url: str, api: ASGIApp | None = None) -> Iterator[Hook]:
    """The webhook receiver of a review lab, served; GitHub's API is the fake unless ``api``."""
    github = FakeGitHub(TOKEN)
    with ServerThread(api or github.app()) as server:
        rl = make_review_lab(tmp_path, database_url, server=server.url)
        with Store.open(rl.lab.database_url) as store:
            app = Starlette(routes=github_routes(rl.lab, store, max_body=64 * 1024))
            with ServerThread(app) as receiver:
                yield Hook(rl, store, github, f"{receiver.url}/review/github/gh")


@pytest.fixture
def hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with receiving(tmp_path, f"sqlite:///{tmp_path}/lab.db") as made:
        yield made


# --- signatures, replays, sizes, shapes -----------------------------------------------------


def test_a_signed_pull_request_is_queued(hook: Hook) -> None:
    sha = hook.rl.propose(1, "pass")
    response = deliver(hook.url, "pull_request", pr_payload(1, sha))
    assert (response.status_code, response.json()) == (202, {"status": "queued"})
    [run] = hook.runs()
    assert (run.change, run.patchset, run.ref, run.revision, run.target, run.kind) == (
        "1",
        sha,
        "refs/pull/1/head",
        sha,
        "master",
        "patchset",
    )
    assert run.url == f"https://github.com/{PROJECT}/pull/1"
    again = deliver(hook.url, "pull_request", pr_payload(1, sha, "reopened"))
    assert (again.status_code, again.json()["status"]) == (202, "already queued")


def test_ping_and_unknown_events(hook: Hook) -> None:
    assert deliver(hook.url, "ping", {"zen": "Keep it logically awesome."}).json() == {
        "status": "pong"
    }
    response = deliver(hook.url, "push", {"ref": "refs/heads/master", "repository": REPOSITORY})
    assert (response.status_code, response.json()) == (202, {"status": "ignored"})
    labeled = deliver(hook.url, "pull_request", pr_payload(1, "a" * 40, "labeled"))
    assert (labeled.status_code, labeled.json()) == (202, {"status": "ignored"})
    assert hook.runs() == []


@pytest.mark.parametrize(
    "signature",
    [None, "", "sha256=" + "0" * 64, "sha1=abc", "sign-with-another-secret", "sign-other-body"],
)
def test_bad_or_missing_signatures_are_refused_and_logged(
    hook: Hook, signature: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    sha = hook.rl.propose(1, "pass")
    body = json.dumps(pr_payload(1, sha)).encode()
    if signature == "sign-with-another-secret":
        signature = sign(body, "not the secret")
    elif signature == "sign-other-body":
        signature = sign(body + b" ")
    with caplog.at_level(logging.WARNING, logger="labgate.review.github"):
        response = deliver(hook.url, "pull_request", body=body, signature=signature, delivery="d1")
    assert response.status_code == 401
    assert hook.runs() == []
    assert any("refused GitHub delivery 'd1'" in r.getMessage() for r in caplog.records)
    # the refused delivery left no trace: GitHub's real one with that id is accepted
    assert deliver(hook.url, "pull_request", body=body, delivery="d1").status_code == 202


def test_a_replayed_delivery_is_ignored(hook: Hook) -> None:
    sha = hook.rl.propose(2, "pass")
    body = json.dumps(pr_payload(2, sha)).encode()
    first = deliver(hook.url, "pull_request", body=body, delivery="same-id")
    [run] = hook.runs()
    ReviewQueue(hook.store).finish(run.id, "voted", "tested")
    replay = deliver(hook.url, "pull_request", body=body, delivery="same-id")
    assert (first.status_code, replay.status_code) == (202, 200)
    assert replay.json() == {"status": "duplicate"}
    recheck = json.dumps(comment_payload(2, "recheck")).encode()
    assert deliver(hook.url, "issue_comment", body=recheck, delivery="c1").status_code == 202
    assert deliver(hook.url, "issue_comment", body=recheck, delivery="c1").status_code == 200
    assert [(r.attempt, r.kind) for r in hook.runs()] == [(1, "patchset"), (2, "recheck")]


def test_a_delivery_cut_short_before_it_was_recorded_is_handled_once_on_redelivery(
    hook: Hook,
) -> None:
    # the server was killed after queuing the run but before recording the delivery as seen
    sha = hook.rl.propose(4, "pass")
    body = json.dumps(pr_payload(4, sha)).encode()
    assert deliver(hook.url, "pull_request", body=body, delivery="cut").status_code == 202
    with hook.store.engine.begin() as conn:
        conn.execute(schema.review_delivery.delete())
    again = deliver(hook.url, "pull_request", body=body, delivery="cut")
    assert (again.status_code, again.json()) == (202, {"status": "already queued"})
    assert len(hook.runs()) == 1
    # once handled it is recorded: a third delivery is a replay
    assert deliver(hook.url, "pull_request", body=body, delivery="cut").json() == {
        "status": "duplicate"
    }


def test_oversized_bodies_are_refused_before_being_read(hook: Hook) -> None:
    big = b'{"pad": "' + b"x" * (65 * 1024) + b'"}'
    response = deliver(hook.url, "pull_request", body=big)
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for _ in range(100):
            yield b"x" * 1024

    chunked = httpx.post(
        hook.url,
        content=chunks(),
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": "big",
            "X-Hub-Signature-256": "sha256=" + "0" * 64,
        },
        timeout=30,
    )
    assert chunked.status_code == 413
    assert hook.runs() == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2, 3]", 400),
        (b"\xff\xfe", 400),
        (json.dumps({"action": "opened", "repository": REPOSITORY}).encode(), 400),
        (
            json.dumps(
                {**pr_payload(1, "a" * 40), "pull_request": {"number": "1", "head": {}}}
            ).encode(),
            400,
        ),
    ],
)
def test_malformed_payloads_are_refused(hook: Hook, body: bytes, status: int) -> None:
    assert deliver(hook.url, "pull_request", body=body).status_code == status
    assert hook.runs() == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"action": ["opened"]}, "pull_request: action: Input should be a valid string"),
        ({"number": 1, "pull_request": {"number": True}}, "pull_request.number"),
        ({"pull_request": {"number": int("9" * 251)}}, "pull_request.number"),
        ({"repository": {"full_name": 7}}, "repository.full_name"),
    ],
)
def test_a_payload_of_the_wrong_shape_says_what_is_wrong_and_is_not_seen(
    hook: Hook, change: dict[str, Any], field: str
) -> None:
    sha = hook.rl.propose(1, "pass")
    good = pr_payload(1, sha)
    bad = {**good, **change}
    if "pull_request" in change:
        bad["pull_request"] = {**good["pull_request"], **change["pull_request"]}
    refused = deliver(hook.url, "pull_request", bad, delivery="d-shape")
    assert refused.status_code == 400 and field in refused.json()["error"], refused.text
    assert hook.runs() == []
    # GitHub's redelivery (fixed, or once labgate is): handled, not a "duplicate"
    again = deliver(hook.url, "pull_request", good, delivery="d-shape")
    assert (again.status_code, again.json()) == (202, {"status": "queued"})


def test_long_delivery_ids_and_numbers_are_refused_on_each_store(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with receiving(tmp_path, database_url) as hook:
        sha = hook.rl.propose(1, "pass")
        long_id = deliver(hook.url, "pull_request", pr_payload(1, sha), delivery="d" * 300)
        assert long_id.status_code == 400 and "X-GitHub-Delivery" in long_id.json()["error"]
        big = pr_payload(1, sha)
        big["number"] = big["pull_request"]["number"] = int("9" * 251)
        too_big = deliver(hook.url, "pull_request", big)
        assert too_big.status_code == 400, too_big.text
        assert "pull_request.number" in too_big.json()["error"]
        comment = comment_payload(1, "recheck")
        comment["issue"]["number"] = int("9" * 251)
        assert deliver(hook.url, "issue_comment", comment).status_code == 400
        assert hook.runs() == []
        assert deliver(hook.url, "pull_request", pr_payload(1, sha)).status_code == 202


def test_an_api_answering_html_is_a_502_and_the_redelivery_is_handled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)

    async def portal(request: Request) -> HTMLResponse:
        return HTMLResponse("<html><body>Sign in to the proxy</body></html>")

    html = Starlette(routes=[Route("/{path:path}", portal)])
    with receiving(tmp_path, f"sqlite:///{tmp_path}/lab.db", api=html) as hook:
        body = json.dumps(comment_payload(3, "recheck")).encode()
        for _ in range(2):
            answer = deliver(hook.url, "issue_comment", body=body, delivery="c-html")
            assert answer.status_code == 502, answer.text
            assert "not JSON" in answer.json()["error"] and "Sign in" in answer.json()["error"]
        assert hook.runs() == []


def test_missing_headers_content_type_and_names(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps({"zen": "x"}).encode()
    no_event = httpx.post(
        hook.url,
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body)},
    )
    assert no_event.status_code == 400
    form = deliver(
        hook.url, "ping", body=b"payload=%7B%7D", content_type="application/x-www-form-urlencoded"
    )
    assert form.status_code == 415
    assert deliver(hook.url.replace("/gh", "/nope"), "ping", {"zen": "x"}).status_code == 404
    assert httpx.get(hook.url).status_code == 405
    monkeypatch.delenv(SECRET_ENV)
    assert deliver(hook.url, "ping", {"zen": "x"}).status_code == 503


# --- events ---------------------------------------------------------------------------------


def test_recheck_comments(hook: Hook) -> None:
    sha = hook.rl.propose(3, "pass")
    hook.github.pulls[3] = pull_request(3, sha, repo=PROJECT)
    for text in ("looks good", "please recheck", "recheck", "recheck labgate"):
        deliver(hook.url, "issue_comment", comment_payload(3, text))
    deliver(hook.url, "issue_comment", comment_payload(3, "recheck", on_pr=False))
    # labgate had not seen pull request 3: it asked GitHub for its head
    assert ("GET", f"/repos/{PROJECT}/pulls/3") in hook.github.requests
    [run] = hook.runs()
    assert (run.kind, run.change, run.revision, run.attempt) == ("recheck", "3", sha, 1)
    missing = deliver(hook.url, "issue_comment", comment_payload(99, "recheck"))
    assert missing.status_code == 502  # GitHub answered 404: said, and GitHub may redeliver


def test_closing_a_pull_request_drops_its_queued_run(hook: Hook) -> None:
    sha = hook.rl.propose(4, "pass")
    deliver(hook.url, "pull_request", pr_payload(4, sha))
    closed = deliver(hook.url, "pull_request", pr_payload(4, sha, "closed"))
    assert closed.json() == {"status": "closed"}
    assert [r.state for r in hook.runs()] == ["superseded"]


def test_other_ci_statuses_are_recorded(hook: Hook) -> None:
    sha = hook.rl.propose(5, "pass")
    deliver(hook.url, "pull_request", pr_payload(5, sha))
    for context, state in [("other-ci", "failure"), ("labgate", "success"), ("lint", "pending")]:
        deliver(hook.url, "status", status_payload(sha, context, state))
    votes = ReviewQueue(hook.store).votes()
    assert [(v["account"], v["value"], v["change"]) for v in votes] == [("other-ci", -1, "5")]


def check_run_payload(sha: str, name: str, conclusion: str | None) -> dict[str, Any]:
    """A ``check_run`` delivery as GitHub documents it (the fields labgate reads and a few)."""
    return {
        "action": "completed" if conclusion else "created",
        "check_run": {
            "id": 4,
            "head_sha": sha,
            "external_id": "",
            "name": name,
            "status": "completed" if conclusion else "in_progress",
            "conclusion": conclusion,
            "app": {"slug": name},
            "pull_requests": [],
        },
        "repository": REPOSITORY,
        "sender": {"login": "other-ci[bot]"},
    }


def test_other_ci_check_runs_are_recorded(hook: Hook) -> None:
    sha = hook.rl.propose(5, "pass")
    deliver(hook.url, "pull_request", pr_payload(5, sha))
    for name, conclusion in [
        ("other-ci", "success"),
        ("labgate", "failure"),  # ours, coming back
        ("lint", None),  # not completed
        ("docs", "neutral"),  # no verdict
    ]:
        answer = deliver(hook.url, "check_run", check_run_payload(sha, name, conclusion))
        assert answer.status_code == 202
    votes = ReviewQueue(hook.store).votes()
    assert [(v["account"], v["label"], v["value"]) for v in votes] == [("other-ci", "check_run", 1)]
    bad = check_run_payload(sha, "other-ci", "success")
    bad["check_run"]["head_sha"] = "main"
    refused = deliver(hook.url, "check_run", bad)
    assert refused.status_code == 400 and "check_run.head_sha" in refused.json()["error"]


def test_reconcile_queues_open_pull_requests_once(hook: Hook) -> None:
    sha, other = hook.rl.propose(8, "pass"), hook.rl.propose(9, "pass")
    hook.github.pulls[8] = pull_request(8, sha, repo=PROJECT)
    hook.github.pulls[9] = pull_request(9, other, repo=PROJECT, base="stable-4.19")
    loop = ReviewLoop(hook.rl.lab, hook.store, {"gh": GitHubConnector(hook.rl.lab.reviews[0])})
    asyncio.run(loop.listen(loop.connectors["gh"]))
    asyncio.run(loop.listen(loop.connectors["gh"]))  # a reconnect: nothing new
    assert [(r.change, r.revision) for r in hook.runs()] == [("8", sha)]
    assert ("GET", f"/repos/{PROJECT}/pulls") in hook.github.requests


# --- end to end: labgate serve, labgate review run --once, the fake GitHub -------------------


def labgate(lab_dir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command_line(lab_dir, *args),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextlib.contextmanager
def serving(lab_dir: Path, env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`labgate serve` of the lab: its base URL (once the socket is bound) and its process,
    whose stderr (the request log) can be read after the block."""
    serve = subprocess.Popen(
        command_line(lab_dir, "serve", "--listen", "127.0.0.1:0", "--no-review"),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stderr is not None
        line = serve.stderr.readline()  # printed once the socket is bound
        found = re.search(r"on (http://\S+?)/?$", line.strip())
        assert found, line
        yield found.group(1), serve
    finally:
        serve.terminate()
        serve.wait(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ReviewLab, FakeGitHub, str, dict[str, str]]]:
    """A lab, the fake GitHub, and `labgate serve` of the lab (its webhook URL)."""
    github = FakeGitHub(TOKEN)
    env = {**os.environ, SECRET_ENV: SECRET, TOKEN_ENV: TOKEN}
    with ServerThread(github.app()) as api:
        rl = make_review_lab(tmp_path, f"sqlite:///{tmp_path}/lab.db", server=api.url)
        with serving(rl.path, env) as (site, _):
            yield rl, github, f"{site}/review/github/gh", env


def test_end_to_end_webhook_to_status(
    served: tuple[ReviewLab, FakeGitHub, str, dict[str, str]],
) -> None:
    rl, github, url, env = served
    with Store.open(rl.lab.database_url) as store:  # the branch's baseline: staging passes
        baseline = plan_flight(rl.lab, store, "main", blessing=Blessing.REAL)
        asyncio.run(Flights(rl.lab, store).run(baseline))
        store.set_baseline("main", baseline)
    good, bad = rl.propose(1, "pass"), rl.propose(2, "fail")
    assert deliver(url, "pull_request", pr_payload(1, good)).status_code == 202
    assert deliver(url, "pull_request", pr_payload(2, bad, "synchronize")).status_code == 202

    done = labgate(rl.path, "review", "run", "--once", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and "voted +1" in lines[0] and "voted -1" in lines[1], lines

    by_sha = {sha: [s for s in github.statuses if s["sha"] == sha] for sha in (good, bad)}
    assert [s["state"] for s in by_sha[good]] == ["pending", "success"]
    assert [s["state"] for s in by_sha[bad]] == ["pending", "failure"]
    for status in github.statuses:
        assert status["context"] == "labgate"
        assert re.fullmatch(re.escape(WEB_URL) + r"flights/\d+", status["target_url"])
        assert len(status["description"]) <= 140
    assert "regression in test/check" in by_sha[bad][-1]["description"]

    # a recheck of pull request 1 tests it again, and another CI disagrees on pull request 2
    assert deliver(url, "issue_comment", comment_payload(1, "recheck")).status_code == 202
    assert deliver(url, "status", status_payload(bad, "other-ci", "success")).status_code == 202
    again = labgate(rl.path, "review", "run", "--once", env=env)
    assert again.returncode == 0 and "attempt 2" in again.stdout and "voted +1" in again.stdout
    assert [s["state"] for s in github.statuses if s["sha"] == good][-1] == "success"

    listed = labgate(rl.path, "review", "discrepancies", "--json", env=env)
    [found] = json.loads(listed.stdout)["discrepancies"]
    assert (found["change"], found["labgate"], found["account"], found["value"]) == (
        "2",
        -1,
        "other-ci",
        1,
    )
    text = labgate(rl.path, "review", "discrepancies", env=env).stdout
    assert "labgate -1" in text and "other-ci status +1" in text


def test_non_voting_posts_a_comment_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    github = FakeGitHub(TOKEN)
    with ServerThread(github.app()) as api:
        rl = make_review_lab(tmp_path, f"sqlite:///{tmp_path}/lab.db", server=api.url, voting=False)
        sha = rl.propose(6, "pass")
        env = {**os.environ, TOKEN_ENV: TOKEN}
        with Store.open(rl.lab.database_url) as store:
            ReviewQueue(store).enqueue(rl.event(6, sha))
        done = labgate(rl.path, "review", "run", "--once", env=env)
        assert done.returncode == 0, done.stderr
    assert github.statuses == []
    [comment] = github.comments[6]
    assert comment["body"].startswith("labgate (non-voting, would give Verified+1)")


def test_a_wrong_token_is_not_a_vote(tmp_path: Path) -> None:
    github = FakeGitHub(TOKEN)
    with ServerThread(github.app()) as api:
        rl = make_review_lab(tmp_path, f"sqlite:///{tmp_path}/lab.db", server=api.url)
        sha = rl.propose(7, "pass")
        with Store.open(rl.lab.database_url) as store:
            ReviewQueue(store).enqueue(rl.event(7, sha))
        env = {**os.environ, TOKEN_ENV: "wrong"}
        done = labgate(rl.path, "review", "run", "--once", env=env)
        with Store.open(rl.lab.database_url) as store:
            [run] = ReviewQueue(store).runs()
    assert done.returncode == 0
    assert "Bad credentials" in done.stderr
    assert (run.state, run.vote_state) == ("running", "intent")  # posted later, never lost
    assert github.statuses == []


@pytest.mark.timeout(120)
def test_a_killed_controller_is_taken_over_and_votes_once(tmp_path: Path) -> None:
    started, hold = tmp_path / "started.fifo", tmp_path / "hold.fifo"
    os.mkfifo(started)
    os.mkfifo(hold)
    # the first attempt of this job says it started, then holds until the controller is killed
    wait = f'if [ "$LABGATE_ATTEMPT" = 1 ]; then echo started > {started}; cat {hold}; fi; exit 0'
    extra = f'[[job]]\nname = "slow"\n[[job.step]]\nname = "wait"\nrun = {json.dumps(wait)}\n'
    github = FakeGitHub(TOKEN)
    env = {**os.environ, TOKEN_ENV: TOKEN}
    with ServerThread(github.app()) as api:
        rl = make_review_lab(tmp_path, f"sqlite:///{tmp_path}/lab.db", server=api.url, extra=extra)
        sha = rl.propose(1, "pass")
        with Store.open(rl.lab.database_url) as store:
            ReviewQueue(store).enqueue(rl.event(1, sha))
        controller = subprocess.Popen(
            command_line(rl.path, "review", "run"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert started.read_text() == "started\n"  # blocks until the step runs
        finally:
            controller.kill()
            controller.wait(timeout=30)
        with contextlib.suppress(OSError):  # let the orphaned step go (own process group)
            os.close(os.open(hold, os.O_WRONLY | os.O_NONBLOCK))
        assert [s["state"] for s in github.statuses] == ["pending"]
        again = labgate(rl.path, "review", "run", "--once", env=env)
        assert again.returncode == 0, again.stderr
        assert "taking over the runs of" in again.stderr
        with Store.open(rl.lab.database_url) as store:
            [run] = ReviewQueue(store).runs()
            flights = store.list_flights(blessing=Blessing.REVIEW)
            slow = store.get_flight(flights[0].id).job("slow")
    assert (run.state, run.vote, run.attempt) == ("voted", 1, 1)
    assert [f.id for f in flights] == [run.flight_id]  # the same flight, resumed
    assert slow.outcome == "pass"
    assert [s["state"] for s in github.statuses] == ["pending", "pending", "success"]
