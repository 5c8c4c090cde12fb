"""Metrics in: real flights whose steps report metrics (output lines, JSON files, repeats), stored
per run with the host and its host class, on both stores; bad metrics named where they are."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from labgate.config import ConfigError, load_lab
from labgate.flight import plan_flight
from labgate.flights import Flights
from labgate.model import FlightResult, Outcome
from labgate.perf.metrics import Metric, parse_metric_file, parse_metric_line
from labgate.store import Store
from labgate.store.metrics import StepMetrics
from labs import job, local_host, step, write_lab

# Each run appends to a counter file in the work dir, so run k reports k-dependent values.
COUNTING = (
    "echo x >> runs; n=$(wc -l < runs); "
    "echo LABGATE-METRIC boot=$((10 + n)) s; "
    "echo LABGATE-METRIC rate=$((100 * n)) MB/s higher-is-better; "
    # (braces doubled: lab.toml's commands expand {var})
    'printf \'{{"size": {{"value": %d, "unit": "KiB"}}}}\' $((n + 1000)) > out.json'
)


def measured_step(run: str, *extra: str) -> str:
    return step("bench", run) + "".join(f"{line}\n" for line in extra)


def run_flight(lab_path: Path) -> tuple[FlightResult, Store]:
    lab = load_lab(lab_path)
    store = Store.open(lab.database_url)
    flight_id = plan_flight(lab, store, "main")
    return asyncio.run(Flights(lab, store).run(flight_id)), store


def test_repeats_lines_and_json_files_are_stored_per_run_with_host_and_class(
    tmp_path: Path, database_url: str
) -> None:
    jobs = job(
        "perf",
        measured_step(COUNTING, "repeat = 3", 'metrics = "json:*.json"'),
        step("after", "echo LABGATE-METRIC tail=1.5 s"),
    )
    hosts = local_host("fast0", flags=["equiv-fast", "arch-amd64"])
    lab_dir = write_lab(
        tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs, hosts=hosts, database=database_url
    )
    flight, store = run_flight(lab_dir.path)
    with store:
        assert flight.outcome is Outcome.PASS
        bench = flight.jobs[0].steps[0]
        assert bench.outcome is Outcome.PASS and bench.reason is None
        stored = store.flight_metrics([flight.id])
    got = [(m.step, m.metric.run, m.metric.name, m.metric.value) for m in stored]
    assert got == [
        ("bench", 1, "boot", 11.0),
        ("bench", 1, "rate", 100.0),
        ("bench", 1, "size", 1001.0),
        ("bench", 2, "boot", 12.0),
        ("bench", 2, "rate", 200.0),
        ("bench", 2, "size", 1002.0),
        ("bench", 3, "boot", 13.0),
        ("bench", 3, "rate", 300.0),
        ("bench", 3, "size", 1003.0),
        ("after", 1, "tail", 1.5),  # a step without metrics keys: its lines count all the same
    ]
    assert {(m.host, m.host_class) for m in stored} == {("fast0", "equiv-fast")}
    assert stored[1].metric == Metric("rate", 100.0, "MB/s", lower_is_better=False, run=1)
    assert stored[2].metric.unit == "KiB" and stored[2].metric.lower_is_better
    assert {m.flight for m in stored} == {flight.id} and {m.job for m in stored} == {"perf"}


def test_a_host_without_equiv_flags_is_its_own_class_and_a_failing_run_ends_the_repeats(
    tmp_path: Path,
) -> None:
    fails_second = COUNTING + '; test "$n" -lt 2'
    jobs = job("perf", measured_step(fails_second, "repeat = 4"))
    lab_dir = write_lab(
        tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs, hosts=local_host("box1")
    )
    flight, store = run_flight(lab_dir.path)
    with store:
        bench = flight.jobs[0].steps[0]
        assert bench.outcome is Outcome.FAIL
        assert bench.reason == "run 2 of 4: exit status 1"
        stored = store.flight_metrics([flight.id])
    # the failing run's metrics are kept too: nothing measured is lost
    assert [(m.metric.run, m.metric.name) for m in stored] == [
        (1, "boot"),
        (1, "rate"),
        (2, "boot"),
        (2, "rate"),
    ]
    assert {m.host_class for m in stored} == {"box1"}


def test_bad_metric_lines_and_files_are_named_in_the_reason_and_the_outcome_stays(
    tmp_path: Path, database_url: str
) -> None:
    run = (
        "echo starting; echo LABGATE-METRIC boot=fast s; echo LABGATE-METRIC ok=2 s; "
        'echo LABGATE-METRIC ok=3 s; echo \'{{"x": {{"value": 1}}}}\' > m.json'
    )
    jobs = job("perf", measured_step(run, 'metrics = "json:m.json"'))
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs, database=database_url)
    flight, store = run_flight(lab_dir.path)
    with store:
        bench = flight.jobs[0].steps[0]
        stored = store.flight_metrics([flight.id])
    assert bench.outcome is Outcome.PASS
    log = f"{flight.id}/perf/bench.log"
    assert bench.reason is not None
    assert f"{log}: line 2: value 'fast' is not a number" in bench.reason
    assert "m.json: metric 'x': unit null is not a string" in bench.reason
    assert "run 1: metric ok reported twice; the first is kept" in bench.reason
    assert [(m.metric.name, m.metric.value) for m in stored] == [("ok", 2.0)]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("LABGATE-METRIC boot 3 s", "'boot' is not name=value"),
        ("LABGATE-METRIC boot=3", "expected 'LABGATE-METRIC name=value unit"),
        ("LABGATE-METRIC boot=nan s", "value of boot is nan, not a finite number"),
        ("LABGATE-METRIC boot=3 s faster", "direction 'faster' is neither"),
        ("LABGATE-METRIC b@d=3 s", "name 'b@d': use letters, digits"),
        ("LABGATE-METRIC boot=3 s lower-is-better extra", "expected 'LABGATE-METRIC"),
    ],
)
def test_malformed_metric_lines_say_what_is_wrong(line: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_metric_line(line)
    assert problem in str(caught.value)


def test_metric_lines_and_files_read_their_values() -> None:
    assert parse_metric_line("LABGATE-METRIC boot=1e3 ms higher-is-better", run=2) == Metric(
        "boot", 1000.0, "ms", lower_is_better=False, run=2
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[1, 2]", "expected an object of metrics, got list"),
        ("{", "not JSON"),
        ('{"a": 3}', 'metric \'a\': expected {"value": ..., "unit": ...}'),
        ('{"a": {"value": true, "unit": "s"}}', "metric 'a': value true is not a number"),
        ('{"a": {"value": 1, "unit": "s", "why": 1}}', "metric 'a': unknown key 'why'"),
        ('{"a": {"value": 1, "unit": "s", "direction": "up"}}', 'direction "up" is neither'),
    ],
)
def test_malformed_metric_files_are_named_with_the_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(Exception) as caught:
        parse_metric_file(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert problem in str(caught.value)
    path.write_text(json.dumps({"a": {"value": 2, "unit": "s", "direction": "higher-is-better"}}))
    assert parse_metric_file(path) == [Metric("a", 2.0, "s", lower_is_better=False)]


@pytest.mark.parametrize(
    ("keys", "where", "problem"),
    [
        ('metrics = "xml:out.xml"', "job[0] (perf).step[0].metrics", "must be json:<glob>"),
        ("repeat = 0", "job[0] (perf).step[0].repeat", "must be >= 1 (got 0)"),
        ("min_change = -1.0", "job[0] (perf).step[0].min_change", "must be > 0 (got -1)"),
    ],
)
def test_bad_step_metric_keys_are_config_errors_naming_the_key(
    tmp_path: Path, keys: str, where: str, problem: str
) -> None:
    lab_dir = write_lab(
        tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=job("perf", measured_step("true", keys))
    )
    with pytest.raises(ConfigError) as caught:
        load_lab(lab_dir.path)
    found = [p for p in caught.value.problems if p.key == where]
    assert found, caught.value.problems
    assert problem in found[0].message


def test_a_step_without_metrics_ends_in_one_statement_and_metrics_share_its_transaction(
    tmp_path: Path, database_url: str
) -> None:
    lab_dir = write_lab(
        tmp_path / "lab", trees={"t": {"f": "x"}}, database=database_url,
        jobs=job("perf", step("plain", "true"), step("bench", "echo LABGATE-METRIC t=1 s")),
    )  # fmt: skip
    lab = load_lab(lab_dir.path)
    with Store.open(lab.database_url) as store:
        flight_id = plan_flight(lab, store, "main")
        plain, bench = store.flight_jobs(flight_id)[0].step_ids
        statements: list[str] = []

        def seen(*args: object) -> None:
            statements.append(str(args[2]).split()[0].upper())

        sa.event.listen(store.engine, "before_cursor_execute", seen)
        store.finish_step(plain, Outcome.PASS, exit_status=0, duration_s=0.1)
        assert statements == ["UPDATE"]
        statements.clear()
        measured = StepMetrics("local0", "local0", [Metric("t", 1.0, "s")])
        store.finish_step(bench, Outcome.PASS, exit_status=0, duration_s=0.1, metrics=measured)
        assert statements == ["UPDATE", "DELETE", "INSERT"]
        # again (a later attempt): the earlier attempt's values are replaced, not added to
        store.finish_step(bench, Outcome.PASS, exit_status=0, duration_s=0.1, metrics=measured)
        assert [m.metric for m in store.flight_metrics([flight_id])] == [Metric("t", 1.0, "s")]
