"""The Gerrit connector end to end against the protocol double of tests/gerritdouble.py (which
follows Gerrit's documentation; no Gerrit server can run here): `gerrit stream-events` over a
real SSH connection, the REST API over real HTTP, change refs fetched from a real git
repository, review flights on the flights service, votes posted with the Verified label; a
recheck; the stream cut, reconnected with backoff and reconciled through REST, the missed patch
sets tested once and never twice; a closed change's 409 and a label out of range; a change
abandoned while queued and one merged while its flight runs get no vote."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from gerritdouble import GerritDouble
from labgate.config import load_lab
from labgate.model import FlightState, ReviewSpec
from labgate.review.base import Vote
from labgate.review.gerrit.connector import GerritConnector, GerritError, ssh_target
from labgate.review.gerrit.rest import TAG, Request, review_request
from labgate.review.gerrit.settings import GerritSettings, gerrit_settings
from labgate.review.loop import ReviewLoop
from labgate.store import Store
from labgate.web import create_app
from labs import labgate
from procs import wait_for
from reviewlab import ReviewLab, make_review_lab

PASSWORD_ENV = "LABGATE_TEST_GERRIT_PASSWORD"
NAME = "xen-gerrit"


@pytest.fixture
def gerrit_lab(tmp_path: Path) -> Iterator[tuple[ReviewLab, GerritDouble]]:
    """The review lab (tests/reviewlab.py) with a `[[review]]` of the Gerrit double, whose
    project repository is the lab's tree under test."""
    rl = make_review_lab(tmp_path, f"sqlite:///{tmp_path}/lab.db")
    with GerritDouble(tmp_path / "gerrit", rl.repo, project="xen") as gerrit:
        toml = rl.path / "lab.toml"
        toml.write_text(
            toml.read_text()
            + f"""
[[review]]
name = "{NAME}"
driver = "gerrit"
server = {json.dumps(gerrit.url)}
project = "xen"
branch = "main"
target = "master"
user = "{gerrit.user}"
password_env = "{PASSWORD_ENV}"
ssh = "{gerrit.ssh}"
identity_file = {json.dumps(str(gerrit.identity_file))}
known_hosts_file = {json.dumps(str(gerrit.known_hosts_file))}
web_url = "https://lab.example.org/"
ci_accounts = ["other-ci"]
"""
        )
        yield replace(rl, lab=load_lab(rl.path)), gerrit


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch, gerrit_lab: tuple[ReviewLab, GerritDouble]) -> None:
    monkeypatch.setenv(PASSWORD_ENV, gerrit_lab[1].password)


def spec_of(rl: ReviewLab) -> ReviewSpec:
    return next(r for r in rl.lab.reviews if r.name == NAME)


def review(rl: ReviewLab, gerrit: GerritDouble, *args: str) -> subprocess.CompletedProcess[str]:
    """`labgate review ARGS` of the lab, with the Gerrit password in its environment; it must
    succeed."""
    env = {**os.environ, PASSWORD_ENV: gerrit.password}
    done = subprocess.run(
        labgate(rl.path, "review", *args), env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


async def queued(loop: ReviewLoop) -> None:
    """Until the loop's listener queued a run (the loop's own wake-up event, not a sleep)."""
    await asyncio.wait_for(loop.wake.wait(), 60)
    loop.wake.clear()


def runs_of(store: Store, change: int) -> list[tuple[str, int, str, int | None]]:
    return [
        (r.patchset, r.attempt, r.kind, r.vote)
        for r in store.review.runs(NAME)
        if r.change == str(change)
    ]


def test_events_votes_recheck_and_a_cut_stream(
    gerrit_lab: tuple[ReviewLab, GerritDouble], caplog: pytest.LogCaptureFixture
) -> None:
    rl, gerrit = gerrit_lab
    spec = spec_of(rl)
    caplog.set_level(logging.INFO, logger="labgate.review")

    async def scenario(store: Store) -> None:
        connector = GerritConnector(spec, backoff=(0.05, 0.4))
        loop = ReviewLoop(rl.lab, store, {NAME: connector})
        listening = asyncio.create_task(loop.listen(connector))
        try:
            await asyncio.to_thread(gerrit.wait, streams=1)

            # patchset-created → the change ref → a review flight → Verified+1 by REST
            first = gerrit.upload({"result": "pass\n"})
            await queued(loop)
            [run] = await loop.process_once()
            assert (run.state, run.vote, run.patchset, run.ref) == (
                "voted",
                1,
                "1",
                f"refs/changes/34/{first}/1",
            )
            assert run.flight_id is not None
            flight = store.get_flight(run.flight_id)
            assert flight.revisions["xen"] == rl.repo.rev(f"refs/changes/34/{first}/1")
            assert gerrit.votes(first) == {gerrit.user: 1}
            [message] = gerrit.messages(first)
            assert message.tag == TAG and run.marker in message.message
            assert message.message.startswith("Patch Set 1: Verified+1\n\nlabgate: Verified+1")

            # another CI's vote is recorded; "recheck" tests the patch set again
            gerrit.comment(first, "other-ci", "Build failed.", {"Verified": -1})
            gerrit.comment(first, "maintainer", "recheck")
            await queued(loop)
            [again] = await loop.process_once()
            assert (again.kind, again.attempt, again.vote) == ("recheck", 2, 1)
            assert len(gerrit.messages(first)) == 4
            [found] = store.review.discrepancies()
            assert (found.change, found.account, found.value, found.labgate) == (
                str(first),
                "other-ci",
                -1,
                1,
            )

            # the stream is cut and logins refused: what happens meanwhile is missed
            gerrit.cut(refuse=True)
            second = gerrit.upload({"result": "broken\n"})
            gerrit.upload({"result": "pass\n"}, change=first)  # patch set 2
            await asyncio.to_thread(gerrit.wait, refused=3)
            gerrit.accept()
            await asyncio.to_thread(gerrit.wait, streams=2)
            await queued(loop)  # the reconcile through REST queued them
            done = await loop.process_once()
            assert sorted((r.change, r.patchset, r.attempt) for r in done)[:2] == [
                (str(first), "2", 1),
                (str(second), "1", 1),
            ]

            # cut again, no refusal: the reconcile finds nothing new (never tested twice);
            # a change uploaded once the stream is back comes through the stream
            gerrit.cut()
            await asyncio.to_thread(gerrit.wait, streams=3)
            third = gerrit.upload({"result": "pass\n"})
            await queued(loop)
            [last] = await loop.process_once()
            assert (last.change, last.patchset) == (str(third), "1")
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)

    with Store.open(rl.lab.database_url) as store:
        asyncio.run(scenario(store))
        assert runs_of(store, 1234) == [("1", 1, "patchset", 1), ("1", 2, "recheck", 1),
                                        ("2", 1, "patchset", 1)]  # fmt: skip
        broken = runs_of(store, 1235)
        assert [(p, a, v) for p, a, _, v in broken][:2] == [("1", 1, 0), ("1", 2, 0)]
        assert runs_of(store, 1236) == [("1", 1, "patchset", 1)]
    queries = [p for m, p, s in gerrit.requests if m == "GET" and p == "/a/changes/"]
    assert len(queries) == 3  # one reconcile after each of the three connects
    waits = [
        float(m.group(1))
        for r in caplog.records
        if r.name == "labgate.review.gerrit"
        and (m := re.search(r"reconnecting in ([0-9.]+)s", r.getMessage()))
    ]
    assert waits[:3] == [0.05, 0.1, 0.2]  # doubling while refused, and reset once connected
    assert waits[-1] == 0.05


def test_dropped_output_makes_it_ask_for_the_open_changes(
    gerrit_lab: tuple[ReviewLab, GerritDouble],
) -> None:
    rl, gerrit = gerrit_lab

    async def scenario(store: Store) -> None:
        connector = GerritConnector(spec_of(rl))
        loop = ReviewLoop(rl.lab, store, {NAME: connector})
        listening = asyncio.create_task(loop.listen(connector))
        try:
            await asyncio.to_thread(gerrit.wait, streams=1)
            missed = gerrit.upload({"result": "pass\n"}, announce=False)
            gerrit.stream({"type": "dropped-output"})
            await queued(loop)
            [run] = await loop.process_once()
            assert (run.change, run.vote) == (str(missed), 1)
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)

    with Store.open(rl.lab.database_url) as store:
        asyncio.run(scenario(store))
    assert [m for m, p, _ in gerrit.requests if p == "/a/changes/"] == ["GET", "GET"]


def test_review_run_once_reconciles_and_votes(
    gerrit_lab: tuple[ReviewLab, GerritDouble],
) -> None:
    rl, gerrit = gerrit_lab
    good = gerrit.upload({"result": "pass\n"})
    gerrit.comment(good, "other-ci", "Build failed.", {"Verified": -1})
    [run] = json.loads(review(rl, gerrit, "run", "--once", "--json").stdout)
    assert (run["connector"], run["change"], run["state"], run["vote"]) == (
        NAME,
        str(good),
        "voted",
        1,
    )
    assert gerrit.votes(good) == {"other-ci": -1, gerrit.user: 1}
    listed = review(rl, gerrit, "discrepancies", "--json")
    [found] = json.loads(listed.stdout)["discrepancies"]
    assert (found["account"], found["value"], found["labgate"]) == ("other-ci", -1, 1)


def test_a_closed_change_ends_the_run_in_error(
    gerrit_lab: tuple[ReviewLab, GerritDouble],
) -> None:
    rl, gerrit = gerrit_lab
    spec = spec_of(rl)
    change = gerrit.upload({"result": "pass\n"})

    async def scenario(store: Store) -> None:
        connector = GerritConnector(spec)
        loop = ReviewLoop(rl.lab, store, {NAME: connector})
        for event in await connector.reconcile():
            loop.enqueue(event)
        gerrit.close(change, "ABANDONED")
        [run] = await loop.process_once()
        assert run.state == "error"
        assert (
            f"409 Conflict (the change's state does not allow it): change {change} is abandoned"
            in (run.reason or "")
        )
        assert run.vote == 1  # the decided vote stays recorded
        assert gerrit.votes(change) == {}
        assert await loop.process_once() == []  # not posted again and again

    with Store.open(rl.lab.database_url) as store:
        asyncio.run(scenario(store))


def test_a_change_closed_while_queued_or_running_gets_no_vote(
    gerrit_lab: tuple[ReviewLab, GerritDouble], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rl, gerrit = gerrit_lab
    caplog.set_level(logging.INFO, logger="labgate.review")
    started, release = tmp_path / "started", tmp_path / "release"
    hold = f"#!/bin/sh\ntouch {started}\nwhile [ ! -e {release} ]; do sleep 0.05; done\n"

    def state(store: Store, change: int) -> str | None:
        runs = [r for r in store.review.runs(NAME) if r.change == str(change)]
        return runs[-1].state if runs else None

    async def until(what: str, check: Callable[[], object]) -> None:
        await asyncio.to_thread(wait_for, what, lambda: check() or None)

    async def scenario(store: Store) -> None:
        loop = ReviewLoop(rl.lab, store, {NAME: GerritConnector(spec_of(rl))})  # one at a time
        serving = asyncio.create_task(loop.run_forever(poll_s=0.2))
        try:
            await asyncio.to_thread(gerrit.wait, streams=1)
            held = gerrit.upload({"check.sh": hold})
            await until("the held step", started.exists)
            waiting = gerrit.upload({"result": "pass\n"})
            await until("the waiting run", lambda: state(store, waiting) == "queued")

            gerrit.close(waiting, "ABANDONED")
            await until("the queued run dropped", lambda: state(store, waiting) == "superseded")
            gerrit.close(held, "MERGED")
            await until("the running run ended", lambda: state(store, held) == "superseded")
            [run] = [r for r in store.review.runs(NAME) if r.change == str(held)]
            assert run.flight_id is not None and run.reason == "the change was merged"
            await until(
                "its flight cancelled",
                lambda: store.get_flight(run.flight_id).state is FlightState.CANCELLED,
            )
            after = gerrit.upload({"result": "fail\n"})
            await until("the next change's vote", lambda: gerrit.votes(after))
            assert gerrit.votes(held) == {} and gerrit.votes(waiting) == {}
            assert gerrit.messages(held) == [] and gerrit.messages(waiting) == []
        finally:
            release.touch()
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)

    with Store.open(rl.lab.database_url) as store:
        asyncio.run(scenario(store))
    said = [r.getMessage() for r in caplog.records if r.name == "labgate.review"]
    assert any("dropped: the change was abandoned" in m for m in said), said
    assert any("the change was merged: flight" in m and "cancelled" in m for m in said), said
    assert any("the change was merged: no vote" in m for m in said), said


def test_a_label_out_of_range_is_refused_by_name(
    gerrit_lab: tuple[ReviewLab, GerritDouble],
) -> None:
    rl, gerrit = gerrit_lab
    spec = spec_of(rl)
    change = gerrit.upload({"result": "pass\n"})
    connector = GerritConnector(spec)
    [event] = asyncio.run(connector.reconcile())
    assert (event.change, event.patchset, event.ref) == (
        str(change),
        "1",
        f"refs/changes/34/{change}/1",
    )
    assert event.created is not None
    with Store.open(rl.lab.database_url) as store:
        run = store.review.enqueue(event)
    assert run is not None
    post = review_request(run, Vote(1, "x"))
    wrong = Request(post.method, post.path, {"message": "x", "labels": {"Verified": 2}})
    with pytest.raises(GerritError, match=r'HTTP 400: label "Verified": 2 is not a valid value'):
        asyncio.run(connector._call(wrong))
    unknown = Request(post.method, post.path, {"labels": {"Verifed": 1}})
    with pytest.raises(GerritError, match=r'"Verifed" is not a configured label'):
        asyncio.run(connector._call(unknown))
    assert gerrit.votes(change) == {}


def test_a_wrong_password_or_key_is_an_error_naming_it(
    gerrit_lab: tuple[ReviewLab, GerritDouble], monkeypatch: pytest.MonkeyPatch
) -> None:
    rl, _ = gerrit_lab
    spec = spec_of(rl)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    with pytest.raises(GerritError, match="HTTP 401"):
        asyncio.run(GerritConnector(spec).reconcile())
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(GerritError, match=f"environment variable {PASSWORD_ENV}, which is not set"):
        asyncio.run(GerritConnector(spec).reconcile())


def test_ssh_target() -> None:
    def spec(ssh: str) -> ReviewSpec:
        settings = GerritSettings(user="ci", password_env="P", ssh=ssh)
        return ReviewSpec("g", "gerrit", "https://g", "p", "b", settings=settings)

    assert ssh_target(spec("review.example.org")) == ("ci", "review.example.org", 29418)
    assert ssh_target(spec("bot@[::1]:2222")) == ("bot", "::1", 2222)
    with pytest.raises(GerritError, match=r"is not \[user@\]host\[:port\]"):
        ssh_target(spec("a b"))


def test_ready_to_vote_figures_in_text_json_and_on_the_page(
    gerrit_lab: tuple[ReviewLab, GerritDouble],
) -> None:
    rl, gerrit = gerrit_lab
    agreed = gerrit.upload({"result": "pass\n"})
    disputed = gerrit.upload({"result": "pass\n"})
    broken = gerrit.upload({"result": "broken\n"})  # the lab fails it: 3 attempts (retries = 2)
    gerrit.comment(agreed, "other-ci", "Build succeeded.", {"Verified": 1})
    gerrit.comment(disputed, "other-ci", "Build failed.", {"Verified": -1})
    gerrit.comment(disputed, "third-ci", "Build succeeded.", {"Verified": 1})  # not in ci_accounts
    ran = json.loads(review(rl, gerrit, "run", "--once", "--json").stdout)
    assert [(r["change"], r["vote"]) for r in ran] == [
        (str(broken), 0),
        (str(disputed), 1),
        (str(agreed), 1),
        (str(broken), 0),
        (str(broken), 0),
    ]
    report = json.loads(review(rl, gerrit, "discrepancies", "--json").stdout)
    [target] = report["targets"]
    figures = {k: target[k] for k in ("connector", "target", "patchsets", "compared", "agreed")}
    assert figures == {
        "connector": NAME,
        "target": "master",
        "patchsets": 3,
        "compared": 2,
        "agreed": 1,
    }
    assert (target["runs"], target["broken"], target["agreement"]) == (5, 3, 0.5)
    p50, p95 = target["to_result_p50_s"], target["to_result_p95_s"]
    assert 0 < p50 <= p95 < 600
    [found] = report["discrepancies"]
    assert (found["change"], found["account"], found["value"]) == (str(disputed), "other-ci", -1)

    text = review(rl, gerrit, "discrepancies").stdout
    assert f"{NAME} -> master: last 3 patch sets: agreement with other CI 1 of 2 (50%); " in text
    assert "broken runs 3 of 5 (60%); patch set to result p50 " in text
    assert f"change {disputed} patch set 1 " in text and "other-ci Verified -1" in text
    [only] = json.loads(review(rl, gerrit, "discrepancies", "--last", "1", "--json").stdout)[
        "targets"
    ]
    assert (only["patchsets"], only["compared"], only["agreed"], only["runs"]) == (1, 1, 1, 1)

    with Store.open(rl.lab.database_url) as store:
        client = TestClient(create_app(rl.lab, store), base_url="http://localhost")
        page = client.get("/review")
        assert page.status_code == 200
        assert "1 of 2 (50%)" in page.text and "3 of 5 (60%)" in page.text
        assert f">{disputed}<" in page.text and "other-ci" in page.text
        assert client.get("/review?last=x").status_code == 400
        client.close()


def test_an_unknown_server_key_is_an_error_naming_it(
    gerrit_lab: tuple[ReviewLab, GerritDouble], tmp_path: Path
) -> None:
    rl, gerrit = gerrit_lab
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    spec = spec_of(rl)
    settings = replace(gerrit_settings(spec), known_hosts_file=str(empty))
    connector = GerritConnector(replace(spec, settings=settings))

    async def first() -> object:
        return await anext(aiter(connector._stream()))

    with pytest.raises(GerritError, match=f"its SSH host key is not in {empty} "):
        asyncio.run(first())
    assert gerrit.streams_opened == 0


def test_the_double_answers_as_gerrit_documents(
    gerrit_lab: tuple[ReviewLab, GerritDouble],
) -> None:
    _, gerrit = gerrit_lab
    change = gerrit.upload({"result": "pass\n"})
    auth = (gerrit.user, gerrit.password)
    url = f"{gerrit.url}/a/changes/"
    answer = httpx.get(url, params={"q": "status:open project:xen"}, auth=auth)
    assert answer.status_code == 200 and answer.text.startswith(")]}'\n")
    [info] = json.loads(answer.text.removeprefix(")]}'\n"))
    assert info["_number"] == change and "revisions" not in info
    assert httpx.get(url, params={"q": "status:open"}).status_code == 401
    bogus = httpx.get(url, params={"q": "status:open", "o": "BOGUS"}, auth=auth)
    assert (bogus.status_code, bogus.text) == (400, '"BOGUS" is not a valid value for "-o"\n')
    review = f"{gerrit.url}/a/changes/xen~{change}/revisions/current/review"
    not_json = httpx.post(review, content=b"{}", auth=auth, headers={"Content-Type": "text/plain"})
    assert not_json.status_code == 400
    assert httpx.get(f"{gerrit.url}/a/changes/xen~9/messages", auth=auth).status_code == 404
    ref = f"refs/changes/{change % 100:02d}/{change}/1"
    listed = subprocess.run(
        ["git", "ls-remote", str(gerrit.repo.path), "refs/changes/*"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout.split() == [gerrit.repo.rev(ref), ref]


def test_a_change_closed_while_no_controller_listened_is_ended_at_the_start(
    gerrit_lab: tuple[ReviewLab, GerritDouble],
) -> None:
    rl, gerrit = gerrit_lab
    kept, abandoned = gerrit.upload({"result": "pass\n"}), gerrit.upload({"result": "pass\n"})

    async def scenario(store: Store) -> None:
        connector = GerritConnector(spec_of(rl))
        loop = ReviewLoop(rl.lab, store, {NAME: connector})
        for event in await connector.reconcile():
            loop.enqueue(event)
        gerrit.close(abandoned, "ABANDONED")  # the stream's event is missed: nobody listens
        [ended] = await loop.check_live()
        assert (ended.change, ended.state) == (str(abandoned), "queued")  # as it was
        [run] = [r for r in store.review.runs(NAME) if r.change == str(abandoned)]
        assert (run.state, run.reason, run.vote_state) == (
            "superseded",
            "the change was abandoned",
            "withdrawn",  # Gerrit has no pending state to finalise
        )
        [voted] = await loop.process_once()
        assert voted.change == str(kept)

    with Store.open(rl.lab.database_url) as store:
        asyncio.run(scenario(store))
    assert gerrit.votes(abandoned) == {} and gerrit.messages(abandoned) == []
    assert gerrit.votes(kept)
