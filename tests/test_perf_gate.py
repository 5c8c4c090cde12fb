"""Performance verdicts in the push gate, end to end: real upstreams, real flights whose step
reports a time that the tree under test sets, judged against the baseline flight's."""

from __future__ import annotations

from pathlib import Path

import pytest

from labgate.config import ConfigError, load_lab
from labgate.model import Blessing
from labgate.store import Store
from labs import job, step
from test_gate import ANN, Upstream, cycle, write_gate_lab
from test_perf_web import record

# Five runs report COST+1, +2, +3, +4, +0 (the counter file lives in the job's fresh work dir).
BENCH = (
    "echo x >> runs; n=$(wc -l < runs); c=$(cat xen/COST); "
    "echo LABGATE-METRIC time=$((c + n % 5)) s"
)


def perf_lab(tmp_path: Path, upstream: Upstream, perf: str) -> Path:
    extra = f"\n[perf]\n{perf}\n\n" + job("perf", step("bench", BENCH) + "repeat = 5\n")
    return write_gate_lab(tmp_path, upstream, database=None, extra=extra)


def staging_costs(upstream: Upstream, base: int, staged: int) -> str:
    """master at COST ``base``, staging one commit ahead at COST ``staged``; the staged sha."""
    first = upstream.commit("base", {"VERSION": "1\n", "COST": f"{base}\n"}, ANN)
    upstream.push(first, "master")
    change = upstream.commit("cost", {"COST": f"{staged}\n"}, ANN)
    upstream.push(change, "staging")
    return change


def real_flights(lab_dir: Path) -> list[list[str]]:
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        flights = store.get_flights(
            [f.id for f in store.list_flights("xen-unstable", blessing=Blessing.REAL)]
        )
    return [sorted(j.name for j in f.jobs) for f in reversed(flights)]


def test_a_blocking_slowdown_buys_repeats_then_stops_the_push(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path)
    change = staging_costs(upstream, 100, 120)
    lab_dir = perf_lab(tmp_path, upstream, "block = true")
    result = cycle(lab_dir)
    assert result.action == "not-pushed" and result.verdict == "regression"
    assert upstream.ref("master") != change
    # 5 runs against 5 cannot reach alpha = 0.01: one retest of the job bought 5 more
    assert real_flights(lab_dir) == [
        ["build", "perf", "test"],
        ["build", "perf", "test"],
        ["perf"],
    ]
    (time,) = result.perf
    assert (time.job, time.step, time.metric, time.host_class) == ("perf", "bench", "time", "h0")
    assert time.word == "regression" and time.blocking
    assert time.current == (121.0, 122.0, 123.0, 124.0, 120.0) * 2
    assert time.baseline == (101.0, 102.0, 103.0, 104.0, 100.0)
    assert (
        "Performance regressions, blocking:\n"
        " perf bench time [h0]  +19.6% (102 -> 122 s, p=0.0013, 5 vs 10 runs)\n"
    ) in result.report
    assert "Not pushing. (1 performance regression(s))" in result.report
    shown = result.to_json()["perf"][0]
    assert shown["verdict"] == "regression" and shown["blocking"] is True
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        stored = store.verdict(result.flight)  # type: ignore[arg-type]
    assert stored is not None and stored["push_allowed"] is False
    assert stored["data"]["perf"][0]["verdict"] == "regression"


def test_an_improvement_is_reported_and_pushed_and_a_slowdown_is_report_only_by_default(
    tmp_path: Path,
) -> None:
    upstream = Upstream(tmp_path)
    change = staging_costs(upstream, 100, 80)
    lab_dir = perf_lab(tmp_path, upstream, "max_repeats = 10")
    result = cycle(lab_dir)
    assert result.action == "pushed" and upstream.ref("master") == change
    (time,) = result.perf
    assert time.word == "improvement" and not time.blocking
    assert "Performance improvements:\n perf bench time [h0]  -19.6% (102 -> 82 s" in result.report
    # now slower again: a regression, reported, not blocking (block = false by default)
    slower = upstream.commit("slower", {"COST": "100\n"}, ANN)
    upstream.push(slower, "staging")
    again = cycle(lab_dir)
    assert again.action == "pushed" and upstream.ref("master") == slower
    assert [v.word for v in again.perf] == ["regression"]
    assert "Performance regressions, not blocking (lab.toml: block = false):" in again.report


def test_an_undecided_metric_is_reported_unknown_once_max_repeats_is_reached(
    tmp_path: Path,
) -> None:
    upstream = Upstream(tmp_path)
    staging_costs(upstream, 100, 120)
    lab_dir = perf_lab(tmp_path, upstream, "max_repeats = 5\nblock = true")
    result = cycle(lab_dir)
    assert result.action == "pushed"  # unknown is not a regression
    assert [v.word for v in result.perf] == ["unknown"]
    assert real_flights(lab_dir) == [["build", "perf", "test"], ["build", "perf", "test"]]
    assert "Performance not decided (no more runs allowed: max_repeats):" in result.report


def test_a_blocking_slowdown_is_bisected_to_the_commit_that_planted_it(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path)
    base = upstream.commit("base", {"VERSION": "1\n", "COST": "100\n"}, ANN)
    upstream.push(base, "master")
    commits = []
    for k in range(1, 7):
        files = {f"file{k}": f"{k}\n", **({"COST": "125\n"} if k == 4 else {})}
        commits.append(upstream.commit(f"change {k}", files, ANN))
    upstream.push(commits[-1], "staging")
    # the bisected item is a metric: no flake history; the lab says the slowdown is not noise
    gate_keys = 'bisect_flaky = "no"\nbisect_intermittent = "no"\n'
    lab_dir = write_gate_lab(
        tmp_path, upstream, database=None,
        extra=gate_keys + "\n[perf]\nblock = true\n\n"
        + job("perf", step("bench", BENCH) + "repeat = 5\n"),
    )  # fmt: skip
    result = cycle(lab_dir)
    assert result.action == "not-pushed" and [v.word for v in result.perf] == ["regression"]
    (bisection,) = result.bisections
    assert bisection.culprit is not None and bisection.culprit.commit == commits[3]
    assert (bisection.job, bisection.step) == ("perf", "bench")
    assert bisection.testcase == "metric time on h0"
    assert "change 4" in result.report


def test_the_report_names_a_change_point_found_with_the_flight_and_links_its_trend(
    tmp_path: Path,
) -> None:
    upstream = Upstream(tmp_path)
    staging_costs(upstream, 120, 120)
    lab_dir = perf_lab(tmp_path, upstream, "max_repeats = 10")
    with (lab_dir / "lab.toml").open("a") as toml:
        toml.write('\n[web]\nurl = "https://lab.example.org/"\n')
    lab = load_lab(lab_dir)
    # the history so far: 8 flights at 102 s, then 3 at 122 s: too few after it for a change
    # point; the gate's baseline flight makes 4 and its flight 5
    with Store.open(lab.database_url) as store:
        runs = [[c + 1.0, c + 2.0, c + 3.0, c + 4.0, c + 0.0] for c in [100] * 8 + [120] * 3]
        recorded = [record(store, "xen-unstable", values, host_class="h0") for values in runs]
    result = cycle(lab_dir)
    assert result.action == "pushed"
    assert (
        "Performance change points found with this flight (the trend pages):\n"
        f" perf bench time [h0]  +19.6% at flight {recorded[8]} (102 -> 122 s)"
        "  https://lab.example.org/perf/xen-unstable/perf/bench/time\n"
    ) in result.report
    again = cycle(lab_dir)  # nothing new to test: no flight, no second mention
    assert "change points found" not in (again.report or "")


def test_web_url_must_be_an_http_url(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path)
    lab_dir = perf_lab(tmp_path, upstream, "")
    with (lab_dir / "lab.toml").open("a") as toml:
        toml.write('\n[web]\nurl = "lab.example.org"\n')
    with pytest.raises(ConfigError, match=r"web\.url.*'lab\.example\.org' is not an http\(s\) URL"):
        load_lab(lab_dir)
