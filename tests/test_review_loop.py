"""The review loop (labgate.review.loop, .queue, .vote): the durable queue across restarts, real
review flights on real git trees, votes decided once and posted once whatever crashes, broken
runs retried, and the pure vote mapping.

The connector here is a test double of the small connector interface (labgate.review.base), with
a shared "server" that remembers what was posted; the GitHub connector and its HTTP are tested
in test_github_webhook.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from labgate.flight import plan_flight
from labgate.flights import Flights
from labgate.model import (
    Blessing,
    DisabledTest,
    FlightResult,
    FlightState,
    JobResult,
    Outcome,
    StepResult,
)
from labgate.review.base import ChangeEvent, OtherVote, ReviewRun, Vote
from labgate.review.loop import ReviewLoop
from labgate.review.vote import error_vote, vote_for
from labgate.store import Store
from labgate.store.review import ReviewQueue
from labgate.verdict import classify
from reviewlab import ReviewLab, make_review_lab


class Crash(BaseException):
    """The controller dies here (not an Exception: nothing in the loop catches it)."""


@dataclass
class Server:
    """What the review system has been told."""

    posts: list[tuple[ReviewRun, Vote]] = field(default_factory=list)
    started: list[tuple[int, str | None]] = field(default_factory=list)
    refused: list[Vote] = field(default_factory=list)  # votes a post failed to deliver


@dataclass
class Double:
    server: Server
    name: str = "gh"
    crash_after_post: bool = False
    crash_when_started: bool = False
    fail_posts: int = 0

    async def events(self) -> AsyncIterator[ChangeEvent]:
        return
        yield

    async def reconcile(self) -> list[ChangeEvent]:
        return []

    async def started(self, run: ReviewRun, target_url: str | None) -> None:
        self.server.started.append((run.id, target_url))
        if self.crash_when_started:
            raise Crash

    async def report(self, run: ReviewRun, vote: Vote) -> None:
        if self.fail_posts:
            self.fail_posts -= 1
            self.server.refused.append(vote)
            raise ConnectionError("the server is down")
        self.server.posts.append((run, vote))
        if self.crash_after_post:
            raise Crash

    async def reported(self, run: ReviewRun) -> bool:
        return any(run.marker in vote.message for _, vote in self.server.posts)


def process(rl: ReviewLab, store: Store, connector: Double, **options: float) -> list[ReviewRun]:
    loop = ReviewLoop(rl.lab, store, {"gh": connector}, **options)  # type: ignore[arg-type]
    return asyncio.run(loop.process_once())


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/review.db"


# --- the queue ---------------------------------------------------------------------------


def test_queue_survives_a_restart_and_ignores_repeated_events(
    tmp_path: Path, database_url: str
) -> None:
    rl = make_review_lab(tmp_path, database_url)
    sha = rl.propose(1, "pass")
    with Store.open(database_url) as first:
        queue = ReviewQueue(first)
        run = queue.enqueue(rl.event(1, sha))
        assert run is not None and (run.state, run.attempt) == ("queued", 1)
    with Store.open(database_url) as second:  # labgate serve restarted
        queue = ReviewQueue(second)
        assert [(r.id, r.state) for r in queue.runs()] == [(run.id, "queued")]
        assert queue.enqueue(rl.event(1, sha)) is None  # the same patch set again
        assert queue.enqueue(rl.event(1, sha, "recheck")) is None  # already queued
        server = Server()
        [done] = process(rl, second, Double(server))
    assert (done.id, done.state, done.vote, done.vote_state) == (run.id, "voted", 1, "done")
    with Store.open(database_url) as third:
        queue = ReviewQueue(third)
        assert queue.enqueue(rl.event(1, sha)) is None  # tested already
        again = queue.enqueue(rl.event(1, sha, "recheck"))
        assert again is not None and (again.attempt, again.kind) == (2, "recheck")
    assert len(server.posts) == 1


def test_a_new_patch_set_supersedes_the_queued_one(tmp_path: Path, sqlite_url: str) -> None:
    rl = make_review_lab(tmp_path, sqlite_url)
    old = rl.propose(1, "pass")
    with Store.open(sqlite_url) as store:
        queue = ReviewQueue(store)
        first = queue.enqueue(rl.event(1, old))
        new = rl.propose(1, "fail")
        second = queue.enqueue(rl.event(1, new))
        assert first is not None and second is not None
        assert queue.get(first.id).state == "superseded"
        assert queue.get(second.id).state == "queued"


# --- runs end to end ---------------------------------------------------------------------


def test_a_passing_patch_gets_plus_one_with_the_flight_link(
    tmp_path: Path, sqlite_url: str
) -> None:
    rl = make_review_lab(tmp_path, sqlite_url)
    sha = rl.propose(3, "pass")
    server = Server()
    with Store.open(sqlite_url) as store:
        ReviewQueue(store).enqueue(rl.event(3, sha))
        [run] = process(rl, store, Double(server))
        assert run.flight_id is not None
        flight = store.get_flight(run.flight_id)
    assert flight.blessing is Blessing.REVIEW
    assert flight.revisions == {"xen": sha, "tools": rl.tools.rev("stable")}
    [(posted, vote)] = server.posts
    assert (posted.id, vote.verified, vote.voting) == (run.id, 1, True)
    link = f"https://lab.example.org/flights/{flight.id}"
    assert vote.target_url == link and link in vote.message
    assert "  test: pass" in vote.message and "  doc: pass" in vote.message
    assert "Disabled tests: none" in vote.message
    assert run.marker in vote.message
    assert server.started == [(run.id, link)]


def test_a_regression_gets_minus_one(tmp_path: Path, sqlite_url: str) -> None:
    rl = make_review_lab(tmp_path, sqlite_url)
    with Store.open(sqlite_url) as store:
        baseline = plan_flight(rl.lab, store, "main", blessing=Blessing.REAL)
        asyncio.run(Flights(rl.lab, store).run(baseline))
        store.set_baseline("main", baseline)
        sha = rl.propose(4, "fail")
        ReviewQueue(store).enqueue(rl.event(4, sha))
        server = Server()
        [run] = process(rl, store, Double(server))
    [(_, vote)] = server.posts
    assert (run.vote, vote.verified) == (-1, -1)
    assert vote.summary.startswith("Verified-1: regression in test/check")
    assert f"REGR. vs. {baseline}" in vote.message


def test_disabled_tests_are_not_run_and_listed(tmp_path: Path, sqlite_url: str) -> None:
    extra = '[[disable]]\njob = "test"\nreason = "guests do not boot"\nbug = "https://bugs/9"\n'
    rl = make_review_lab(tmp_path, sqlite_url, extra=extra)
    sha = rl.propose(5, "fail")  # would fail, but the test is disabled
    server = Server()
    with Store.open(sqlite_url) as store:
        ReviewQueue(store).enqueue(rl.event(5, sha))
        [run] = process(rl, store, Double(server))
        assert run.flight_id is not None
        assert [j.name for j in store.get_flight(run.flight_id).jobs] == ["doc"]
    [(_, vote)] = server.posts
    assert vote.verified == 1
    assert "  test / *: guests do not boot [https://bugs/9]" in vote.message


def test_broken_votes_zero_and_is_retried_until_it_gives_up(
    tmp_path: Path, database_url: str
) -> None:
    rl = make_review_lab(tmp_path, database_url, retries=1)
    sha = rl.propose(6, "broken")
    server = Server()
    with Store.open(database_url) as store:
        ReviewQueue(store).enqueue(rl.event(6, sha))
        runs = process(rl, store, Double(server))
    assert [(r.attempt, r.state, r.vote) for r in runs] == [(1, "voted", 0), (2, "voted", 0)]
    first, second = (vote for _, vote in server.posts)
    assert "not tested, will retry" in first.message and "host lost power" in first.message
    assert first.retest and not second.retest
    assert "gave up retrying" in second.message
    assert all(v.verified == 0 for v in (first, second))


def test_non_voting_comments_only(tmp_path: Path, sqlite_url: str) -> None:
    rl = make_review_lab(tmp_path, sqlite_url, voting=False)
    sha = rl.propose(7, "pass")
    server = Server()
    with Store.open(sqlite_url) as store:
        ReviewQueue(store).enqueue(rl.event(7, sha))
        process(rl, store, Double(server))
    [(_, vote)] = server.posts
    assert not vote.voting
    assert vote.message.startswith("labgate (non-voting, would give Verified+1)")


def test_a_moved_ref_supersedes_the_run(tmp_path: Path, sqlite_url: str) -> None:
    rl = make_review_lab(tmp_path, sqlite_url)
    old = rl.propose(8, "pass")
    server = Server()
    with Store.open(sqlite_url) as store:
        ReviewQueue(store).enqueue(rl.event(8, old))
        rl.propose(8, "fail")  # pushed again before labgate got to it
        [run] = process(rl, store, Double(server))
    assert run.state == "superseded" and "is at" in (run.reason or "")
    assert server.posts == []


def test_a_ref_that_cannot_be_fetched_is_not_tested_and_retried(
    tmp_path: Path, sqlite_url: str
) -> None:
    rl = make_review_lab(tmp_path, sqlite_url, retries=1)
    server = Server()
    with Store.open(sqlite_url) as store:
        ReviewQueue(store).enqueue(rl.event(42, "e" * 40))  # no refs/pull/42/head
        runs = process(rl, store, Double(server))
    assert [(r.attempt, r.state, r.vote, r.flight_id) for r in runs] == [
        (1, "voted", 0, None),
        (2, "voted", 0, None),
    ]
    first, second = (vote for _, vote in server.posts)
    assert "not tested, will retry" in first.message and "refs/pull/42/head" in first.message
    assert "gave up retrying" in second.message


# --- never twice -------------------------------------------------------------------------


def test_a_crash_after_posting_never_votes_twice(tmp_path: Path, database_url: str) -> None:
    rl = make_review_lab(tmp_path, database_url)
    sha = rl.propose(9, "pass")
    server = Server()
    with Store.open(database_url) as store:
        ReviewQueue(store).enqueue(rl.event(9, sha))
        with pytest.raises(Crash):  # posted, then died before recording it
            process(rl, store, Double(server, crash_after_post=True), lease_s=0)
        [run] = ReviewQueue(store).runs()
        assert (run.state, run.vote_state) == ("running", "intent")
    with Store.open(database_url) as restarted:
        [run] = process(rl, restarted, Double(server))
        assert process(rl, restarted, Double(server)) == []
    assert (run.state, run.vote_state, run.vote) == ("voted", "done", 1)
    assert len(server.posts) == 1


def test_a_crash_mid_run_resumes_its_flight_and_votes_once(
    tmp_path: Path, database_url: str
) -> None:
    rl = make_review_lab(tmp_path, database_url)
    sha = rl.propose(10, "pass")
    server = Server()
    with Store.open(database_url) as store:
        ReviewQueue(store).enqueue(rl.event(10, sha))
        with pytest.raises(Crash):
            process(rl, store, Double(server, crash_when_started=True), lease_s=0)
        [crashed] = ReviewQueue(store).runs()
    assert crashed.state == "running" and crashed.flight_id is not None
    with Store.open(database_url) as restarted:
        [run] = process(rl, restarted, Double(server))
        assert len(restarted.list_flights(blessing=Blessing.REVIEW)) == 1
    assert run.flight_id == crashed.flight_id
    assert [(r.id, v.verified) for r, v in server.posts] == [(run.id, 1)]


def test_a_failed_post_is_retried_later_not_lost(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rl = make_review_lab(tmp_path, sqlite_url)
    sha = rl.propose(11, "pass")
    server = Server()
    with Store.open(sqlite_url) as store:
        ReviewQueue(store).enqueue(rl.event(11, sha))
        [run] = process(rl, store, Double(server, fail_posts=1))
        assert (run.state, run.vote_state) == ("running", "intent")
        assert "the server is down" in (run.reason or "")
        assert process(rl, store, Double(server)) == []  # not before its delay
        monkeypatch.setattr("labgate.review.loop.RETRY_POST_S", 0.0)
        other = rl.propose(14, "pass")
        ReviewQueue(store).enqueue(rl.event(14, other))
        runs = process(rl, store, Double(server, fail_posts=2))  # fails twice, then posts
    assert [r.state for r in runs] == ["running", "running", "voted"]
    assert [(r.change, v.verified) for r, v in server.posts] == [("14", 1)]


def test_a_vote_posted_again_after_a_failure_says_the_same(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second post is rebuilt from the recorded intent: message, summary and link alike."""
    rl = make_review_lab(tmp_path, sqlite_url)
    sha = rl.propose(15, "pass")
    server = Server()
    monkeypatch.setattr("labgate.review.loop.RETRY_POST_S", 0.0)
    with Store.open(sqlite_url) as store:
        ReviewQueue(store).enqueue(rl.event(15, sha))
        process(rl, store, Double(server, fail_posts=1))
        process(rl, store, Double(server))
    [first] = server.refused
    [(_, posted)] = server.posts
    assert posted.verified == first.verified
    assert (posted.message, posted.summary, posted.target_url) == (
        first.message,
        first.summary,
        first.target_url,
    )
    assert posted.summary.startswith("Verified+1: nothing regressed")


# --- discrepancies -----------------------------------------------------------------------


def test_discrepancies_with_other_ci(tmp_path: Path, sqlite_url: str) -> None:
    rl = make_review_lab(tmp_path, sqlite_url)
    good, bad = rl.propose(12, "pass"), rl.propose(13, "pass")
    with Store.open(sqlite_url) as store:
        queue = ReviewQueue(store)
        for number, sha in ((12, good), (13, bad)):
            queue.enqueue(rl.event(number, sha))
        process(rl, store, Double(Server()))
        other = (OtherVote("other-ci", "Verified", 1),)
        queue.record_votes(replace(rl.event(12, good), votes=other))
        against = (OtherVote("other-ci", "Verified", -1), OtherVote("third-ci", "Verified", 0))
        queue.record_votes(replace(rl.event(13, bad), votes=against))
        [found] = queue.discrepancies()
    assert (found.change, found.revision, found.labgate, found.account, found.value) == (
        "13",
        bad,
        1,
        "other-ci",
        -1,
    )


# --- the pure vote mapping ---------------------------------------------------------------


def flight(fid: int, outcome: Outcome, *, revisions: dict[str, str] | None = None) -> FlightResult:
    step = StepResult(
        fid * 10, "check", outcome, reason="host lost" if outcome == "broken" else None
    )
    job = JobResult(fid * 10, "test", outcome, steps=(step,), reason=step.reason)
    return FlightResult(
        fid, "main", Blessing.REVIEW, revisions or {"xen": f"{fid:040x}"},
        FlightState.FINISHED, outcome, None, None, (job,),
    )  # fmt: skip


DISABLED = (DisabledTest("test-arm*", "*", "no arm64 host", "https://bugs/1"),)


def test_vote_for_pass_is_plus_one_and_lists_everything() -> None:
    f = flight(2, Outcome.PASS)
    vote = vote_for(classify(f, None, []), f, DISABLED, True, web_url="http://lab/")
    assert (vote.verified, vote.voting, vote.retest) == (1, True, False)
    assert vote.target_url == "http://lab/flights/2"
    assert "  test: pass" in vote.message
    assert "  test-arm* / *: no arm64 host [https://bugs/1]" in vote.message


def test_vote_for_regression_is_minus_one() -> None:
    base, now = flight(1, Outcome.PASS), flight(2, Outcome.FAIL)
    vote = vote_for(classify(now, base, [base]), now, (), True)
    assert vote.verified == -1 and not vote.retest
    assert "Regressions (blocking):" in vote.message and "REGR. vs. 1" in vote.message
    assert vote.target_url is None


def test_vote_for_broken_is_zero_and_retried() -> None:
    base, now = flight(1, Outcome.PASS), flight(2, Outcome.BROKEN)
    vote = vote_for(classify(now, base, [base]), now, (), True)
    assert (vote.verified, vote.retest) == (0, True)
    assert (
        "not tested, will retry" in vote.message and "Not tested (the lab failed):" in vote.message
    )
    last = vote_for(classify(now, base, [base]), now, (), True, attempts_left=False)
    assert (last.verified, last.retest) == (0, False) and "gave up" in last.message


def test_vote_for_a_failure_that_never_passed_is_plus_one() -> None:
    now = flight(2, Outcome.FAIL)
    vote = vote_for(classify(now, None, []), now, (), True)
    assert vote.verified == 1  # not this patch's doing: it never passed on the branch


def test_vote_for_non_voting_and_long_summaries() -> None:
    f = flight(2, Outcome.PASS)
    vote = vote_for(classify(f, None, []), f, (), False, marker="(labgate run 1, attempt 1)")
    assert not vote.voting and vote.verified == 1
    assert vote.message.rstrip().endswith("(labgate run 1, attempt 1)")
    assert len(vote.summary) <= 140
    long = error_vote("cannot fetch " + "x" * 300, (), True, "(labgate run 1, attempt 1)")
    assert len(long.summary) == 140 and long.summary.endswith("x…")


def test_vote_for_a_flight_without_jobs_is_zero_without_retry() -> None:
    f = FlightResult(3, "main", Blessing.REVIEW, {}, FlightState.FINISHED, Outcome.PASS, None, None)
    vote = vote_for(classify(f, None, []), f, DISABLED, True)
    assert (vote.verified, vote.retest) == (0, False)
