"""``labgate perf``: the performance core from the command line, so that any series can be checked
from outside (by a benchmark, another detector's harness, a shell pipe)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click

from labgate.commandline import (
    LabgateGroup,
    emit_json,
    fail,
    json_on_stdout,
    json_option,
    known_branch,
    lab_option,
    open_lab,
    open_store,
)
from labgate.perf.changepoint import DEFAULT_ALPHA, DEFAULT_MIN_SEGMENT, change_points


@click.group("perf", cls=LabgateGroup)
def perf_group() -> None:
    """Performance metrics: a flight's against its baseline's, histories, change points."""


@perf_group.command("changepoints")
@click.option(
    "--min-segment",
    default=DEFAULT_MIN_SEGMENT,
    show_default=True,
    type=click.IntRange(min=2),
    help="The fewest values a segment between change points may have.",
)
@click.option(
    "--alpha",
    default=DEFAULT_ALPHA,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Largest p-value (corrected for the choice of the split) of a change point.",
)
@click.option(
    "--min-change",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Smallest relative change of the median to report (0.05: 5%).",
)
def changepoints_command(min_segment: int, alpha: float, min_change: float) -> None:
    """Change points of each history read on stdin.

    Reads one JSON array of numbers per line on stdin (a metric's values, oldest first); prints
    for each a JSON array of the 0-based indices i where value i is the first after a change.
    Each answer is flushed before the next line is read. A line that is not such an array ends
    the command with exit status 2 and a message naming the line.
    """
    for number, line in enumerate(iter(sys.stdin.readline, ""), start=1):
        values = _parse_line(line, number)
        found = change_points(values, min_segment=min_segment, alpha=alpha, min_change=min_change)
        sys.stdout.write(json.dumps([point.index for point in found]) + "\n")
        sys.stdout.flush()


def _parse_line(line: str, number: int) -> list[float]:
    if not line.strip():
        fail(f"stdin line {number}: empty; expected a JSON array of numbers")
    try:
        data: Any = json.loads(line.strip())
    except json.JSONDecodeError as error:
        fail(f"stdin line {number}: not JSON ({error.msg} at column {error.colno})")
    if not isinstance(data, list):
        fail(f"stdin line {number}: expected a JSON array of numbers, got {type(data).__name__}")
    for index, value in enumerate(data):
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail(f"stdin line {number}: value {index} is {json.dumps(value)}, not a number")
        if not math.isfinite(value):
            fail(f"stdin line {number}: value {index} is {value}, not a finite number")
    return [float(value) for value in data]


@perf_group.command("metrics")
@lab_option
@click.argument("flight", type=int)
@json_option
def metrics_command(lab_dir: Path, flight: int, json_to: str | None) -> None:
    """FLIGHT's metrics judged against its baseline's, per host class.

    The baseline is the one the gate judged the flight against (with the values of the gate's
    retests of it), else the branch's current baseline. Settings are lab.toml's ([perf] and the
    steps' own keys).
    """
    from labgate.perf.verdict import judge_metrics
    from labgate.report import data, metric_line

    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        found = store.get_flights([flight])
        if not found:
            fail(f"no flight {flight} in the store")
        branch = found[0].branch
        judged = store.verdict(flight)
        baseline = judged["baseline_flight"] if judged else store.baseline(branch)
        flights = (judged or {}).get("data", {}).get("perf_flights") or [flight]
        if baseline == flight:
            baseline = None
        verdicts = judge_metrics(
            store.flight_metrics(flights),
            store.flight_metrics([baseline] if baseline is not None else []),
            lab.perf_for,
        )
    if not json_on_stdout(json_to):
        against = f"baseline flight {baseline}" if baseline is not None else "no baseline"
        click.echo(f"flight {flight} ({data(branch)}) against {against}")
        if not verdicts:
            click.echo(" (no metrics)")
        width = max((len(v.word) for v in verdicts), default=0)
        for v in verdicts:
            click.echo(f" {v.word:<{width}}  {data(metric_line(v))}")
    emit_json(
        {
            "flight": flight,
            "branch": branch,
            "baseline": baseline,
            "flights": list(flights),
            "metrics": [v.to_json() for v in verdicts],
        },
        json_to,
    )


@perf_group.command("history")
@lab_option
@click.argument("branch")
@click.argument("job")
@click.argument("step")
@click.argument("metric")
@click.option("--limit", default=500, show_default=True, help="How many flights to look back.")
@json_option
def history_command(
    lab_dir: Path, branch: str, job: str, step: str, metric: str, limit: int, json_to: str | None
) -> None:
    """METRIC of JOB's STEP over BRANCH's flights (real and bisect), one value a flight (the
    median of its runs) per host class, with the change points found in it. A job or step
    that neither lab.toml nor the history knows is an error (exit 2)."""
    from labgate.perf.history import history_json, metric_series
    from labgate.report import data

    lab = open_lab(lab_dir)
    known_branch(lab, branch)
    with open_store(lab) as store:
        stored = store.metric_history(branch, job, step, metric, limit=limit)
    known = any(j.name == job and step in {s.name for s in j.steps} for j in lab.jobs_for(branch))
    if not stored and not known:
        fail(f"branch {branch!r} has no job {job!r} with a step {step!r} (lab.toml nor history)")
    series = metric_series(stored, min_change=lab.perf_for(job, step).min_change)
    if not json_on_stdout(json_to):
        if not series:
            click.echo(data(f"{job} {step}: no values of {metric} on {branch}"))
        for one in series:
            click.echo(data(f"{job} {step} {metric} [{one.host_class}] on {branch}"))
            changes = {c.index: c for c in one.changes}
            for index, point in enumerate(one.points):
                line = (
                    f" flight {point.flight:>6}  {point.value:>10g} {one.unit}  ({point.runs} runs)"
                )
                if index in changes:
                    c = changes[index]
                    line += f"  <- change {c.relative_change:+.1%} ({c.before:g} -> {c.after:g})"
                click.echo(data(line))
    emit_json(history_json(branch, job, step, metric, series), json_to)
