"""The metrics a step reports, read from its output and its files.

Two ways in, both read after every run of the step (``repeat = N`` runs it N times in one job):

- a line of the step's output (its log) ``LABGATE-METRIC name=value unit [lower-is-better|
  higher-is-better]`` (at the start of the line; lower is better when the direction is left out);
- files matching lab.toml's ``metrics = "json:<glob>"`` (relative to the job's work dir), each a
  JSON object ``{"<name>": {"value": <number>, "unit": "<unit>", "direction":
  "lower-is-better"|"higher-is-better"}, ...}`` (``direction`` may be left out).

A malformed line or file raises `MetricsError` naming the file (and line) and what is wrong; the
well-formed metrics of the same run are kept (`read_run` returns both). A metric's host class is
the host's ``equiv-*`` flags (hosts that measure alike), or the host's own name without one: values
are only ever compared within a class.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from labgate.model import HostSpec

MARKER = "LABGATE-METRIC"
LOWER = "lower-is-better"
HIGHER = "higher-is-better"
METRIC_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/+-]{0,199}")
_UNIT = re.compile(r"[^\s=]{1,40}")


class MetricsError(Exception):
    """A metric line or file labgate cannot read; the message names where and what."""


@dataclass(frozen=True)
class Metric:
    """One value of one run of a step. ``run`` counts the step's repeats from 1."""

    name: str
    value: float
    unit: str
    lower_is_better: bool = True
    run: int = 1


@dataclass(frozen=True)
class StoredMetric:
    """One stored value: which flight, job and step measured it, on which host."""

    flight: int
    job: str
    step: str
    host: str
    host_class: str
    metric: Metric

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(job, step, metric, host class): what is compared with what."""
        return (self.job, self.step, self.metric.name, self.host_class)


def host_class(host: HostSpec) -> str:
    """The host's ``equiv-*`` flags, sorted and joined with ``,``; its name when it has none."""
    equiv = sorted(f for f in host.flags if f.startswith("equiv-"))
    return ",".join(equiv) or host.name


def parse_metric_line(line: str, run: int = 1) -> Metric:
    """One ``LABGATE-METRIC name=value unit [direction]`` line; ValueError says what is wrong."""
    words = line.split()
    if not words or words[0] != MARKER:
        raise ValueError(f"does not start with {MARKER}")
    if len(words) not in (3, 4):
        raise ValueError(f"expected '{MARKER} name=value unit [{LOWER}|{HIGHER}]'")
    name, sep, text = words[1].partition("=")
    if not sep:
        raise ValueError(f"{words[1]!r} is not name=value")
    unit = words[2]
    direction = words[3] if len(words) == 4 else LOWER
    if direction not in (LOWER, HIGHER):
        raise ValueError(f"direction {direction!r} is neither {LOWER} nor {HIGHER}")
    return _metric(name, _number(text), unit, direction, run)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"value {text!r} is not a number") from None


def _metric(name: str, value: float, unit: str, direction: str, run: int) -> Metric:
    if not METRIC_NAME.fullmatch(name):
        raise ValueError(
            f"name {name!r}: use letters, digits and _ . : / + - (up to 200 characters)"
        )
    if not math.isfinite(value):
        raise ValueError(f"value of {name} is {value}, not a finite number")
    if not _UNIT.fullmatch(unit):
        raise ValueError(f"unit {unit!r} of {name}: one word of up to 40 characters")
    return Metric(name, value, unit, direction == LOWER, run)


def marked_lines(log: Path, start: int = 0) -> list[tuple[int, str]]:
    """The ``LABGATE-METRIC`` lines of ``log`` from byte ``start`` on (what one run of a step
    appended), each with its line number in the whole log; none when the log does not exist.

    Asked after every run of every step, on the controller's event loop: the log is searched
    for the marker (a memory map, no line by line Python), and lines are counted only where it
    stands, so a large log without metrics costs next to nothing."""
    marker = MARKER.encode()
    try:
        with open(log, "rb") as file:
            if os.fstat(file.fileno()).st_size <= start:
                return []
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _marked(data, marker, start)
    except FileNotFoundError:
        return []


def _marked(data: mmap.mmap, marker: bytes, start: int) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    number, counted = 1, 0  # the line number at byte ``counted``
    at = data.find(marker, start)
    while at != -1:
        if at == 0 or data[at - 1] == 0x0A:  # the marker opens the line
            number += data[counted:at].count(b"\n")
            counted = at
            end = data.find(b"\n", at)
            raw = data[at : len(data) if end == -1 else end]
            found.append((number, raw.decode("utf-8", errors="replace").rstrip("\r")))
        at = data.find(marker, at + 1)
    return found


def metrics_in_lines(
    lines: Iterable[tuple[int, str]], where: str, run: int = 1
) -> tuple[list[Metric], list[str]]:
    """The metrics of numbered ``LABGATE-METRIC`` lines, and one message per bad line
    (``<where>: line N: ...``)."""
    found: list[Metric] = []
    problems: list[str] = []
    for number, line in lines:
        try:
            found.append(parse_metric_line(line, run))
        except ValueError as error:
            problems.append(f"{where}: line {number}: {error}")
    return found, problems


def parse_metric_file(path: Path, run: int = 1) -> list[Metric]:
    """The metrics of one JSON metric file (the format is in this module's docstring)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MetricsError(f"{path}: cannot read: {error.strerror or error}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MetricsError(f"{path}: not JSON: {error}") from error
    if not isinstance(data, dict):
        raise MetricsError(f"{path}: expected an object of metrics, got {type(data).__name__}")
    return [_json_metric(path, name, entry, run) for name, entry in data.items()]


def _json_metric(path: Path, name: str, entry: object, run: int) -> Metric:
    where = f"{path}: metric {name!r}"
    if not isinstance(entry, dict):
        raise MetricsError(f'{where}: expected {{"value": ..., "unit": ...}}')
    unknown = sorted(set(entry) - {"value", "unit", "direction"})
    if unknown:
        raise MetricsError(f"{where}: unknown key {unknown[0]!r} (value, unit, direction)")
    value, unit = entry.get("value"), entry.get("unit")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricsError(f"{where}: value {json.dumps(value)} is not a number")
    if not isinstance(unit, str):
        raise MetricsError(f"{where}: unit {json.dumps(unit)} is not a string")
    direction = entry.get("direction", LOWER)
    if direction not in (LOWER, HIGHER):
        raise MetricsError(
            f"{where}: direction {json.dumps(direction)} is neither {LOWER} nor {HIGHER}"
        )
    try:
        return _metric(name, float(value), unit, str(direction), run)
    except ValueError as error:
        raise MetricsError(f"{path}: {error}") from None


def metric_files(spec: str, root: Path) -> list[Path]:
    """The files matching ``spec`` (``"json:<glob>"``, relative to ``root``), in name order."""
    kind, sep, pattern = spec.partition(":")
    if kind != "json" or not sep or not pattern:
        raise MetricsError(f"metrics {spec!r}: expected 'json:<glob>'")
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise MetricsError(f"metrics {spec!r}: the glob must stay inside the job's work dir")
    return sorted(p for p in root.glob(pattern) if p.is_file())


def read_run(
    lines: Iterable[tuple[int, str]], log_name: str, spec: str | None, root: Path, run: int
) -> tuple[list[Metric], list[str]]:
    """Every metric of one run of a step (its output's numbered ``LABGATE-METRIC`` lines, then
    its files), and one message per line or file that could not be read. A metric reported twice
    in one run is a problem; its first value is kept."""
    found, problems = metrics_in_lines(lines, log_name, run)
    if spec is not None:
        try:
            paths = metric_files(spec, root)
        except MetricsError as error:
            paths, problems = [], [*problems, str(error)]
        for path in paths:
            try:
                found += parse_metric_file(path, run)
            except MetricsError as error:
                problems.append(str(error))
    seen: set[str] = set()
    kept: list[Metric] = []
    for metric in found:
        if metric.name in seen:
            problems.append(f"run {run}: metric {metric.name} reported twice; the first is kept")
        else:
            seen.add(metric.name)
            kept.append(metric)
    return kept, problems


def problems_reason(reason: str | None, problems: Sequence[str]) -> str | None:
    """The step's reason with what was wrong with its metrics after it."""
    if not problems:
        return reason
    said = "; ".join(problems[:5]) + (
        f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    )
    return f"{reason}; metrics: {said}" if reason else f"metrics: {said}"
