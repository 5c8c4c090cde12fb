"""`labgate serve` runs the review loop: a real Review Board (tests/reviewboard.py) sees
`pending` while a flight runs and the result after; killed mid-flight (SIGKILL) and restarted,
it resumes every queued patch set and updates the same status update; SIGTERM stops it cleanly
and gives its run back to the queue. Review Board's signed webhooks reach `serve` (polling
once an hour), and a request closed while its run is queued or running gets no vote: its
status update ends `cancelled`, also when it was closed while serve was down."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gitrepos import GitRepo
from labs import labgate, toml_str
from procs import gone_within, pids_with, wait_for
from reviewboard import (
    TOKEN_ENV,
    ReviewBoard,
    diff_of,
    ours,
    reviewboard_lab,
    session_server,
)

HELD = ("wait-a", "wait-b")
# a result `wait-X` holds the step until the test creates $RELEASE/wait-X (the path is on its
# command line, for the test to find the step's process)
CHECK = """#!/bin/sh
result="$(cat xen/result)"
case "$result" in
  pass) exit 0 ;;
  fail) echo "guest did not start"; exit 1 ;;
  wait-*) exec sh -c 'while [ ! -e "$1" ]; do sleep 0.05; done' held "$RELEASE/$result" ;;
esac
exit 3
"""


@dataclass
class Serve:
    """A `labgate serve` process and the lines of its stderr."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    """Every line of its stderr (printed after the test: pytest shows it when the test fails)."""

    def wait_serving(self) -> None:
        self.wait_line("labgate: serving")

    def wait_line(self, text: str) -> str:
        """The first line (seen before or coming) that holds ``text``."""
        while True:
            for line in self.seen:
                if text in line:
                    return line
            self.seen.append(self.lines.get(timeout=120))

    @property
    def url(self) -> str:
        return self.wait_line("labgate: serving").rsplit(" on ", 1)[1].strip().rstrip("/")


def start_serve(lab_dir: Path, env: dict[str, str]) -> Serve:
    process = subprocess.Popen(
        [*labgate(lab_dir, "serve"), "--listen", "127.0.0.1:0"],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    serve = Serve(process)

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            serve.lines.put(line)
            serve.log.append(line)

    threading.Thread(target=read, daemon=True).start()
    serve.wait_serving()
    return serve


def held_step(mark: Path) -> int | None:
    """The process of the step waiting for ``mark`` (not the `sleep` it forks for a moment,
    which carries its command line until it execs)."""
    pids = pids_with(str(mark))
    roots = [pid for pid in pids if _parent(pid) not in pids]
    return roots[0] if len(roots) == 1 else None


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


@pytest.fixture
def server(request: pytest.FixtureRequest) -> ReviewBoard:
    return session_server(request)


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for number, serve in enumerate(started):
        if serve.process.poll() is None:
            serve.process.kill()
            serve.process.wait()
        print(f"--- labgate serve #{number}:", "".join(serve.log), sep="\n")


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Path]:
    """The directory of the markers the held steps wait for; every marker is made at the end,
    so no step outlives a failed test."""
    path = tmp_path / "release"
    path.mkdir()
    yield path
    for mark in HELD:
        (path / mark).touch()


def state_of(server: ReviewBoard, rr: int, want: str) -> dict[str, Any] | None:
    updates = ours(server.person(), rr)
    assert len(updates) <= 1, updates  # one status update per run, whatever restarts happen
    return updates[0] if updates and updates[0]["state"] == want else None


@dataclass
class HeldLab:
    """A Review Board lab whose check.sh holds a step on `wait-X` (see CHECK), and the
    environment of its `labgate serve` (a user's API token of its own)."""

    lab_dir: Path
    repository: str
    server: ReviewBoard
    env: dict[str, str]
    repo: GitRepo

    def post(self, result: str) -> int:
        """A review request whose diff sets `result`, published; its id."""
        diff = diff_of(self.repo, {"result": f"{result}\n", f"notes/{result}": "a new file\n"})
        return self.server.person().post_review_request(
            self.repository, diff, self.repo.rev("master"), summary=result
        )


def held_lab(
    tmp_path: Path,
    server: ReviewBoard,
    release: Path,
    env: dict[str, str] | None = None,
    **options: Any,
) -> HeldLab:
    repository = f"xen-{tmp_path.name}"
    lab_dir, repo = reviewboard_lab(
        tmp_path / "lab",
        server,
        repository,
        lab_keys=f"env = {{ RELEASE = {toml_str(str(release))} }}\npoll_interval = 0.5",
        **options,
    )
    repo.commit("waiting check", files={"check.sh": CHECK})
    repo.branch("staging")
    user = f"labgate-{tmp_path.name}"[:30]
    token = server.api_token(user, server.add_user(user))
    return HeldLab(lab_dir, repository, server, {**os.environ, TOKEN_ENV: token, **(env or {})},
                   repo)  # fmt: skip


def test_serve_runs_the_review_loop_through_kills_and_sigterm(
    tmp_path: Path, server: ReviewBoard, serves: list[Serve], release: Path
) -> None:
    lab = held_lab(tmp_path, server, release)
    lab_dir, env, post = lab.lab_dir, lab.env, lab.post
    serves.append(start_serve(lab_dir, env))
    held = post("wait-a")
    pending = wait_for("pending on the held request", lambda: state_of(server, held, "pending"))
    step = wait_for("the held step", lambda: held_step(release / "wait-a"))

    # killed mid-flight; two more requests come while it is down
    serves[0].process.kill()
    serves[0].process.wait()
    passing, failing = post("pass"), post("fail")
    serves.append(start_serve(lab_dir, env))
    assert gone_within(step, 30), "the restarted controller ends the step the killed one left"
    wait_for("the held step again", lambda: held_step(release / "wait-a"))
    again = state_of(server, held, "pending")  # the same one, not a second
    assert again is not None and again["id"] == pending["id"]
    (release / "wait-a").touch()
    done = wait_for("the held result", lambda: state_of(server, held, "done-success"))
    assert done["id"] == pending["id"]
    wait_for("the passing result", lambda: state_of(server, passing, "done-success"))
    wait_for("the failing result", lambda: state_of(server, failing, "done-failure"))

    # SIGTERM mid-flight: serve stops cleanly, the run goes back to the queue
    held_again = post("wait-b")
    pending = wait_for("pending again", lambda: state_of(server, held_again, "pending"))
    step = wait_for("the second held step", lambda: held_step(release / "wait-b"))
    serves[1].process.send_signal(signal.SIGTERM)
    assert serves[1].process.wait(timeout=60) == 130
    assert gone_within(step, 30), "a stopped serve leaves no step running"
    serves.append(start_serve(lab_dir, env))
    wait_for("the step resumed", lambda: held_step(release / "wait-b"))
    (release / "wait-b").touch()
    done = wait_for("the resumed result", lambda: state_of(server, held_again, "done-success"))
    assert done["id"] == pending["id"]
    serves[2].process.send_signal(signal.SIGTERM)
    assert serves[2].process.wait(timeout=60) == 130


SECRET_ENV = "LABGATE_TEST_RB_SECRET"


def test_webhooks_reach_serve_and_a_closed_request_gets_no_vote(
    tmp_path: Path, server: ReviewBoard, serves: list[Serve], release: Path
) -> None:
    secret = f"secret of {tmp_path.name}"
    lab = held_lab(
        tmp_path,
        server,
        release,
        {SECRET_ENV: secret},
        review_keys=f'poll_interval = 3600\nsecret_env = "{SECRET_ENV}"',
        slots=1,
    )
    post, person = lab.post, server.person()
    serves.append(start_serve(lab.lab_dir, lab.env))
    hook = f"{serves[0].url}/review/reviewboard/rb"
    unsigned = httpx.post(hook, json={"review_request": {"id": 1}},
                          headers={"X-ReviewBoard-Event": "review_request_published"})  # fmt: skip
    assert (unsigned.status_code, unsigned.json()) == (
        401,
        {"error": "no X-Hub-Signature header (is the webhook's secret set?)"},
    )
    person.add_webhook(hook, secret, lab.repository)

    held = post("wait-a")
    wait_for("pending on the held request", lambda: state_of(server, held, "pending"))
    step = wait_for("the held step", lambda: held_step(release / "wait-a"))
    # posted long after the first poll, with the next an hour away: the webhook queued it
    waiting = post("pass")
    serves[0].wait_line(f"webhook review_request_published for review request {waiting}: queued")
    wait_for("pending on the waiting request", lambda: state_of(server, waiting, "pending"))

    person.close(waiting, "discarded")
    serves[0].wait_line(f"(rb change {waiting}) dropped: the change was discarded")
    person.close(held, "submitted")
    serves[0].wait_line(f"(rb change {held}): the change was submitted: flight")
    assert gone_within(step, 30), "the closed request's flight is cancelled"
    serves[0].wait_line("the change was submitted: no vote")

    after = post("fail")
    wait_for("the next request's result", lambda: state_of(server, after, "done-failure"))
    for closed, how in ((held, "submitted"), (waiting, "discarded")):
        update = wait_for("the closed request's status update finalised",
                          lambda rr=closed: state_of(server, rr, "cancelled"))  # fmt: skip
        assert update["summary"] == f"cancelled: the change was {how} before the run finished"
        assert not [r for r in person.reviews(closed) if "labgate run" in r["body_top"]]
    serves[0].process.send_signal(signal.SIGTERM)
    assert serves[0].process.wait(timeout=60) == 130


def test_a_request_closed_while_serve_is_down_is_ended_at_the_restart(
    tmp_path: Path, server: ReviewBoard, serves: list[Serve], release: Path
) -> None:
    # slots = 1: the second request stays queued behind the held one
    lab = held_lab(tmp_path, server, release, slots=1)
    person = server.person()
    serves.append(start_serve(lab.lab_dir, lab.env))
    held, waiting = lab.post("wait-a"), lab.post("pass")
    pending = wait_for("pending on the held request", lambda: state_of(server, held, "pending"))
    wait_for("pending on the waiting request", lambda: state_of(server, waiting, "pending"))
    step = wait_for("the held step", lambda: held_step(release / "wait-a"))

    # killed with one run in flight and one queued; both requests are closed while it is down,
    # so the restart's first poll (open requests only) does not list them
    serves[0].process.kill()
    serves[0].process.wait()
    person.close(held, "submitted")
    person.close(waiting, "discarded")
    serves.append(start_serve(lab.lab_dir, lab.env))
    serves[1].wait_line("start-up check done: 2 run(s) of closed changes ended")
    assert gone_within(step, 30), "the closed request's flight is not resumed"
    for closed, how in ((held, "submitted"), (waiting, "discarded")):
        update = wait_for("the status update finalised",
                          lambda rr=closed: state_of(server, rr, "cancelled"))  # fmt: skip
        assert update["summary"] == f"cancelled: the change was {how} before the run finished"
        assert not [r for r in person.reviews(closed) if "labgate run" in r["body_top"]]
    assert state_of(server, held, "cancelled")["id"] == pending["id"]  # the same, not a second

    after = lab.post("fail")  # the loop goes on
    wait_for("the next request's result", lambda: state_of(server, after, "done-failure"))
    serves[1].process.send_signal(signal.SIGTERM)
    assert serves[1].process.wait(timeout=60) == 130
