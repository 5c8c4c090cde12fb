"""A whole push gate cycle of an embargoed branch, with the bisection of its regression inside
the embargo, through a real SMTP server (aiosmtpd) and the dashboard: every mail goes to the
group's addresses only (not the list, not the culprit's author outside the group), every flight
the cycle made (real, retests, bisection) is embargoed, no route gives an outsider the canary
of the embargoed commits or the culprit; members see it all; the lift makes it public. And a
review of a patch to an embargoed branch is tested but never voted on."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from integration.test_gate_mail import mail_section
from integration.test_mail import ServerFactory, free_port, smtp_server  # noqa: F401
from labgate.config import load_lab
from labgate.store import Store
from labgate.store.review import ReviewQueue
from labgate.store.users import Users
from labgate.web import create_app
from reviewlab import make_review_lab
from test_embargo_leak import app_routes
from test_gate import ANN, BOB, Upstream, cycle, write_gate_lab
from test_review_loop import Double, Server, process

CANARY = "CANARY-0c7d21"
EMBARGO = 'embargo = { group = "security", until = "2099-01-01T00:00:00Z" }\n'
MEMBER = "alice@sec.example"


def embargoed_history(upstream: Upstream) -> list[str]:
    """master at a base commit; staging six commits ahead, the fourth (by Bob, its subject
    carrying the canary) plants the bug."""
    base = upstream.commit("base", {"VERSION": "1\n"}, ANN)
    upstream.push(base, "master")
    shas = []
    for i in range(6):
        files: dict[str, str | None] = {f"f{i}": f"{i}\n"}
        if i == 3:
            files["bug"] = "oops\n"
        subject = f"xsa: part {i} {CANARY}"
        shas.append(upstream.commit(subject, files, BOB if i == 3 else ANN))
    upstream.push(shas[-1], "staging")
    return shas


def test_a_gate_cycle_under_embargo_mails_and_shows_only_the_group(
    tmp_path: Path,
    smtp_server: ServerFactory,  # noqa: F811
) -> None:
    port = free_port()
    recorder = smtp_server(port)
    upstream = Upstream(tmp_path)
    shas = embargoed_history(upstream)
    lab_dir = write_gate_lab(tmp_path, upstream, database=None, hosts=2)
    toml = lab_dir / "lab.toml"
    text = toml.read_text().replace('tree = "xen"\n', 'tree = "xen"\n' + EMBARGO, 1)
    # one host set aside for embargoed work, one shared: the shared one must stay unused
    text = text.replace('flags = ["x86"]', 'flags = ["x86", "embargo-ok"]', 1)
    toml.write_text(text + mail_section(port) + '\n[web]\ntoken = "lab-admin-token-0123456789"\n')
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        users = Users(store.engine)
        users.add("alice", email=MEMBER, groups=["security"])
        users.add("eve", email="eve@elsewhere.example", groups=["other"])
        member = {"authorization": "Bearer " + users.create_token("alice")}
        outsider = {"authorization": "Bearer " + users.create_token("eve")}

    result = cycle(lab_dir)

    assert result.action == "not-pushed"
    envelopes = recorder.envelopes
    assert len(envelopes) == 2  # the flight report and the bisection report
    assert all(e.rcpt_tos == [MEMBER] for e in envelopes)
    flight_mail, bisection_mail = recorder.messages()
    assert flight_mail["To"] == MEMBER and bisection_mail["To"] == MEMBER
    assert bisection_mail["Cc"] is None
    assert f"xen {shas[3]} is the first bad commit" in bisection_mail.get_content()
    with Store.open(lab.database_url) as store:
        users = Users(store.engine)
        flights = store.list_flights(limit=1000)
        assert len(flights) > 2  # the real flight, its retest, the bisection's flights
        assert all(users.embargo(f.id) is not None for f in flights)
        hosts = {j.host for f in flights for j in store.get_flight(f.id).jobs}
        assert hosts == {"h0"}  # never the shared host
        [bisection] = store.bisections()
        client = TestClient(create_app(lab, store), base_url="http://localhost")
        seen = [
            f"/flights/{result.flight}",
            f"/flights/{result.flight}/jobs/test",
            f"/flights/{result.flight}/jobs/test/steps/0/log",
            f"/bisections/{bisection.id}",
            f"/api/bisections/{bisection.id}",
            "/history/xen-unstable/test",
        ]
        paramless = [p for m, p in app_routes(client) if m == "GET" and "{" not in p]
        for headers in ({}, outsider):
            for path in [*paramless, *seen]:
                body = client.get(path, headers=headers).text
                assert CANARY not in body and shas[3] not in body, path
                if path in paramless:  # (the others show the branch name they were asked)
                    assert "xen-unstable" not in body, path
        for path in seen:
            response = client.get(path, headers=member)
            assert response.status_code == 200, path
        assert shas[3] in client.get(f"/api/bisections/{bisection.id}", headers=member).text
        assert CANARY in client.get(f"/flights/{result.flight}", headers=member).text
        assert sorted(users.lift(group="security")) == sorted(f.id for f in flights)
        assert shas[3] in client.get(f"/api/bisections/{bisection.id}").text


def test_a_review_of_an_embargoed_branch_is_tested_but_never_voted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/review.db"
    rl = make_review_lab(tmp_path, url)
    text = rl.lab.file.read_text()
    text = text.replace('pin = { tools = "stable" }\n', 'pin = { tools = "stable" }\n' + EMBARGO)
    text = text.replace('name = "local0"\n', 'name = "local0"\nflags = ["embargo-ok"]\n')
    rl.lab.file.write_text(text)
    rl.lab = load_lab(rl.path)
    sha = rl.propose(9, "fail")
    server = Server()
    with Store.open(url) as store:
        ReviewQueue(store).enqueue(rl.event(9, sha))
        [run] = process(rl, store, Double(server))
        assert run.flight_id is not None
        assert Users(store.engine).embargo(run.flight_id) is not None
        assert store.get_flight(run.flight_id).outcome is not None  # it was tested
        assert ReviewQueue(store).get(run.id).state == "embargoed"
    assert server.posts == [] and server.started == []
