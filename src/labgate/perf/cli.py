"""``labgate perf``: the performance core from the command line, so that any series can be checked
from outside (by a benchmark, another detector's harness, a shell pipe)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import click

from labgate.commandline import fail
from labgate.perf.changepoint import DEFAULT_ALPHA, DEFAULT_MIN_SEGMENT, change_points


@click.group("perf")
def perf_group() -> None:
    """Performance metrics: change points over a history."""


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
