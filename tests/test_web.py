"""The dashboard (labgate.web) through HTTP, on both stores: pages, filters and pagination, the
JSON API against its OpenAPI description, escaping of outside text, log paths, the token and CSRF,
cancel and retest, live logs as server-sent events, the request log."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.routing import Route
from starlette.testclient import TestClient

from labgate.cli import main
from labgate.config import Lab, load_lab
from labgate.flight import mirrors_for
from labgate.model import Blessing, FlightState, JobSpec, Outcome, StepSpec
from labgate.store import Store, schema
from labgate.web import create_app
from labgate.web.api import OPENAPI
from labgate.web.app import when
from labgate.web.auth import SESSION_COOKIE, SESSION_TTL_S
from labgate.web.graph import dot_string, render_svg, to_dot
from labgate.web.logs import LiveStep, stream_log
from labs import job, local_host, step, write_lab

TOKEN = "test-token-0123456789"
EVIL = '<script>alert("x")</script>'


@dataclass
class Fixture:
    lab: Lab
    store: Store
    client: TestClient
    flights: list[int]
    sha: str


def _jobs() -> list[JobSpec]:
    build = JobSpec("build", (StepSpec("compile", "true"),))
    test = JobSpec(
        "test",
        (StepSpec("install", "true"), StepSpec("run", "true"), StepSpec("stop", "true")),
        depends=("build",),
    )
    return [build, test]


def _finish(
    store: Store, flight_id: int, outcomes: dict[str, list[Outcome]], log_dir: Path
) -> None:
    """Give the stored flight's jobs and steps these outcomes, with logs, as a runner would."""
    store.set_flight_state(flight_id, FlightState.RUNNING)
    worst = []
    for stored in store.flight_jobs(flight_id):
        name = stored.spec.name
        store.start_job(stored.id, "h0")
        for index, (step_id, outcome) in enumerate(
            zip(stored.step_ids, outcomes[name], strict=True)
        ):
            rel = f"{flight_id}/{name}/{index}.log"
            (log_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (log_dir / rel).write_text(f"log of {name} step {index}\n")
            store.start_step(step_id, rel)
            store.finish_step(step_id, outcome, exit_status=0, duration_s=1.5 + index)
        job_outcome = next((o for o in outcomes[name] if o is not Outcome.PASS), Outcome.PASS)
        store.finish_job(stored.id, job_outcome)
        worst.append(job_outcome)
    overall = Outcome.FAIL if Outcome.FAIL in worst else Outcome.PASS
    store.set_flight_state(flight_id, FlightState.FINISHED, overall)


@pytest.fixture
def web(tmp_path: Path, database_url: str) -> Iterator[Fixture]:
    lab_dir = write_lab(
        tmp_path / "lab",
        trees={"xen": {"README": "xen\n"}},
        hosts=local_host("h0", flags=["arch-amd64"]),
        jobs=job("build", step("compile", "true"))
        + job("test", step("install", "true"), step("run", "true"), step("stop", "true"),
              depends=["build"]),
        database=database_url,
    )  # fmt: skip
    repo = lab_dir.trees["xen"]
    sha = repo.commit(EVIL, author=("Mallory & Eve", "m@example.com"))
    repo.branch("staging")
    lab = load_lab(lab_dir.path)
    mirrors_for(lab).update("xen")
    store = Store.open(lab.database_url)
    store.sync_hosts(lab.hosts)
    flights = []
    for i in range(3):
        fid = store.create_flight("main", Blessing.REAL, {"xen": sha}, _jobs())
        runs = [Outcome.PASS, Outcome.FAIL if i == 1 else Outcome.PASS, Outcome.BLOCKED]
        if i != 1:
            runs[2] = Outcome.PASS
        _finish(store, fid, {"build": [Outcome.PASS], "test": runs}, lab.log_dir)
        flights.append(fid)
    app = create_app(lab, store, token=TOKEN, hosts=["dash.test"])
    client = TestClient(app, base_url="http://dash.test")
    try:
        yield Fixture(lab, store, client, flights, sha)
    finally:
        client.close()
        store.close()


def test_every_page_renders(web: Fixture) -> None:
    f = web.flights[1]
    for path in [
        "/flights",
        f"/flights/{f}",
        f"/flights/{f}/jobs/test",
        f"/flights/{f}/jobs/test/steps/1/log",
        "/history/main/test",
        "/history/main/test?step=run",
        "/hosts",
        "/hosts/h0",
        "/branches",
        "/branches/main",
        "/bisections",
        "/trends",
        "/trends?branch=main&job=test",
        "/login",
    ]:
        response = web.client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert "text/html" in response.headers["content-type"]
        assert "default-src 'none'" in response.headers["content-security-policy"]


def test_flight_page_shows_tuple_grid_and_steps(web: Fixture) -> None:
    page = web.client.get(f"/flights/{web.flights[1]}").text
    assert web.sha[:12] in page
    assert 'class="o-fail cell step"' in page  # the failed step's cell is coloured
    assert f"/flights/{web.flights[1]}/jobs/test/steps/1/log" in page  # the second step's log
    assert "h0" in page and "2.50s" in page  # host and a step's duration


def _row(page: str, flight_id: int) -> str:
    """The flight list's row of one flight (its HTML)."""
    start = page.index(f'<tr id="flight-{flight_id}">')
    return page[start : page.index("</tr>", start)]


def _cell(row: str, name: str) -> str:
    """The text of a row's cell of this class, tags removed."""
    start = row.index(f'<td class="{name}">')
    return re.sub(r"<[^>]+>", "", row[start : row.index("</td>", start)]).strip()


def test_flight_list_says_what_the_gate_made_of_each_flight(web: Fixture) -> None:
    pushed, regressed, refused = web.flights
    web.store.record_verdict(pushed, None, True, {"blocking": []})
    web.store.record_push("main", pushed, "xen", web.sha, None, "pushed")
    web.store.record_verdict(regressed, pushed, False, {"blocking": [{"job": "test"}]})
    web.store.record_verdict(refused, pushed, True, {"blocking": []})
    web.store.record_push("main", refused, "xen", web.sha, None, "not-fast-forward", "moved")
    bisection = web.store.create_bisection("main", "test", "run", None, regressed, pushed)
    probe = web.store.create_flight("main", Blessing.BISECT, {"xen": web.sha}, _jobs())
    web.store.update_bisection(
        bisection, state="running", executions=1, rounds=1, flights=[probe], graph={}
    )
    page = web.client.get("/flights").text
    assert _cell(_row(page, pushed), "state") == "pushed"
    assert _cell(_row(page, regressed), "state") == "regressed (1)"
    assert _cell(_row(page, refused), "state") == "push failed"  # never like a push
    assert 'class="oc g-push-failed" title="not-fast-forward: moved"' in _row(page, refused)
    assert f'href="/bisections/{bisection}"' in _row(page, probe)
    assert _cell(_row(page, probe), "state") == f"bisection {bisection}"
    flight_page = web.client.get(f"/flights/{refused}").text
    assert "push failed" in flight_page and "push allowed" not in flight_page
    assert "g-pushed" not in flight_page
    assert f'href="/bisections/{bisection}"' in web.client.get(f"/flights/{probe}").text
    branch = web.client.get("/branches/main").text
    assert _cell(_row(branch, refused), "state") == "push failed"


def test_a_verdict_stored_before_the_regression_count_is_counted_on_upgrade(
    tmp_path: Path,
) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path}/old.db"
    config = Config()
    config.set_main_option("script_location", "labgate.store:migrations")
    engine = create_engine(url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0012")
        conn.execute(
            text(
                "INSERT INTO flight (id, branch, blessing, state, created) "
                "VALUES (1, 'main', 'real', 'finished', '2026-01-01 00:00:00')"
            )
        )
        verdict = {"blocking": [{"job": "a"}, {"job": "b"}], "perf": [{"blocking": True}]}
        conn.execute(
            text("INSERT INTO verdict VALUES (1, NULL, 0, :data, '2026-01-01 00:00:00')"),
            {"data": json.dumps(verdict)},
        )
    engine.dispose()
    with Store.open(url) as store, store.engine.connect() as conn:
        assert conn.execute(select(schema.verdict.c.regressions)).scalar_one() == 3


def test_flight_list_shows_durations_and_relative_times(web: Fixture) -> None:
    started = (datetime.now(UTC) - timedelta(hours=3, minutes=10)).replace(microsecond=0)
    with web.store.engine.begin() as conn:
        conn.execute(
            schema.flight.update()
            .where(schema.flight.c.id == web.flights[0])
            .values(started=started, finished=started + timedelta(minutes=25, seconds=5))
        )
    row = _row(web.client.get("/flights").text, web.flights[0])
    exact = started.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f'<time datetime="{started.isoformat()}" title="{exact}">3 h ago</time>' in row
    assert "25m05s" in row
    assert "+00:00<" not in row  # no raw ISO string is shown


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(2, "just now"), (42, "42 s ago"), (190, "3 min ago"), (3 * 3600 + 5, "3 h ago"),
     (47 * 3600, "47 h ago"), (5 * 86400, "5 days ago"), (-7250, "in 2 h")],
)  # fmt: skip
def test_relative_times(seconds: int, words: str) -> None:
    now = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
    moment = now - timedelta(seconds=seconds)
    shown = str(when(moment.isoformat(), now))
    assert shown.endswith(f">{words}</time>")
    assert f'title="{moment:%Y-%m-%d %H:%M:%S} UTC"' in shown
    assert str(when(None, now)) == "-"


def test_pages_with_job_pills_have_a_legend(web: Fixture) -> None:
    for path in ["/flights", f"/flights/{web.flights[1]}", "/branches/main"]:
        page = web.client.get(path).text
        legend = page[page.index('<p class="legend" id="legend">') :]
        legend = legend[: legend.index("</p>")]
        for outcome in ("pass", "fail", "broken", "blocked", "skip", "running", "queued"):
            assert f'<span class="oc o-{outcome}">{outcome}</span>' in legend, (path, outcome)


def test_host_events_link_their_flight_job_and_host(web: Fixture) -> None:
    stored = web.store.flight_jobs(web.flights[1])[1]
    web.store.hosts.record_job("h0", stored.id, 1, Outcome.FAIL, "disk full", quarantine_after=1)
    page = web.client.get("/hosts/h0").text
    events = page[page.index("<h2>Events</h2>") :]
    assert f'<a href="/flights/{web.flights[1]}">{web.flights[1]}</a>' in events
    assert f'<a href="/flights/{web.flights[1]}/jobs/test">test</a>' in events
    assert '<a href="/hosts/h0">h0</a>' in events


def test_the_culprit_is_named_with_its_author_and_subject(web: Fixture) -> None:
    b = web.store.create_bisection("main", "test", "run", None, web.flights[1], web.flights[0])
    web.store.update_bisection(
        b, state="found", executions=3, rounds=2, flights=[], graph={},
        culprit_tree="xen", culprit_commit=web.sha, confidence=0.97,
    )  # fmt: skip
    for path in [f"/bisections/{b}", f"/flights/{web.flights[1]}", "/branches/main"]:
        page = web.client.get(path).text
        banner = page[page.index(f'<div class="culprit" id="culprit-{b}">') :]
        banner = banner[: banner.index("</div>")]
        assert web.sha[:12] in banner, path
        assert '<span class="author">Mallory &amp; Eve</span>' in banner, path
        assert "&lt;script&gt;alert" in banner and "97.0%" in banner, path
    assert "Mallory &amp; Eve: &lt;script&gt;" in web.client.get("/bisections").text


def test_outside_text_is_escaped(web: Fixture) -> None:
    f = web.flights[0]
    (web.lab.log_dir / f"{f}/test/1.log").write_text(f"{EVIL}\n")
    for path in [f"/flights/{f}", f"/flights/{f}/jobs/test/steps/1/log"]:
        page = web.client.get(path).text
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "Mallory &amp; Eve" in web.client.get(f"/flights/{f}").text


def test_bisection_graph_escapes_labels(web: Fixture) -> None:
    b = web.store.create_bisection("main", "test", "run", None, web.flights[1], web.flights[0])
    graph = {
        "nodes": [
            {"id": "a", "tree": "xen", "commit": "a" * 40, "subject": EVIL + ' \\" ] } ;',
             "outcomes": ["fail", "fail"], "probability": 0.9},
            {"id": "b", "tree": "xen", "commit": "b" * 40, "subject": 'tidy "quotes" \\N',
             "outcomes": ["pass"], "probability": 0.1},
        ],
        "edges": [["a", "b"]],
    }  # fmt: skip
    web.store.update_bisection(
        b, state="found", executions=3, rounds=2, flights=web.flights, graph=graph,
        culprit_tree="xen", culprit_commit="a" * 40, confidence=0.9,
    )  # fmt: skip
    page = web.client.get(f"/bisections/{b}").text
    assert "<svg" in page and "<script>alert" not in page
    assert "&lt;script&gt;" in page
    assert page.count("0.900") >= 1  # the candidates' probabilities
    assert web.client.get("/bisections").status_code == 200
    api = web.client.get(f"/api/bisections/{b}").json()
    assert api["culprit"] == {"tree": "xen", "commit": "a" * 40}
    assert api["graph"]["edges"] == [["a", "b"]]


def test_a_bisection_of_five_thousand_commits_reads_with_and_without_graphviz(
    web: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page outlines the graph: the culprit and the tested commits in view, untested
    stretches collapsed; without Graphviz the same outline is a list."""
    from test_bisect_outline import linear_graph

    culprit = f"c{3217:039d}"
    tested = {i: ["good" if i < 3217 else "bad"] for i in (100, 2500, 3000, 3216, 3217, 4000)}
    b = web.store.create_bisection("main", "test", "run", None, web.flights[1], web.flights[0])
    web.store.update_bisection(
        b, state="found", executions=6, rounds=6, flights=web.flights,
        graph=linear_graph(5000, tested, culprit=3217), culprit_tree="x",
        culprit_commit=culprit, confidence=0.995,
    )  # fmt: skip
    drawn = web.client.get(f"/bisections/{b}").text
    assert "<svg" in drawn and "untested commits" in drawn
    assert drawn.count('class="node"') <= 80
    assert culprit[:12] in drawn
    monkeypatch.setenv("PATH", str(tmp_path / "no-graphviz-here"))
    listed = web.client.get(f"/bisections/{b}").text
    assert "<svg" not in listed and "Graphviz is not installed" in listed
    row = listed[listed.index('id="culprit"') :]
    assert culprit[:12] in row[: row.index("</tr>")]
    table = listed[listed.index('class="grid outline"') :]
    table = table[: table.index("</table>")]
    gaps = [int(g) for g in re.findall(r"⋯ (\d+) untested commits", table)]
    shown = table.count("<tr") - 1 - len(gaps)  # less the header row
    assert gaps and shown + sum(gaps) == 5000  # every commit shown or counted once
    assert shown <= 80 and len(listed) < 100_000


def test_dot_strings_cannot_escape() -> None:
    assert dot_string('a"b\\c\nd') == '"a\\"b\\\\c d"'
    nasty = {"nodes": [{"id": '"];x[label="', "subject": '"; bad -> worse; "', "outcomes": []}]}
    svg = render_svg(to_dot(nasty, None))
    # one node, no edge: the text stayed inside its label
    assert svg.count('class="node"') == 1 and 'class="edge"' not in svg
    assert "bad &#45;&gt; worse" in svg


def test_log_paths_outside_the_log_dir_are_refused(web: Fixture, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    stored = web.store.flight_jobs(web.flights[0])[0]
    web.store.start_step(stored.step_ids[0], "../../secret.txt")
    base = f"/flights/{web.flights[0]}/jobs/build/steps/0"
    for path in (f"{base}/log", f"{base}/log.txt", f"{base}/log/stream"):
        response = web.client.get(path)
        assert response.status_code == 403, path
        assert "top secret" not in response.text
    absolute = web.store.flight_jobs(web.flights[1])[0]
    web.store.start_step(absolute.step_ids[0], str(secret))
    assert web.client.get(f"/flights/{web.flights[1]}/jobs/build/steps/0/log").status_code == 403
    assert (
        web.client.get(f"/flights/{web.flights[1]}/jobs/..%2F..%2Fetc/steps/0/log").status_code
        == 404
    )
    assert web.client.get("/flights/1/jobs/build/steps/9/log").status_code == 404


@pytest.mark.timeout(60)  # a FIFO opened for reading blocks until a writer comes: none will
def test_a_fifo_or_dir_in_the_log_dir_is_never_read(web: Fixture) -> None:
    flight = web.flights[0]
    fifo = web.lab.log_dir / f"{flight}/build/0.log"
    fifo.unlink()
    os.mkfifo(fifo)
    base = f"/flights/{flight}/jobs/build/steps/0"
    for _ in range(50):  # more than the worker threads: none is left hanging
        assert web.client.get(f"{base}/log.txt").status_code == 403
    page = web.client.get(f"{base}/log")
    assert page.status_code == 200 and "log of build" not in page.text
    stream = web.client.get(f"{base}/log/stream")
    assert stream.status_code == 200 and stream.text.startswith("event: end\n")
    assert web.client.get("/flights").status_code == 200
    fifo.unlink()
    fifo.mkdir()
    assert web.client.get(f"{base}/log.txt").status_code == 403


def test_a_raw_log_is_streamed_whole(web: Fixture) -> None:
    flight = web.flights[0]
    log = web.lab.log_dir / f"{flight}/build/0.log"
    data = bytes(range(256)) * (3 * 64 * 1024 // 256 + 7)  # several chunks and a piece
    log.write_bytes(data)
    response = web.client.get(f"/flights/{flight}/jobs/build/steps/0/log.txt")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(data))
    assert response.content == data


def test_flight_list_filters_and_pages(web: Fixture) -> None:
    for _ in range(55):
        web.store.create_flight("main", Blessing.ADHOC, {"xen": web.sha}, _jobs())
    first = web.client.get("/api/flights").json()
    assert len(first["items"]) == 50 and first["next"] == "/api/flights?before=9"
    second = web.client.get(first["next"]).json()
    assert [f["id"] for f in second["items"]] == list(range(8, 0, -1))
    assert second["next"] is None
    failed = web.client.get("/api/flights?outcome=fail").json()["items"]
    assert [f["id"] for f in failed] == [web.flights[1]]
    real = web.client.get("/api/flights?blessing=real").json()["items"]
    assert sorted(f["id"] for f in real) == web.flights
    html = web.client.get("/flights?outcome=queued").text
    assert "older flights" in html
    assert web.client.get("/flights?outcome=nonsense").status_code == 400
    assert web.client.get("/flights?before=x").status_code == 400


def _check(schema: dict[str, Any], value: Any, where: str) -> None:
    """A small JSON-schema check: types, and object keys exactly as described."""
    if "$ref" in schema:
        schema = OPENAPI["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "oneOf" in schema:
        errors = []
        for option in schema["oneOf"]:
            try:
                _check(option, value, where)
                return
            except AssertionError as error:
                errors.append(str(error))
        raise AssertionError(f"{where}: no option fits: {errors}")
    types = schema.get("type")
    names = types if isinstance(types, list) else [types] if types else []
    pytypes = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
               "object": dict, "array": list, "null": type(None)}  # fmt: skip
    if names:
        assert isinstance(value, tuple(pytypes[n] for n in names)), (where, value, names)
    if isinstance(value, dict) and "properties" in schema:
        required = set(schema.get("required", []))
        assert required <= set(value), (where, required - set(value))
        assert set(value) <= set(schema["properties"]), (
            where,
            set(value) - set(schema["properties"]),
        )
        for key, item in value.items():
            _check(schema["properties"][key], item, f"{where}.{key}")
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            _check(schema["additionalProperties"], item, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(schema["items"], item, f"{where}[{i}]")


def test_api_matches_its_openapi_description(web: Fixture) -> None:
    web.store.record_verdict(web.flights[1], web.flights[0], False, {"blocking": []})
    web.store.record_push("main", web.flights[0], "xen", web.sha, None, "pushed")
    web.store.create_bisection("main", "test", "run", None, web.flights[1], web.flights[0])
    assert web.client.get("/api/openapi.json").json() == OPENAPI
    f = web.flights[1]
    paths = {
        "/api/": "/api/",
        "/api/flights": "/api/flights",
        f"/api/flights/{f}": "/api/flights/{flight_id}",
        f"/api/flights/{f}/verdict": "/api/flights/{flight_id}/verdict",
        "/api/history/main/test": "/api/history/{branch}/{job}",
        "/api/hosts": "/api/hosts",
        "/api/hosts/h0/jobs": "/api/hosts/{name}/jobs",
        "/api/branches": "/api/branches",
        "/api/branches/main/pushes": "/api/branches/{name}/pushes",
        "/api/bisections": "/api/bisections",
        "/api/bisections/1": "/api/bisections/{bisection_id}",
        "/api/embargo/admins/audit": "/api/embargo/{group}/audit",
    }
    lab_admin = {"authorization": f"Bearer {TOKEN}"}  # the audit log is for admins
    for url, template in paths.items():
        response = web.client.get(url, headers=lab_admin)
        assert response.status_code == 200, url
        schema = OPENAPI["paths"][template]["get"]["responses"]["200"]["content"]
        _check(schema["application/json"]["schema"], response.json(), url)
    history = web.client.get("/api/history/main/test").json()
    assert set(history["flake_rates"]) == {"", "install", "run", "stop"}
    assert web.client.get("/api/flights/999").status_code == 404
    assert web.client.get("/api/flights/999").json() == {
        "error": "flight 999 does not exist in this lab's store"
    }


def test_api_index_lists_every_api_route_of_the_app(web: Fixture) -> None:
    index = web.client.get("/api/").json()
    assert index["next"] is None
    listed = {(e["path"], tuple(e["methods"])): e["summary"] for e in index["items"]}
    assert ("/api/flights", ("GET",)) in listed
    assert ("/api/flights/{flight_id}/cancel", ("POST",)) in listed
    routes = {
        (route.path, tuple(sorted(m for m in route.methods if m != "HEAD")))
        for route in web.client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route) and route.path.startswith("/api/") and route.methods
    }
    assert len(listed) == len(routes)  # every route of the app under /api/, once
    assert {(re.sub(r":\w+", "", p), m) for p, m in routes} == set(listed)
    assert all(listed.values())  # each described in /api/openapi.json
    assert set(OPENAPI["paths"]) == {p for p, _ in listed}


def test_every_api_list_has_one_shape_and_pages(web: Fixture) -> None:
    for _ in range(5):
        web.store.record_push("main", web.flights[0], "xen", web.sha, None, "pushed")
        web.store.create_bisection("main", "test", "run", None, web.flights[1], None)
    for path in ["/api/bisections", "/api/branches/main/pushes", "/api/hosts/h0/jobs"]:
        seen: list[Any] = []
        url: str | None = f"{path}?limit=2"
        while url is not None:
            page = web.client.get(url).json()
            assert set(page) == {"items", "next"} and len(page["items"]) <= 2, url
            seen += page["items"]
            url = page["next"]
            assert url is None or "limit=2" in url  # the next page keeps the query
        assert len(seen) == len(web.client.get(path).json()["items"]) >= 5, path
        assert len({json.dumps(item, sort_keys=True) for item in seen}) == len(seen), path
    for path in ["/api/hosts", "/api/branches"]:
        assert set(web.client.get(path).json()) == {"items", "next"}, path


def test_api_flight_is_the_cli_json(web: Fixture) -> None:
    result = CliRunner().invoke(
        main, ["flight", "show", str(web.flights[1]), "--json", "--lab", str(web.lab.dir)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == web.client.get(f"/api/flights/{web.flights[1]}").json()


def _login(client: TestClient) -> str:
    response = client.post(
        "/login",
        content=f"token={TOKEN}",
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    page = client.get("/flights/1/jobs/test").text
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match, page
    return match.group(1)


def _post(client: TestClient, path: str, body: str, **headers: str) -> Any:
    return client.post(
        path, content=body, follow_redirects=False,
        headers={"content-type": "application/x-www-form-urlencoded", **headers},
    )  # fmt: skip


def test_actions_need_the_token_and_csrf(web: Fixture) -> None:
    running = web.store.create_flight("main", Blessing.ADHOC, {"xen": web.sha}, _jobs())
    cancel = f"/flights/{running}/cancel"
    assert _post(web.client, cancel, "").status_code == 403  # not logged in
    bad = _post(web.client, "/login", "token=wrong-wrong-wrong-wrong")
    assert bad.status_code == 403 and "wrong token" in bad.text
    csrf = _login(web.client)
    assert _post(web.client, cancel, "").status_code == 403  # no CSRF value
    assert _post(web.client, cancel, "csrf=" + "0" * 64).status_code == 403
    other = _post(web.client, cancel, f"csrf={csrf}", origin="http://evil.test")
    assert other.status_code == 403
    assert (
        _post(web.client, cancel, f"csrf={csrf}", **{"sec-fetch-site": "cross-site"}).status_code
        == 403
    )
    assert not web.store.cancel_requested(running)
    done = _post(web.client, cancel, f"csrf={csrf}", origin="http://dash.test")
    assert done.status_code == 303 and done.headers["location"] == f"/flights/{running}"
    assert web.store.cancel_requested(running)
    assert "cancel requested" in web.client.get(f"/flights/{running}").text
    web.store.clear_cancel_request(running)  # the runner acted on it
    assert not web.store.cancel_requested(running)
    finished = _post(web.client, f"/flights/{web.flights[0]}/cancel", f"csrf={csrf}")
    assert finished.status_code == 409


def _cancel_with(client: TestClient, flight_id: int, cookie: str, csrf: str) -> int:
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, cookie, domain="dash.test")
    return int(_post(client, f"/flights/{flight_id}/cancel", f"csrf={csrf}").status_code)


def test_logout_ends_the_session_even_for_a_copied_cookie(web: Fixture) -> None:
    running = web.store.create_flight("main", Blessing.ADHOC, {"xen": web.sha}, _jobs())
    csrf = _login(web.client)
    cookie = web.client.cookies[SESSION_COOKIE]
    assert _post(web.client, "/logout", "").status_code == 303
    assert _cancel_with(web.client, running, cookie, csrf) == 403
    assert not web.store.cancel_requested(running)
    assert 'name="csrf"' not in web.client.get(f"/flights/{running}/jobs/test").text
    web.client.cookies.clear()
    again = _login(web.client)  # another session works
    assert _cancel_with(web.client, running, web.client.cookies[SESSION_COOKIE], again) == 303


def test_sessions_expire(web: Fixture) -> None:
    running = web.store.create_flight("main", Blessing.ADHOC, {"xen": web.sha}, _jobs())
    access = web.client.app.state.web.access  # type: ignore[attr-defined]
    now = [1000.0]
    access.clock = lambda: now[0]
    csrf = _login(web.client)
    cookie = web.client.cookies[SESSION_COOKIE]
    login = _post(web.client, "/login", f"token={TOKEN}")
    assert f"Max-Age={int(SESSION_TTL_S)}" in login.headers["set-cookie"]
    now[0] += SESSION_TTL_S
    assert _cancel_with(web.client, running, cookie, csrf) == 403
    assert not web.store.cancel_requested(running)


def test_a_new_token_ends_every_session(web: Fixture) -> None:
    running = web.store.create_flight("main", Blessing.ADHOC, {"xen": web.sha}, _jobs())
    csrf = _login(web.client)
    cookie = web.client.cookies[SESSION_COOKIE]
    app = create_app(web.lab, web.store, token="another-token-0123456789", hosts=["dash.test"])
    with TestClient(app, base_url="http://dash.test") as restarted:
        assert _cancel_with(restarted, running, cookie, csrf) == 403
    assert not web.store.cancel_requested(running)


def test_only_the_dashboards_own_host_names_are_answered(web: Fixture, tmp_path: Path) -> None:
    evil = web.client.get("/api/flights", headers={"host": "rebind.evil.example"})
    assert evil.status_code == 400
    assert "Host 'rebind.evil.example' is not a name of this dashboard" in evil.text
    assert "[web] hosts" in evil.text and "flights" not in evil.text
    assert "default-src 'none'" in evil.headers["content-security-policy"]
    text = web.lab.file.read_text()
    web.lab.file.write_text(
        text + '\n[web]\nhosts = ["Lab.Example.org"]\n'
        '\n[[review]]\nname = "gh"\ndriver = "github"\nproject = "a/b"\nbranch = "main"\n'
        'web_url = "https://votes.example.org:8443/"\ntoken_env = "T"\nsecret_env = "S"\n'
    )
    client = TestClient(create_app(load_lab(web.lab.dir), web.store))
    for host in [
        "localhost:8080",
        "127.0.0.1",
        "[::1]:8080",
        "lab.example.org",
        "votes.example.org",
    ]:
        assert client.get("/api/flights", headers={"host": host}).status_code == 200, host
    for host in ["testserver", "lab.example.org.evil.example", "", "[::2]:80"]:
        assert client.get("/api/flights", headers={"host": host}).status_code == 400, host


@pytest.mark.parametrize(
    "path",
    [
        "/api/flights/9223372036854775808",
        "/flights/99999999999999999999",
        "/flights/9223372036854775808/jobs/test/steps/0/log.txt",
        "/api/bisections/99999999999999999999",
    ],
)
def test_ids_past_the_stores_range_are_not_found(web: Fixture, path: str) -> None:
    response = web.client.get(path)
    assert response.status_code == 404, response.text
    assert "default-src 'none'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "query",
    ["before=99999999999999999999", "limit=%C2%B2", "limit=-1", "before=1e3", "limit=%EF%BC%91"],
)
def test_numbers_in_queries_are_checked(web: Fixture, query: str) -> None:
    pages = ["/api/flights"] + (["/flights"] if query.startswith("before") else [])
    for path in pages:
        response = web.client.get(f"{path}?{query}")
        assert response.status_code == 400, (path, query, response.text)
        name = query.partition("=")[0]
        assert f"{name} must be a number from 0 to 9223372036854775807" in response.text


def test_a_log_stream_from_a_huge_offset_ends_cleanly(web: Fixture) -> None:
    base = f"/flights/{web.flights[0]}/jobs/build/steps/0/log/stream"
    far = web.client.get(f"{base}?offset=9223372036854775807")
    assert far.status_code == 200
    assert far.text.startswith("event: end\n") and '"outcome": "pass"' in far.text
    past = web.client.get(f"{base}?offset=9223372036854775808")
    assert past.status_code == 400


def test_an_internal_error_keeps_the_security_headers(web: Fixture) -> None:
    with web.store.engine.begin() as conn:  # a row no version of labgate wrote
        conn.execute(
            schema.flight.update().where(schema.flight.c.id == web.flights[0]).values(state="??")
        )
    client = TestClient(web.client.app, base_url="http://dash.test", raise_server_exceptions=False)
    for path in (f"/flights/{web.flights[0]}", f"/api/flights/{web.flights[0]}"):
        response = client.get(path)
        assert response.status_code == 500, path
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "internal error" in response.text and "Traceback" not in response.text


def test_retest_plans_a_flight_of_the_job_on_the_same_revisions(web: Fixture) -> None:
    csrf = _login(web.client)
    response = _post(web.client, f"/flights/{web.flights[1]}/jobs/test/retest", f"csrf={csrf}")
    assert response.status_code == 303
    new_id = int(response.headers["location"].rsplit("/", 1)[1])
    planned = web.store.get_flight(new_id)
    assert planned.state is FlightState.QUEUED and planned.revisions == {"xen": web.sha}
    assert [j.name for j in planned.jobs] == ["build", "test"]  # with what it depends on
    with web.store.engine.connect() as conn:  # handed to the host pool's workers
        pooled = conn.execute(select(schema.pool_flight.c.flight_id)).scalars().all()
    assert pooled == [new_id]
    api = web.client.post(
        f"/api/flights/{web.flights[1]}/jobs/build/retest",
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert api.status_code == 201
    assert [j.name for j in web.store.get_flight(api.json()["flight"]).jobs] == ["build"]
    wrong = web.client.post(
        f"/api/flights/{new_id}/cancel", headers={"authorization": "Bearer nope"}
    )
    assert wrong.status_code == 403
    ok = web.client.post(
        f"/api/flights/{new_id}/cancel", headers={"authorization": f"Bearer {TOKEN}"}
    )
    assert ok.status_code == 202 and web.store.cancel_requested(new_id)


def test_read_only_without_a_token(web: Fixture) -> None:
    client = TestClient(create_app(web.lab, web.store), base_url="http://localhost")
    assert "read-only" in client.get("/flights").text
    assert client.post(f"/flights/{web.flights[0]}/cancel").status_code == 403
    assert client.post("/login", content="token=x").status_code == 403
    assert 'name="csrf"' not in client.get(f"/flights/{web.flights[0]}/jobs/test").text


def test_request_log_is_one_json_line(web: Fixture, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="labgate.web"):
        web.client.get("/flights?outcome=fail")
        web.client.get("/flights/999")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "labgate.web"]
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("GET", "/flights", 200),
        ("GET", "/flights/999", 404),
    ]
    assert all(isinstance(x["duration_ms"], float) for x in lines)


def test_stream_log_sends_what_is_appended_until_the_step_ends(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    log.write_text("one\n")
    states = iter([Outcome.RUNNING, Outcome.RUNNING, Outcome.PASS])
    writes = iter(["two\n", "thr\u00e9e\n"])

    def state() -> LiveStep:
        outcome = next(states)
        with log.open("ab") as f:  # the runner appends between two polls
            f.write(next(writes, "").encode()[:5])
        return LiveStep(outcome, log, 0 if outcome.finished else None, 1.25)

    async def collect() -> list[bytes]:
        return [event async for event in stream_log(state, 0, interval=0)]

    events = asyncio.run(collect())
    text = "".join(json.loads(e.split(b"data: ", 1)[1])["text"] for e in events if b"chunk" in e)
    assert text == "one\ntwo\nthr\u00e9"
    assert json.loads(events[-1].split(b"data: ", 1)[1]) == {
        "outcome": "pass",
        "exit_status": 0,
        "duration_s": 1.25,
    }


def test_hosts_show_quarantine_busy_and_history(web: Fixture) -> None:
    from labgate.store.hosts import HostRegistry

    assert "free" in web.client.get("/hosts").text
    HostRegistry(web.store.engine).quarantine("h0", "disk errors <b>sda</b>")
    page = web.client.get("/hosts").text
    assert 'class="o-broken cell">quarantined' in page
    assert "disk errors &lt;b&gt;sda&lt;/b&gt;" in page
    host = web.client.get("/hosts/h0").text
    assert "quarantine" in host and f"/flights/{web.flights[2]}/jobs/test" in host
    api = web.client.get("/api/hosts").json()
    assert api["next"] is None
    assert api["items"][0]["state"] == "quarantined"
    assert api["items"][0]["status"]["quarantined"] == "disk errors <b>sda</b>"
    running = web.store.create_flight("main", Blessing.ADHOC, {"xen": web.sha}, _jobs())
    web.store.start_job(web.store.flight_jobs(running)[0].id, "h0")
    busy = web.client.get("/api/hosts").json()["items"][0]["busy"]
    assert [(b["flight"], b["job"]) for b in busy] == [(running, "build")]
