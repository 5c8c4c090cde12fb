"""The performance pages and their API (labgate.web.perf) with TestClient on both stores: a
branch's metrics, a metric's trend with its change points linked to the flights, the job page's
link to it, and embargoed flights' values hidden from those outside the embargo's group."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from labgate.config import load_lab
from labgate.model import Blessing, Embargo, FlightState, JobSpec, Outcome, StepSpec
from labgate.perf.metrics import Metric
from labgate.store import Store
from labgate.store.metrics import StepMetrics
from labgate.store.users import Users
from labgate.web import create_app
from labs import job, local_host, step, write_lab

GROUP = "security"
HIDDEN_VALUE = 777.0  # only embargoed flights measure this
TREND = "/perf/main/perf/bench/time"
JOBS = [JobSpec("perf", (StepSpec("bench", "true"),))]
JOB_TOML = job("perf", step("bench", "true"))


def record(
    store: Store,
    branch: str,
    values: list[float],
    embargo: Embargo | None = None,
    host_class: str = "equiv-small",
) -> int:
    """A finished real flight of ``branch`` whose step perf/bench measured ``values`` (a run
    each) on host h0 of ``host_class``."""
    flight = store.create_flight(branch, Blessing.REAL, {}, JOBS, embargo)
    store.set_flight_state(flight, FlightState.RUNNING)
    (stored,) = store.flight_jobs(flight)
    store.start_job(stored.id, "h0")
    store.start_step(stored.step_ids[0], f"{flight}/perf/0.log")
    runs = [Metric("time", value, "s", run=n + 1) for n, value in enumerate(values)]
    store.finish_step(stored.step_ids[0], Outcome.PASS, exit_status=0, duration_s=1.0,
                      metrics=StepMetrics("h0", host_class, runs))  # fmt: skip
    store.finish_job(stored.id, Outcome.PASS, None)
    store.set_flight_state(flight, FlightState.FINISHED, Outcome.PASS)
    return flight


@dataclass
class Perf:
    client: TestClient
    public: list[int]
    hidden: list[int]
    headers: dict[str, dict[str, str]]

    def get(self, who: str, path: str) -> Any:
        return self.client.get(path, headers=self.headers[who])


@pytest.fixture
def perf(tmp_path: Path, database_url: str) -> Iterator[Perf]:
    lab_dir = write_lab(
        tmp_path / "lab", trees={"xen": {"README": "x\n"}}, database=database_url,
        hosts=local_host("h0", flags=["equiv-small"]), jobs=JOB_TOML,
    )  # fmt: skip
    lab = load_lab(lab_dir.path)
    store = Store.open(lab.database_url)
    users = Users(store.engine)
    users.add("alice", groups=[GROUP])
    users.add("bob", groups=["other"])
    headers = {
        "anonymous": {},
        "outsider": {"authorization": "Bearer " + users.create_token("bob")},
        "member": {"authorization": "Bearer " + users.create_token("alice")},
    }
    embargo = Embargo(GROUP, datetime(2099, 1, 1, tzinfo=UTC))
    runs = [[100.0, 101.0, 99.0]] * 8 + [[130.0, 131.0, 129.0]] * 8
    public = [record(store, "main", values) for values in runs]
    # then embargoed flights, a change of their own: only the group sees them and their change
    hidden = [record(store, "main", [HIDDEN_VALUE] * 3, embargo) for _ in range(6)]
    record(store, "xsa", [5.0], embargo)  # a branch with embargoed flights only
    client = TestClient(create_app(lab, store), base_url="http://localhost")
    try:
        yield Perf(client, public, hidden, headers)
    finally:
        client.close()
        store.close()


def test_the_branch_index_lists_its_metrics_with_links_to_their_trends(perf: Perf) -> None:
    page = perf.get("anonymous", "/perf/main")
    assert page.status_code == 200
    assert f'<a href="{TREND}">time</a>' in page.text
    api = perf.get("anonymous", "/api/perf/main").json()
    assert api["next"] is None and api["items"] == [
        {"job": "perf", "step": "bench", "metric": "time", "flights": 16,
         "newest": perf.public[-1], "trend": TREND},
    ]  # fmt: skip
    assert perf.get("member", "/api/perf/main").json()["items"][0]["flights"] == 22


def test_the_trend_marks_the_change_point_and_links_points_to_flights(perf: Perf) -> None:
    page = perf.get("anonymous", TREND)
    assert page.status_code == 200
    dots = re.findall(r'<a class="point" href="/flights/(\d+)" data-flight="\1">', page.text)
    assert [int(d) for d in dots] == perf.public
    changed = perf.public[8]
    marks = re.findall(r'<a class="change-point" href="/flights/(\d+)"', page.text)
    assert [int(m) for m in marks] == [changed]
    assert f"change at flight {changed}: +30.0% (100 -&gt; 130 s)" in page.text
    (series,) = perf.get("anonymous", "/api" + TREND).json()["series"]
    assert series["host_class"] == "equiv-small"
    assert [c["flight"] for c in series["change_points"]] == [changed]
    assert [f["value"] for f in series["flights"]] == [100.0] * 8 + [130.0] * 8


def test_embargoed_flights_and_their_change_points_are_hidden_from_outsiders(perf: Perf) -> None:
    for who in ("anonymous", "outsider"):
        (series,) = perf.get(who, "/api" + TREND).json()["series"]
        assert [f["flight"] for f in series["flights"]] == perf.public, who
        assert [c["flight"] for c in series["change_points"]] == [perf.public[8]], who
        page = perf.get(who, TREND).text
        assert "777" not in page and f"/flights/{perf.hidden[0]}" not in page, who
        for path in ("/perf/xsa", "/api/perf/xsa", "/perf/xsa/perf/bench/time"):
            hidden, missing = perf.get(who, path), perf.get(who, path.replace("xsa", "nosuch"))
            assert hidden.status_code == missing.status_code == 404, (who, path)
            assert hidden.text.replace("xsa", "nosuch") == missing.text, (who, path)
    (series,) = perf.get("member", "/api" + TREND).json()["series"]
    assert [f["flight"] for f in series["flights"]] == perf.public + perf.hidden
    assert [c["flight"] for c in series["change_points"]] == [perf.public[8], perf.hidden[0]]
    page = perf.get("member", TREND).text
    assert f'<a class="change-point" href="/flights/{perf.hidden[0]}"' in page
    assert perf.get("member", "/perf/xsa").status_code == 200


def test_the_job_page_links_to_the_trends_of_its_metrics(perf: Perf) -> None:
    page = perf.get("anonymous", f"/flights/{perf.public[0]}/jobs/perf").text
    assert f'performance trends: <a href="{TREND}">bench time</a>' in page


def test_an_unknown_metric_is_missing(perf: Perf) -> None:
    missing = perf.get("anonymous", "/api/perf/main/perf/bench/boot")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no values of 'boot' of perf bench on branch 'main'"}


def test_the_host_of_web_url_is_a_name_of_the_dashboard(tmp_path: Path) -> None:
    lab_dir = write_lab(tmp_path / "lab", trees={"xen": {"README": "x\n"}}, jobs=JOB_TOML)
    with lab_dir.toml.open("a") as toml:
        toml.write('\n[web]\nurl = "https://lab.example.org/"\n')
    lab = load_lab(lab_dir.path)
    with Store.open(lab.database_url) as store:
        app = create_app(lab, store)
        assert (
            TestClient(app, base_url="https://lab.example.org").get("/flights").status_code == 200
        )
        assert TestClient(app, base_url="https://other.example").get("/flights").status_code == 400
