"""No route of the dashboard or its API lets anyone outside an embargo's group learn of its work.

The routes are read from the app itself (a route added later is covered, and a new kind of path
parameter fails the test until it is taught here). Each is requested with the ids of real
embargoed things and of things that do not exist, as anonymous, as a user of another group and
as a member: outsiders get the same status and the same body (but for the id asked) for both, a
canary string planted in the embargoed commit's subject, branch name, logs, step reasons,
verdict, push, bisection and host history never reaches them, and members see all of it. Both
stores, real git mirror, real logs on disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from labgate.config import Lab, load_lab
from labgate.flight import mirrors_for
from labgate.model import Blessing, Embargo, FlightState, JobSpec, Outcome, StepSpec
from labgate.store import Store, StoreError
from labgate.store.users import Users
from labgate.web import create_app
from labs import job, local_host, step, write_lab

CANARY = "CANARY-5f1e9a"
GROUP = "security"
HIDDEN_BRANCH = f"xsa-{CANARY}"
MISSING_BRANCH = "xsa-NOSUCH-0a0a0a"
LAB_TOKEN = "lab-admin-token-0123456789"
FAR = datetime(2099, 1, 1, tzinfo=UTC)


@dataclass
class Leak:
    lab: Lab
    store: Store
    client: TestClient
    tokens: dict[str, str]
    """viewer name -> Authorization header value ("" for anonymous)"""
    public: list[int]
    hidden: int
    missing: int
    bisection: int
    users: Users
    secret: str
    """The embargoed commit (its subject and its file fix.c hold the canary)."""

    def get(self, who: str, path: str, method: str = "GET") -> Any:
        headers = {"authorization": self.tokens[who]} if self.tokens[who] else {}
        return self.client.request(method, path, headers=headers)


def _jobs() -> list[JobSpec]:
    return [
        JobSpec("build", (StepSpec("compile", "true"),)),
        JobSpec("test", (StepSpec("run", "true"),), depends=("build",)),
    ]


def _run(
    store: Store, log_dir: Path, flight_id: int, text: str, *, running: str | None = None
) -> None:
    """Give the flight's jobs logs and outcomes; ``running`` stays running on host h0."""
    store.set_flight_state(flight_id, FlightState.RUNNING)
    for stored in store.flight_jobs(flight_id):
        name = stored.spec.name
        store.start_job(stored.id, "h0")
        rel = f"{flight_id}/{name}/0.log"
        (log_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (log_dir / rel).write_text(f"{name}: {text}\n")
        store.start_step(stored.step_ids[0], rel)
        if name == running:
            continue
        store.finish_step(stored.step_ids[0], Outcome.FAIL, exit_status=1, duration_s=2.0,
                          reason=f"failed: {text}")  # fmt: skip
        store.finish_job(stored.id, Outcome.FAIL, f"reason: {text}")
        store.hosts.record_job("h0", stored.id, 1, Outcome.FAIL, f"host saw {text}",
                               quarantine_after=99)  # fmt: skip
    if running is None:
        store.set_flight_state(flight_id, FlightState.FINISHED, Outcome.FAIL)


def make_lab(root: Path, database_url: str) -> tuple[Lab, str]:
    lab_dir = write_lab(
        root,
        trees={"xen": {"README": "xen\n"}},
        hosts=local_host("h0", flags=["embargo-ok"]) + local_host("h1"),
        jobs=job("build", step("compile", "true")) + job("test", step("run", "true")),
        database=database_url,
    )
    repo = lab_dir.trees["xen"]
    repo.git("checkout", "-q", "-b", "xsa")
    secret = repo.commit(f"xen: fix {CANARY}", files={"fix.c": f"/* {CANARY} */\n"})
    repo.git("checkout", "-q", "master")
    with lab_dir.toml.open("a") as toml:
        toml.write(
            f'\n[[branch]]\nname = "{HIDDEN_BRANCH}"\ntree = "xen"\nstaging = "xsa"\n'
            f'embargo = {{ group = "{GROUP}", until = "2099-01-01T00:00:00Z" }}\n'
            f'\n[web]\ntoken = "{LAB_TOKEN}"\n'
        )
    lab = load_lab(lab_dir.path)
    mirrors_for(lab).update("xen")
    return lab, secret


def _store_work(lab: Lab, store: Store, secret: str) -> tuple[list[int], int, int, int]:
    """Public flights of main, then the embargoed flight (with verdict, push, bisection), then
    one more public flight; (public ids, hidden id, a missing id, the hidden bisection)."""
    base = mirrors_for(lab).resolve("xen", "master")
    public = []
    for _ in range(2):
        fid = store.create_flight("main", Blessing.REAL, {"xen": base}, _jobs())
        _run(store, lab.log_dir, fid, "public words")
        public.append(fid)
    embargo = Embargo(GROUP, FAR)
    hidden = store.create_flight(HIDDEN_BRANCH, Blessing.REAL, {"xen": secret}, _jobs(), embargo)
    _run(store, lab.log_dir, hidden, f"secret {CANARY}", running="test")
    store.record_verdict(hidden, public[0], False, {"details": [{"job": CANARY}]})
    store.record_push(HIDDEN_BRANCH, hidden, "xen", secret, base, "not-pushed", CANARY)
    bisection = store.create_bisection(HIDDEN_BRANCH, "build", "compile", CANARY, hidden, None)
    graph = {"nodes": [{"id": secret, "label": CANARY}], "edges": []}
    store.update_bisection(bisection, state="found", executions=2, rounds=1, flights=[hidden],
                           graph=graph, culprit_tree="xen", culprit_commit=secret)  # fmt: skip
    last = store.create_flight("main", Blessing.REAL, {"xen": base}, _jobs())
    _run(store, lab.log_dir, last, "public words")
    public.append(last)
    return public, hidden, last + 1, bisection


@pytest.fixture
def leak(tmp_path: Path, database_url: str) -> Iterator[Leak]:
    lab, secret = make_lab(tmp_path / "lab", database_url)
    store = Store.open(lab.database_url)
    store.sync_hosts(lab.hosts)
    users = Users(store.engine)
    users.add("alice", email="alice@sec.example", groups=[GROUP], admin_of=[GROUP])
    users.add("bob", email="bob@other.example", groups=["other"])
    tokens = {
        "anonymous": "",
        "outsider": "Bearer " + users.create_token("bob"),
        "member": "Bearer " + users.create_token("alice"),
    }
    public, hidden, missing, bisection = _store_work(lab, store, secret)
    client = TestClient(create_app(lab, store), base_url="http://localhost")
    try:
        yield Leak(lab, store, client, tokens, public, hidden, missing, bisection, users, secret)
    finally:
        client.close()
        store.close()


# --- the routes, from the app -----------------------------------------------------------------

OUTSIDERS = ("anonymous", "outsider")
MISSING_SHA = "f" * 40  # a revision no flight tested


def app_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves, read from the app object."""
    out = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Route):
            out += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
        elif isinstance(route, Mount):
            out.append(("GET", route.path + "/style.css"))
    return out


def fill(leak: Leak, path: str, hidden: bool) -> str:
    """The path with its parameters naming embargoed things, or things that do not exist."""
    values = {
        "flight_id": str(leak.hidden if hidden else leak.missing),
        "bisection_id": str(leak.bisection if hidden else leak.bisection + 1),
        "job": "build",
        "step": "compile",
        "metric": "time",
        "seq": "0",
        "group": GROUP if hidden else "nogroup",
        "branch": HIDDEN_BRANCH if hidden else MISSING_BRANCH,
        "name": ("h0" if path.startswith(("/hosts", "/api/hosts")) else
                 HIDDEN_BRANCH if hidden else MISSING_BRANCH),
        "tree": "xen",
        "sha": leak.secret if hidden else MISSING_SHA,
        "path": "fix.c",
        "identity": "0" * 20,  # a finding: triage is the lab admin's, hidden or not
        "request_id": "1" if hidden else "2",  # an access request: the lab admin's alone
    }  # fmt: skip
    for part in path.split("{")[1:]:
        name = part.split("}")[0].split(":")[0]
        assert name in values, f"route {path}: the leak test has no values for {{{name}}}"
        path = path.replace("{" + part.split("}")[0] + "}", values[name])
    return path


def normalised(leak: Leak, text: str, template: str) -> str:
    """A hidden thing's response written as if the missing thing had been asked for (only the
    parameters the path has are rewritten)."""
    text = text.replace(HIDDEN_BRANCH, MISSING_BRANCH)
    if "{group}" in template:
        text = text.replace(f"'{GROUP}'", "'nogroup'")
    if "{bisection_id" in template:
        text = text.replace(f"bisection {leak.bisection}", f"bisection {leak.bisection + 1}")
    if "{sha}" in template:
        text = text.replace(leak.secret, MISSING_SHA).replace(leak.secret[:12], MISSING_SHA[:12])
    if "{flight_id" in template:
        # the id as a number of its own (not the 39 of an HTML entity's &#39;)
        text = re.sub(rf"(?<![#\w]){leak.hidden}(?!\w)", str(leak.missing), text)
    return text


def test_every_route_treats_embargoed_work_as_missing_for_outsiders(leak: Leak) -> None:
    assert len(str(leak.hidden)) == len(str(leak.missing))
    routes = app_routes(leak.client)
    assert len(routes) >= 30  # pages, API, actions, static: the app's own list
    with_params = [(m, p) for m, p in routes if "{" in p]
    assert any("flight_id" in p for _, p in with_params)
    for method, template in with_params:
        for who in OUTSIDERS:
            shown = leak.get(who, fill(leak, template, hidden=True), method)
            absent = leak.get(who, fill(leak, template, hidden=False), method)
            where = (who, method, template)
            assert shown.status_code == absent.status_code, where
            assert normalised(leak, shown.text, template) == absent.text, where
            assert CANARY not in absent.text, where
            assert shown.headers.get("content-type") == absent.headers.get("content-type"), where


def test_no_route_gives_an_outsider_the_canary(leak: Leak) -> None:
    """Every route without path parameters, as is and asked about the hidden branch (by the query
    parameters the pages read): no canary, and the same answer as for a branch that does not
    exist."""
    for method, template in app_routes(leak.client):
        if "{" in template:
            continue
        for who in OUTSIDERS:
            plain = leak.get(who, template, method)
            assert CANARY not in plain.text, (who, method, template)
            asked = leak.get(who, f"{template}?branch={HIDDEN_BRANCH}&job=build", method)
            absent = leak.get(who, f"{template}?branch={MISSING_BRANCH}&job=build", method)
            assert asked.status_code == absent.status_code, (who, method, template)
            assert normalised(leak, asked.text, template) == absent.text, (who, method, template)


def test_members_see_the_embargoed_work(leak: Leak) -> None:
    h = leak.hidden
    for path in [
        f"/flights/{h}",  # the commit's subject, from the mirror
        f"/flights/{h}/jobs/build",
        f"/flights/{h}/jobs/build/steps/0/log",
        f"/flights/{h}/jobs/build/steps/0/log.txt",
        f"/api/flights/{h}",
        f"/api/flights/{h}/verdict",
        f"/bisections/{leak.bisection}",
        f"/api/bisections/{leak.bisection}",
        f"/branches/{HIDDEN_BRANCH}",
        f"/source/xen/{leak.secret}/fix.c",  # the embargoed revision's file
        f"/history/{HIDDEN_BRANCH}/build",
        "/flights",
        "/branches",
        "/bisections",
        f"/api/branches/{HIDDEN_BRANCH}/pushes",
        "/hosts/h0",
    ]:
        response = leak.get("member", path)
        assert response.status_code == 200, path
        assert CANARY in response.text, path
    stream = leak.get("member", f"/flights/{h}/jobs/build/steps/0/log/stream")
    assert CANARY in stream.text and "event: end" in stream.text
    listed = leak.get("member", "/api/flights").json()["items"]
    assert h in [f["id"] for f in listed]
    assert h not in [f["id"] for f in leak.get("outsider", "/api/flights").json()["items"]]


def test_a_host_busy_with_an_embargoed_job_is_reserved_to_outsiders(leak: Leak) -> None:
    for who in OUTSIDERS:
        h0 = next(h for h in leak.get(who, "/api/hosts").json()["items"] if h["name"] == "h0")
        assert h0["state"] == "reserved" and h0["busy"] == []
        runs = leak.get(who, "/api/hosts/h0/jobs").json()["items"]
        assert runs != []  # the public jobs stay
        assert all(r["flight"] != leak.hidden for r in runs)
    h0 = next(h for h in leak.get("member", "/api/hosts").json()["items"] if h["name"] == "h0")
    assert h0["state"] == "busy"
    assert h0["busy"] == [{"flight": leak.hidden, "job": "test", "since": h0["busy"][0]["since"]}]


def test_pagination_and_counts_show_no_trace(leak: Leak) -> None:
    """A page of one flight at a time walks the public flights and only them; the next page's
    key is never the hidden flight's id."""
    for who, expected in (
        ("outsider", leak.public[::-1]),
        ("member", sorted([*leak.public, leak.hidden], reverse=True)),
    ):
        seen, url = [], "/api/flights?limit=1"
        while True:
            page = leak.get(who, url).json()
            seen += [f["id"] for f in page["items"]]
            if page["next"] is None:
                break
            if who == "outsider":
                assert not page["next"].endswith(f"before={leak.hidden}")
            url = page["next"]
        assert seen == expected, who


def test_lifting_the_embargo_makes_it_all_public_at_once(leak: Leak) -> None:
    assert leak.get("outsider", f"/flights/{leak.hidden}").status_code == 404
    assert leak.users.lift(group=GROUP) == [leak.hidden]
    for path in [f"/flights/{leak.hidden}", f"/bisections/{leak.bisection}", "/flights"]:
        response = leak.get("anonymous", path)
        assert response.status_code == 200 and CANARY in response.text, path
    leak.get("member", f"/flights/{leak.hidden}")
    assert leak.users.audit(GROUP) == []  # public work: no one's sight of it is recorded
    assert leak.users.lift(group=GROUP) == []  # nothing left to lift


def test_an_embargo_ends_by_itself_at_until(leak: Leak) -> None:
    past = Embargo(GROUP, datetime.now(UTC) - timedelta(seconds=1))
    ended = leak.store.create_flight(HIDDEN_BRANCH, Blessing.ADHOC, {}, _jobs(), past)
    assert leak.get("anonymous", f"/api/flights/{ended}").status_code == 200


def test_the_audit_log_names_who_saw_embargoed_work_for_the_groups_admins(leak: Leak) -> None:
    leak.get("member", f"/flights/{leak.hidden}/jobs/build/steps/0/log")
    leak.get("outsider", f"/flights/{leak.hidden}")  # refused: not a sight
    entries = leak.get("member", f"/api/embargo/{GROUP}/audit").json()["items"]
    assert [(e["user"], e["flight"], e["what"]) for e in entries] == [
        ("alice", leak.hidden, f"/flights/{leak.hidden}/jobs/build/steps/0/log")
    ]
    admin = leak.client.get(
        f"/api/embargo/{GROUP}/audit", headers={"authorization": f"Bearer {LAB_TOKEN}"}
    )
    assert admin.status_code == 200 and len(admin.json()["items"]) == 1
    # pages of the log, newest first: every sight exactly once, across pages
    for sight in range(1, 5):
        leak.get("member", f"/flights/{leak.hidden}/jobs/build/steps/0/log?n={sight}")
    seen: list[int] = []
    page: str | None = f"/api/embargo/{GROUP}/audit?limit=2"
    while page is not None:
        body = leak.get("member", page).json()
        assert len(body["items"]) <= 2
        seen += [e["id"] for e in body["items"]]
        page = body["next"]
    assert len(seen) == 5 and seen == sorted(set(seen), reverse=True)
    assert seen[-1] == entries[0]["id"]  # the first sight, last
    leak.users.add("carol", groups=[GROUP])  # a member, not an admin of the group
    carol = {"authorization": "Bearer " + leak.users.create_token("carol")}
    assert leak.client.get(f"/api/embargo/{GROUP}/audit", headers=carol).status_code == 404


def test_a_revoked_token_stops_at_once_in_its_sessions_too(leak: Leak) -> None:
    token = leak.tokens["member"].removeprefix("Bearer ")
    login = leak.client.post("/login", data={"token": token}, follow_redirects=False)
    assert login.status_code == 303
    assert CANARY in leak.client.get(f"/flights/{leak.hidden}").text  # by the session cookie
    assert leak.users.revoke("alice") == 1
    assert leak.client.get(f"/flights/{leak.hidden}").status_code == 404
    refused = leak.get("member", f"/api/flights/{leak.hidden}")
    assert refused.status_code == 403 and "not valid" in refused.json()["error"]


def test_leaving_joining_and_removal_change_what_a_user_sees_on_the_next_request(
    leak: Leak,
) -> None:
    token = leak.tokens["member"].removeprefix("Bearer ")
    login = leak.client.post("/login", data={"token": token}, follow_redirects=False)
    assert login.status_code == 303
    page = f"/flights/{leak.hidden}"
    assert CANARY in leak.get("member", page).text
    leak.users.leave("alice", GROUP)
    assert leak.get("member", page).status_code == 404  # by token
    assert leak.client.get(page).status_code == 404  # by the session cookie
    with pytest.raises(StoreError, match="user 'alice' is not in group 'security'"):
        leak.users.leave("alice", GROUP)
    assert leak.get("outsider", page).status_code == 404
    assert leak.users.join("bob", GROUP) is True
    assert leak.users.join("bob", GROUP) is False  # already a member
    assert CANARY in leak.get("outsider", page).text
    assert leak.get("outsider", f"/api/embargo/{GROUP}/audit").status_code == 404
    assert leak.users.join("bob", GROUP, admin=True) is True
    assert leak.get("outsider", f"/api/embargo/{GROUP}/audit").status_code == 200
    assert leak.users.remove("bob") == 1
    refused = leak.get("outsider", page)
    assert refused.status_code == 403 and "not valid" in refused.text
    assert "bob" not in [u.name for u in leak.users.records()]
    assert ("bob", leak.hidden) in [(e.user, e.flight) for e in leak.users.audit(GROUP)]
    with pytest.raises(StoreError, match="no user 'bob'"):
        leak.users.remove("bob")


def test_anonymous_false_lets_anonymous_reach_the_login_form_only(leak: Leak) -> None:
    text = leak.lab.file.read_text().replace("[web]\n", "[web]\nanonymous = false\n")
    leak.lab.file.write_text(text)
    closed = TestClient(create_app(load_lab(leak.lab.dir), leak.store), base_url="http://localhost")
    assert closed.get("/login").status_code == 200
    for path in ["/flights", "/api/flights", "/hosts", f"/flights/{leak.public[0]}"]:
        response = closed.get(path)
        assert response.status_code == 401, path
        assert "log in first" in response.text
        assert "main" not in response.text.replace("<main>", "").replace("</main>", "")
    bob = {"authorization": leak.tokens["outsider"]}
    assert closed.get("/api/flights", headers=bob).status_code == 200
