"""On-demand testing (labgate.access) on both stores: access requests applied for on the page,
approved and refused from the CLI and the admin's page (audited); an approved user's on-demand
flight from their own tree (a real git repository fetched into the lab's real mirror) run by
the pool; every refusal naming its rule and leaving nothing behind; the flight seen only by its
owner and the lab admin until made public; the lab's own work before community work, and fair
share among users; the queue and why each flight waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from gitrepos import GitRepo
from labgate.access.fetch import Refused
from labgate.access.ondemand import OnDemand, submit
from labgate.access.queue import standing
from labgate.access.ratelimit import Limited, apply_limiter
from labgate.access.settings import ApplyLimit
from labgate.config import ConfigError, Lab, load_lab
from labgate.flight import mirrors_for
from labgate.flights import Flights
from labgate.git import git
from labgate.model import Blessing, FlightState, JobSpec, Outcome, Owner, StepSpec
from labgate.store import Store, now
from labgate.store import schema as t
from labgate.store.access import AccessRequests
from labgate.store.users import Users, Viewer
from labgate.web import create_app
from labs import job, labgate, local_host, step, toml_str, write_lab
from procs import wait_for

LAB_TOKEN = "lab-admin-token-0123456789"


@dataclass
class Access:
    lab: Lab
    store: Store
    client: TestClient
    fork: GitRepo
    """A community member's own tree: the lab's xen plus a commit on branch my-fix."""
    fix: str
    tokens: dict[str, str]

    def as_(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[who]}"} if who in self.tokens else {}

    def submit(self, who: str, **body: Any) -> Any:
        return self.client.post("/api/ondemand/flights", json=body, headers=self.as_(who))

    def reserve(self, who: str, host: str, length: str) -> Any:
        url = f"/api/ondemand/hosts/{host}/reserve"
        return self.client.post(url, json={"for": length}, headers=self.as_(who))

    def flight_ids(self) -> list[int]:
        return flight_ids(self.store)

    def ondemand_refs(self) -> str:
        return git(
            ["for-each-ref", "refs/labgate/ondemand"], git_dir=mirrors_for(self.lab).path("xen")
        )


def flight_ids(store: Store) -> list[int]:
    with store.engine.connect() as conn:
        return sorted(conn.execute(select(t.flight.c.id)).scalars())


def access_lab(root: Path, database_url: str, access: str = "") -> tuple[Path, GitRepo]:
    lab_dir = write_lab(
        root / "lab",
        trees={"xen": {"README": "xen\n"}},
        hosts=local_host("x86-0", flags=["arch-amd64"])
        + local_host("arm-0", flags=["arch-arm64"])
        + 'console = "echo console of $LABGATE_HOST; exec sleep 60"\n'
        + f"power_cycle = {toml_str(f'echo cycled $LABGATE_HOST >> {root}/power.log')}\n",
        jobs=job("build", step("compile", "cat xen/README; test ! -e xen/fix.c || cat xen/fix.c"))
        + job("test", step("run", "true"), depends=["build"]),
        database=database_url,
    )
    fork = GitRepo.init(root / "people" / "ada" / "xen")
    fork.git("pull", "-q", str(lab_dir.trees["xen"].path), "master")
    fork.branch("my-fix")
    fork.checkout("my-fix")
    fork.commit("sched: ada's fix", files={"fix.c": "ada was here\n"})
    with lab_dir.toml.open("a") as toml:
        toml.write(
            f"\n[web]\ntoken = {toml_str(LAB_TOKEN)}\n"
            f"\n[access]\nallow_urls = [{toml_str(str(root / 'people') + '/*')}]\n{access}"
        )
    return lab_dir.path, fork


@contextlib.contextmanager
def access_of(tmp_path: Path, database_url: str, settings: str = "") -> Iterator[Access]:
    """A lab with ``settings`` added to its ``[access]``: ada and bob approved, eve not."""
    lab_dir, fork = access_lab(tmp_path, database_url, settings)
    lab = load_lab(lab_dir)
    mirrors_for(lab).update("xen")
    store = Store.open(lab.database_url)
    store.sync_hosts(lab.hosts)
    users = Users(store.engine)
    users.add("ada", groups=["community"])
    users.add("bob", groups=["community"])
    users.add("eve", groups=["other"])  # a user, not approved for on-demand work
    tokens = {name: users.create_token(name) for name in ("ada", "bob", "eve")}
    tokens["admin"] = LAB_TOKEN
    client = TestClient(create_app(lab, store), base_url="http://localhost")
    try:
        yield Access(lab, store, client, fork, fork.rev("my-fix"), tokens)
    finally:
        client.close()
        store.close()


@pytest.fixture
def acc(tmp_path: Path, database_url: str) -> Iterator[Access]:
    with access_of(tmp_path, database_url) as access:
        yield access


# --- access requests ----------------------------------------------------------------------


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ))


def apply(client: TestClient, name: str, email: str, why: str = "test my arm64 fix") -> Any:
    form = {"name": name, "email": email, "affiliation": "Example Uni", "why": why}
    return client.post("/access", data=form)


def test_apply_on_the_page_then_approve_and_refuse_from_the_command_line(acc: Access) -> None:
    applied = apply(acc.client, "Ada Lovelace", "ada.l@example.com")
    assert applied.status_code == 200 and "request 1 is recorded" in applied.text
    assert apply(acc.client, "Mallory", "mallory@example.com", why="").status_code == 400
    missing = apply(acc.client, "Mallory", "not-a-mail")
    assert missing.status_code == 400 and "not a mail address" in missing.text
    elsewhere = acc.client.post(
        "/access",
        data={"name": "X", "email": "x@example.com", "affiliation": "Y", "why": "z"},
        headers={"origin": "http://evil.example"},
    )
    assert elsewhere.status_code == 403
    apply(acc.client, "Mallory", "mallory@example.com")

    listed = json.loads(run(*labgate(acc.lab.dir, "access", "list", "--json")).stdout)
    assert [(r["id"], r["state"], r["email"]) for r in listed] == [
        (2, "pending", "mallory@example.com"),
        (1, "pending", "ada.l@example.com"),
    ]
    approved = run(*labgate(acc.lab.dir, "access", "approve", "1", "--by", "root"))
    assert approved.returncode == 0, approved.stderr
    token = approved.stdout.strip()
    assert token.startswith("lgt_") and approved.stdout.count("\n") == 1  # the token alone
    assert "user ada.l@example.com" in approved.stderr
    again = run(*labgate(acc.lab.dir, "access", "approve", "1"))
    assert again.returncode == 2 and "request 1 was approved already (by root" in again.stderr
    nowhy = run(*labgate(acc.lab.dir, "access", "refuse", "2"))
    assert nowhy.returncode == 2 and "--why" in nowhy.stderr
    refused = run(*labgate(acc.lab.dir, "access", "refuse", "2", "--why", "no reason given"))
    assert refused.returncode == 0, refused.stderr
    assert run(*labgate(acc.lab.dir, "access", "approve", "7")).stderr.count("no access request 7")

    decided = {r.id: r for r in AccessRequests(acc.store.engine).requests()}
    assert (decided[1].state, decided[1].decided_by, decided[1].user, decided[1].group) == (
        "approved", "root", "ada.l@example.com", "community")  # fmt: skip
    assert (decided[2].state, decided[2].decided_by, decided[2].decision_why) == (
        "refused", "lab admin", "no reason given")  # fmt: skip
    assert decided[1].decided and decided[2].decided
    me = acc.client.get("/api/ondemand", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["user"] == "ada.l@example.com"
    assert me.json()["quota"] == {"flights": 2, "host_hours": 20.0}


def test_the_access_form_is_rate_limited_per_address_and_in_all(
    tmp_path: Path, database_url: str
) -> None:
    limit = "apply_limit = { per_address = 2, total = 3, window = 60 }\n"
    lab_dir, _ = access_lab(tmp_path, database_url, limit)
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        app = create_app(lab, store)
        first = TestClient(app, base_url="http://localhost", client=("192.0.2.1", 4000))
        other = TestClient(app, base_url="http://localhost", client=("192.0.2.2", 4000))
        assert first.get("/access").status_code == 200
        assert apply(first, "Ada", "ada@example.com").status_code == 200
        over = apply(first, "Ada", "ada@example.com")
        assert over.status_code == 429
        assert 55 <= int(over.headers["retry-after"]) <= 60
        assert "[access] apply_limit allows 2 from one address per 60 s" in over.text
        assert apply(other, "Bob", "bob@example.com").status_code == 200  # its own count
        everyone = other.get("/access")
        assert everyone.status_code == 429 and "allows 3 in all per 60 s" in everyone.text
        assert [r.name for r in AccessRequests(store.engine).requests()] == ["Bob", "Ada"]
        first.close()
        other.close()


def test_a_users_submissions_are_rate_limited(tmp_path: Path, database_url: str) -> None:
    limit = "submit_limit = { per_user = 2, window = 60 }\n"
    with access_of(tmp_path, database_url, limit) as acc:
        assert acc.submit("ada", branch="main").status_code == 201
        refused = acc.submit("ada", branch="nope")
        assert refused.status_code == 404  # refused by a rule, and counted all the same
        over = acc.submit("ada", branch="main")
        assert over.status_code == 429 and over.json()["rule"] == "submit_limit", over.text
        assert "[access] submit_limit allows 2 from one user per 60 s" in over.json()["error"]
        assert 55 <= int(over.headers["retry-after"]) <= 60
        # flights and reservations together
        held = acc.reserve("ada", "arm-0", "1h")
        assert held.status_code == 429 and held.json()["rule"] == "submit_limit"
        assert acc.reserve("bob", "arm-0", "1h").status_code == 201
        assert len(acc.flight_ids()) == 1


def test_the_rate_limit_forgets_requests_older_than_its_window() -> None:
    clock = [1000.0]
    limiter = apply_limiter(ApplyLimit(per_address=2, total=3, window=60), lambda: clock[0])
    limiter.hit("a")
    clock[0] += 30
    limiter.hit("a")
    with pytest.raises(Limited) as over:
        limiter.hit("a")
    assert (over.value.rule, over.value.retry_after) == ("per_address", 30)
    limiter.hit("b")
    with pytest.raises(Limited) as everyone:
        limiter.hit("c")
    assert (everyone.value.rule, everyone.value.retry_after) == ("total", 30)
    clock[0] += 30  # the first request leaves the window: one more, from anyone
    limiter.hit("a")
    with pytest.raises(Limited):
        limiter.hit("c")  # the refused ones were not counted, but the window is full again


def test_the_admin_page_approves_with_its_csrf_value_and_shows_the_token_once(
    acc: Access,
) -> None:
    apply(acc.client, "Grace Hopper", "grace@example.com")
    assert acc.client.get("/access/requests").status_code == 403  # anonymous
    assert acc.client.get("/access/requests", headers=acc.as_("ada")).status_code == 403
    approve = {"group": "arm-testers"}
    refused = acc.client.post("/access/requests/1/approve", data=approve)
    assert refused.status_code == 403  # not logged in
    acc.client.post("/login", data={"token": LAB_TOKEN})
    page = acc.client.get("/access/requests")
    assert page.status_code == 200 and "Grace Hopper" in page.text
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    assert acc.client.post("/access/requests/1/approve", data=approve).status_code == 403
    shown = acc.client.post("/access/requests/1/approve", data={**approve, "csrf": csrf})
    assert shown.status_code == 200
    token = shown.text.split('<code id="token">')[1].split("</code>")[0]
    assert "approved by lab admin" in shown.text
    assert token not in acc.client.get("/access/requests").text  # shown that once
    viewer = Users(acc.store.engine).viewer_for_token(token)
    assert viewer is not None and viewer.groups == {"arm-testers"}
    api = acc.client.get("/api/access/requests", headers=acc.as_("admin")).json()["items"]
    assert api[0]["state"] == "approved" and api[0]["group"] == "arm-testers"


def test_the_api_approves_and_refuses_with_the_labs_token(acc: Access) -> None:
    apply(acc.client, "Ada", "ada2@example.com")
    apply(acc.client, "Bob", "bob2@example.com")
    path = "/api/access/requests/{}/{}"
    assert (
        acc.client.post(path.format(1, "approve"), json={}, headers=acc.as_("ada")).status_code
        == 403
    )
    given = acc.client.post(
        path.format(1, "approve"), json={"user": "ada2"}, headers=acc.as_("admin")
    )
    assert given.status_code == 200 and given.json()["user"] == "ada2"
    assert Users(acc.store.engine).viewer_for_token(given.json()["token"]) is not None
    nowhy = acc.client.post(path.format(2, "refuse"), json={}, headers=acc.as_("admin"))
    assert nowhy.status_code == 409 and "says why" in nowhy.json()["error"]
    refused = acc.client.post(
        path.format(2, "refuse"), json={"why": "spam"}, headers=acc.as_("admin")
    )
    assert refused.json()["state"] == "refused" and "token" not in refused.json()


# --- on-demand flights ----------------------------------------------------------------------


def test_an_approved_users_own_tree_runs_on_the_pool_seen_by_them_alone(acc: Access) -> None:
    answer = acc.submit("ada", branch="main", jobs=["build"], flags=["arch-arm64"],
                        url=str(acc.fork.path), ref="my-fix")  # fmt: skip
    assert answer.status_code == 201, answer.text
    fid = answer.json()["id"]
    flight = acc.store.get_flight(fid)
    assert flight.blessing is Blessing.ADHOC and flight.revisions["xen"] == acc.fix
    assert [j.name for j in flight.jobs] == ["build"]
    assert fid in acc.store.active_pool_flights()
    assert acc.ondemand_refs().count(acc.fix) == 1  # the commit, in the lab's mirror
    for who, status in (("ada", 200), ("admin", 200), ("bob", 404), ("eve", 404), ("anon", 404)):
        assert acc.client.get(f"/api/flights/{fid}", headers=acc.as_(who)).status_code == status
        listed = acc.client.get("/api/flights", headers=acc.as_(who)).json()["items"]
        assert (fid in [f["id"] for f in listed]) == (status == 200), who

    asyncio.run(Flights(acc.lab, acc.store, poll_s=0.05).serve(until_idle=True))
    done = acc.store.get_flight(fid)
    assert done.state is FlightState.FINISHED and done.outcome is Outcome.PASS
    assert done.jobs[0].host == "arm-0"  # the flags asked for
    log = acc.client.get(f"/flights/{fid}/jobs/build/steps/0/log.txt", headers=acc.as_("ada"))
    assert "ada was here" in log.text  # the user's tree was checked out
    assert acc.client.get(f"/flights/{fid}/jobs/build/steps/0/log.txt").status_code == 404

    public = f"/api/ondemand/flights/{fid}/public"
    assert acc.client.post(public, headers=acc.as_("bob")).status_code == 404
    assert acc.client.post(public, headers=acc.as_("ada")).json() == {"id": fid, "public": True}
    assert acc.client.get(f"/api/flights/{fid}").status_code == 200


def expired(acc: Access) -> dict[str, str]:
    users = Users(acc.store.engine)
    users.add("old", groups=["community"])
    return {"authorization": "Bearer " + users.create_token("old", expires=now() - timedelta(1))}


REFUSALS: list[tuple[str, dict[str, Any], int, str]] = [
    ("unknown ref", {"ref": "no-such-branch"}, 422, "ref"),
    ("bad ref", {"ref": "--upload-pack=touch x"}, 422, "ref"),
    ("url not allowed", {"url": "/etc/xen"}, 403, "allow_urls"),
    ("option as url", {"url": "--upload-pack=sh"}, 403, "allow_urls"),
    ("unknown branch", {"branch": "nope"}, 404, "branch"),
    ("glob matching no job", {"jobs": ["tempest-*"]}, 422, "jobs"),
    ("flags no host has", {"flags": ["arch-riscv"]}, 422, "flags"),
    ("unknown tree", {"tree": "linux"}, 422, "tree"),
    ("not approved", {"who": "eve"}, 403, "approved user"),
    ("the lab admin is no community user", {"who": "admin"}, 403, "approved user"),
    ("unknown field", {"colour": "red"}, 400, "request"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_each_refusal_names_its_rule_and_creates_nothing(
    acc: Access, case: tuple[str, dict[str, Any], int, str]
) -> None:
    _, change, status, rule = case
    body = {"branch": "main", "url": str(acc.fork.path), "ref": "my-fix", **change}
    who = body.pop("who", "ada")
    answer = acc.submit(who, **body)
    assert (answer.status_code, answer.json()["rule"]) == (status, rule), answer.text
    assert acc.flight_ids() == [] and acc.ondemand_refs() == ""
    assert not list(acc.lab.mirror_dir.glob("ondemand-*"))  # no quarantine left


def test_tokens_that_expired_or_were_revoked_are_refused(acc: Access) -> None:
    answer = acc.client.post("/api/ondemand/flights", json={"branch": "main"}, headers=expired(acc))
    assert answer.status_code == 403 and "not valid" in answer.json()["error"]
    Users(acc.store.engine).revoke("bob")
    assert acc.submit("bob", branch="main").status_code == 403
    assert acc.flight_ids() == []


def test_over_quota_is_refused_naming_the_quota(acc: Access) -> None:
    for _ in range(2):
        assert acc.submit("ada", branch="main").status_code == 201
    over = acc.submit("ada", branch="main")
    assert over.status_code == 429 and over.json()["rule"] == "quota"
    assert "[access] quota of ada allows 2 at once" in over.json()["error"]
    assert len(acc.flight_ids()) == 2
    assert acc.submit("bob", branch="main").status_code == 201  # bob's quota is his own


def test_the_group_quota_and_host_hours_hold(tmp_path: Path, database_url: str) -> None:
    quotas = ("quota = { flights = 5, host_hours = 1 }\n"
              "groups = { community = { flights = 1 } }\n")  # fmt: skip
    lab_dir, _ = access_lab(tmp_path, database_url, quotas)
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        users = Users(store.engine)
        users.add("ada", groups=["community"])
        users.add("bob", groups=["community"])
        client = TestClient(create_app(lab, store), base_url="http://localhost")
        ada = {"authorization": "Bearer " + users.create_token("ada")}
        bob = {"authorization": "Bearer " + users.create_token("bob")}
        first = client.post("/api/ondemand/flights", json={"branch": "main"}, headers=ada)
        assert first.status_code == 201
        group = client.post("/api/ondemand/flights", json={"branch": "main"}, headers=bob)
        assert group.status_code == 429
        assert "[access.groups.community] allows 1 at once" in group.json()["error"]
        fid = first.json()["id"]
        job_id = store.flight_jobs(fid)[0].id
        store.start_job(job_id, "x86-0")  # a job on a host for 2 hours, then ended
        with store.engine.begin() as conn:
            conn.execute(t.job.update().where(t.job.c.id == job_id)
                         .values(started=now() - timedelta(hours=2)))  # fmt: skip
        store.request_cancel(fid, "test")
        store.set_flight_state(fid, FlightState.CANCELLED, Outcome.CANCELLED)
        hours = client.post("/api/ondemand/flights", json={"branch": "main"}, headers=ada)
        assert hours.status_code == 429 and "allows 1h a week" in hours.json()["error"]
        client.close()


RACES = [
    # (lab.toml's quotas, who submits, the rule each refusal names)
    ("quota = { flights = 3 }\n", ["ada"] * 8, "[access] quota of ada allows 3 at once"),
    (
        "quota = { flights = 8 }\ngroups = { community = { flights = 3 } }\n",
        ["ada", "bob"] * 4,
        "[access.groups.community] allows 3 at once",
    ),
]


@pytest.mark.parametrize("race", RACES, ids=["user", "group"])
def test_submissions_at_the_same_instant_are_decided_one_after_the_other(
    tmp_path: Path, database_url: str, race: tuple[str, list[str], str]
) -> None:
    quotas, who, rule = race
    with access_of(tmp_path, database_url, quotas) as acc:
        lab, store, mirrors = acc.lab, acc.store, mirrors_for(acc.lab)
        viewers = [Users(store.engine).viewer(name) for name in who]
        start = threading.Barrier(len(who))

        def one(viewer: Viewer) -> int | Refused:
            start.wait()  # every submission checks the quota at the same instant
            try:
                return submit(lab, store, mirrors, viewer, OnDemand("main"))
            except Refused as refused:
                return refused

        with ThreadPoolExecutor(len(who)) as pool:
            answers = list(pool.map(one, viewers))
        accepted = [a for a in answers if isinstance(a, int)]
        refused = [a for a in answers if isinstance(a, Refused)]
        assert len(accepted) == 3 and len(refused) == len(who) - 3, answers
        assert all(r.rule == "quota" and rule in r.message for r in refused), refused
        assert flight_ids(store) == sorted(accepted)  # a refusal left no flight


def test_a_fetch_over_the_size_limit_or_the_time_limit_is_refused(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab_dir, fork = access_lab(tmp_path, database_url, "max_fetch_mb = 0.05\nfetch_timeout = 1\n")
    fork.commit("big", files={"blob.bin": os.urandom(200_000).hex()})
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        users = Users(store.engine)
        users.add("ada", groups=["community"])
        client = TestClient(create_app(lab, store), base_url="http://localhost")
        ada = {"authorization": "Bearer " + users.create_token("ada")}
        body = {"branch": "main", "url": str(fork.path), "ref": "my-fix"}
        big = client.post("/api/ondemand/flights", json=body, headers=ada)
        assert big.status_code == 413 and big.json()["rule"] == "max_fetch_mb", big.text
        # an ssh transport that never answers
        monkeypatch.setenv("GIT_SSH_COMMAND", "sleep 5; true")
        slow = {**body, "url": f"ssh://git@example.invalid{tmp_path}/people/x"}
        text = lab.file.read_text().replace("allow_urls = [", 'allow_urls = ["ssh://*", ')
        lab.file.write_text(text)
        client = TestClient(create_app(load_lab(lab_dir), store), base_url="http://localhost")
        timed = client.post("/api/ondemand/flights", json=slow, headers=ada)
        assert timed.status_code == 422 and timed.json()["rule"] == "fetch_timeout", timed.text
        assert flight_ids(store) == []
        client.close()
    refs = git(["for-each-ref", "refs/labgate"], git_dir=mirrors_for(lab).path("xen"))
    assert refs == "" and not list(lab.mirror_dir.glob("ondemand-*"))


def test_access_settings_are_checked(tmp_path: Path) -> None:
    lab_dir, _ = access_lab(tmp_path, f"sqlite:///{tmp_path}/x.db", "max_fetch_mb = -1\n")
    with pytest.raises(ConfigError) as error:
        load_lab(lab_dir)
    assert "access.max_fetch_mb" in str(error.value)


# --- fairness and the queue -------------------------------------------------------------------


def _flight(
    store: Store, owner: str | None, n: int = 1, blessing: Blessing = Blessing.ADHOC
) -> int:
    jobs = [JobSpec(f"j{i}", (StepSpec("s", "true"),)) for i in range(n)]
    fid = store.create_flight("main", blessing, {}, jobs, None, Owner(owner) if owner else None)
    store.submit_flight(fid)
    return fid


def test_the_labs_own_work_goes_first_and_users_share_the_rest(acc: Access) -> None:
    store = acc.store
    allocator = store.slots(acc.lab.hosts, "test-controller")  # two hosts of one slot
    allocator.sync()
    ada = _flight(store, "ada", 3)
    bob = _flight(store, "bob", 3)
    lab = _flight(store, None, 2, Blessing.REAL)
    bisect = _flight(store, None, 1, Blessing.BISECT)
    first = allocator.claim()
    assert [c.flight_id for c in first] == [lab, lab]
    running = [c.job_id for c in first]  # in the order they started
    order = [lab, lab]
    while running:
        ended = running.pop(0)  # the job started first ends first: its host takes the next
        allocator.release(ended)
        store.finish_job(ended, Outcome.PASS)
        claimed = allocator.claim()
        running += [c.job_id for c in claimed]
        order += [c.flight_id for c in claimed]
    assert order[:3] == [lab, lab, bisect]
    users = order[3:]
    assert sorted(users) == sorted([ada] * 3 + [bob] * 3)
    # whoever has fewer jobs on a host goes next: they take turns
    assert all(users[i] != users[i + 1] for i in range(len(users) - 1)), users


def test_fair_share_goes_by_the_jobs_each_user_has_on_hosts(acc: Access) -> None:
    store = acc.store
    first = store.slots(acc.lab.hosts, "c1")
    first.sync()
    ada = _flight(store, "ada", 3)
    claims = first.claim()
    assert [c.flight_id for c in claims] == [ada, ada]  # nobody else waits: both hosts
    bob = _flight(store, "bob", 1)
    first.release(claims[0].job_id)
    store.finish_job(claims[0].job_id, Outcome.PASS)
    other = store.slots(acc.lab.hosts, "c2")  # another controller, which served no one yet
    assert [c.flight_id for c in other.claim()] == [bob]  # ada has a job on a host, bob none


@pytest.mark.parametrize("waiting", [40, 64])
def test_lab_jobs_that_cannot_start_do_not_hold_back_community_work(
    acc: Access, waiting: int
) -> None:
    """``waiting`` lab jobs that cannot start: more than a claim's batch (32); with 64, two
    whole batches of them come before the on-demand job whichever batch a claim starts on."""
    store = acc.store
    allocator = store.slots(acc.lab.hosts, "test-controller")  # x86-0 and arm-0, one slot each
    allocator.sync()
    steps = (StepSpec("s", "true"),)
    build = JobSpec("build", steps, requires=("arch-arm64",))
    tests = [JobSpec(f"test-{i}", steps, depends=("build",)) for i in range(waiting - 10)]
    arm = [JobSpec(f"arm-{i}", steps, requires=("arch-arm64",)) for i in range(10)]
    lab = store.create_flight("main", Blessing.REAL, {}, [build, *tests, *arm])
    store.submit_flight(lab)
    assert [(c.job, c.host) for c in allocator.claim()] == [("build", "arm-0")]
    # the lab's jobs wait (for build, or for arm-0); none could use x86-0: community work can
    ada = _flight(store, "ada")
    (place,) = standing(acc.lab, store)  # and the queue does not say they go first
    assert place.why.startswith("next:"), place.why
    assert [(c.flight_id, c.host) for c in allocator.claim()] == [(ada, "x86-0")]

    # a lab job that can start still goes first
    (held,) = store.flight_jobs(ada)
    allocator.release(held.id)
    store.finish_job(held.id, Outcome.PASS)
    bob = _flight(store, "bob")
    quick = _flight(store, None, 1, Blessing.REAL)
    assert [(c.flight_id, c.host) for c in allocator.claim()] == [(quick, "x86-0")]
    assert [j.outcome for j in store.flight_jobs(bob)] == [Outcome.QUEUED]


def test_the_queue_says_where_each_flight_stands_and_why(acc: Access) -> None:
    acc.store.slots(acc.lab.hosts, "test-controller").sync()  # the hosts' slots, free
    ada = acc.submit("ada", branch="main", jobs=["build"]).json()["id"]
    bob = acc.submit("bob", branch="main", jobs=["build"], public=True).json()["id"]
    lab = _flight(acc.store, None, 1, Blessing.REAL)
    rows = acc.client.get("/api/ondemand/queue", headers=acc.as_("ada")).json()["items"]
    assert [(r["flight"], r["place"]) for r in rows] == [(ada, 1), (bob, 2)]
    assert all(r["why"].startswith("priority: 1 queued job(s) of the lab's own") for r in rows)
    seen_by_bob = acc.client.get("/api/ondemand/queue", headers=acc.as_("bob")).json()["items"]
    assert [r["flight"] for r in seen_by_bob] == [bob]  # ada's is hers alone
    anyone = acc.client.get("/ondemand/queue")
    assert anyone.status_code == 200 and f"/flights/{bob}" in anyone.text
    assert f"/flights/{ada}" not in anyone.text
    acc.store.set_flight_state(lab, FlightState.CANCELLED, Outcome.CANCELLED)
    whys = {p.flight: p.why for p in standing(acc.lab, acc.store)}
    assert whys[bob].startswith("fair share: 1 flight(s)")
    assert whys[ada].startswith(("next:", "busy:"))
    listed = json.loads(run(*labgate(acc.lab.dir, "access", "queue", "--json")).stdout)
    assert [r["flight"] for r in listed] == [ada, bob]


# --- host time ------------------------------------------------------------------------------


def test_host_time_reserves_a_host_and_gives_its_console_and_power_for_the_window_only(
    acc: Access,
) -> None:
    reserve = "/api/ondemand/hosts/arm-0/reserve"
    held = acc.client.post(reserve, json={"for": "1h"}, headers=acc.as_("ada"))
    assert held.status_code == 201 and held.json()["user"] == "ada", held.text
    taken = acc.client.post(reserve, json={"for": "1h"}, headers=acc.as_("bob"))
    assert taken.status_code == 409 and "reserved by ada" in taken.json()["error"]
    for who, status in (("bob", 403), ("eve", 403), ("anon", 403)):
        console = acc.client.get("/api/ondemand/hosts/arm-0/console", headers=acc.as_(who))
        assert console.status_code == status, who
    console = acc.client.get("/api/ondemand/hosts/arm-0/console?seconds=1", headers=acc.as_("ada"))
    assert console.status_code == 200 and console.text == "console of arm-0\n"
    cycled = acc.client.post("/api/ondemand/hosts/arm-0/power-cycle", headers=acc.as_("ada"))
    assert cycled.json() == {"ok": True, "output": ""}
    assert (acc.lab.dir.parent / "power.log").read_text() == "cycled arm-0\n"
    nopower = acc.client.post(reserve.replace("arm-0", "x86-0"), json={"for": "30m"},
                              headers=acc.as_("bob"))  # fmt: skip
    assert nopower.status_code == 201
    refused = acc.client.post("/api/ondemand/hosts/x86-0/power-cycle", headers=acc.as_("bob"))
    assert refused.status_code == 409 and refused.json()["rule"] == "power_cycle"

    # the reserved host is out of the pool: a job that needs it waits, and says why
    fid = acc.submit("bob", branch="main", jobs=["build"], flags=["arch-arm64"]).json()["id"]
    (place,) = [p for p in standing(acc.lab, acc.store) if p.flight == fid]
    assert place.why == "no host: every host with arch-arm64 is quarantined or reserved"

    # a window that ends ends by itself: the console is refused, the pool takes the host back
    short = acc.client.post(reserve, json={"for": "1s"}, headers=acc.as_("ada"))
    assert short.status_code == 201
    wait_for("the reservation to end", lambda: acc.store.hosts.statuses(["arm-0"])["arm-0"]
             .reserved_by is None, timeout=30)  # fmt: skip
    after = acc.client.get("/api/ondemand/hosts/arm-0/console", headers=acc.as_("ada"))
    assert after.status_code == 403 and after.json()["rule"] == "reservation"
    asyncio.run(Flights(acc.lab, acc.store, poll_s=0.05).serve(until_idle=True))
    done = acc.store.get_flight(fid)
    assert done.outcome is Outcome.PASS and done.jobs[0].host == "arm-0"


def test_reserved_host_hours_count_while_held_and_after(tmp_path: Path, database_url: str) -> None:
    quotas = ("quota = { flights = 5, host_hours = 2 }\n"
              "groups = { community = { host_hours = 3 } }\n")  # fmt: skip
    with access_of(tmp_path, database_url, quotas) as acc:
        store, reserve = acc.store, acc.reserve

        def submit(name: str) -> Any:
            return acc.submit(name, branch="main")

        assert reserve("ada", "arm-0", "2h").status_code == 201
        # held now: the whole window counts, so no flight can come on top of it
        over = submit("ada")
        assert over.status_code == 429 and over.json()["rule"] == "quota", over.text
        assert "host time in the last 7 days is 2.00h" in over.json()["error"]
        # and it counts for the group: bob's 2h would make 4h of the community's 3h
        group = reserve("bob", "x86-0", "2h")
        assert group.status_code == 429, group.text
        assert "[access.groups.community]: 3h a week" in group.json()["error"]
        assert store.hosts.statuses(["x86-0"])["x86-0"].reserved_by is None
        assert reserve("bob", "x86-0", "1h").status_code == 201

        # ended early (the admin released it): only the time held counts
        store.hosts.release("arm-0", "admin")
        assert submit("ada").status_code == 201
        # a window that is over counts for the week after it
        with store.engine.begin() as conn:
            conn.execute(t.host_time.update().where(t.host_time.c.user == "ada")
                         .values(start=now() - timedelta(hours=5),
                                 until=now() - timedelta(hours=3)))  # fmt: skip
        after = submit("ada")
        assert after.status_code == 429 and "allows 2h a week" in after.json()["error"]
        with store.engine.begin() as conn:
            conn.execute(t.host_time.update().where(t.host_time.c.user == "ada")
                         .values(start=now() - timedelta(days=8),
                                 until=now() - timedelta(days=7, hours=1)))  # fmt: skip
        assert submit("ada").status_code == 201  # more than a week ago


def test_host_time_refusals(acc: Access) -> None:
    reserve = "/api/ondemand/hosts/{}/reserve"
    cases = [
        ("arm-0", {"for": "two hours"}, "ada", 400, "for"),
        ("arm-0", {"for": "21h"}, "ada", 429, "quota"),  # quota: 20 host-hours a week
        ("nohost", {"for": "1h"}, "ada", 404, "host"),
        ("arm-0", {"for": "1h"}, "eve", 403, "approved user"),
        ("arm-0", {}, "ada", 400, "request"),
    ]
    for host, body, who, status, rule in cases:
        answer = acc.client.post(reserve.format(host), json=body, headers=acc.as_(who))
        assert (answer.status_code, answer.json()["rule"]) == (status, rule), (host, body, who)
    acc.store.hosts.quarantine("arm-0", "disk on fire")
    sick = acc.client.post(reserve.format("arm-0"), json={"for": "1h"}, headers=acc.as_("ada"))
    assert sick.status_code == 409 and "disk on fire" in sick.json()["error"]
    assert acc.store.hosts.statuses(["arm-0"])["arm-0"].reserved_by is None
