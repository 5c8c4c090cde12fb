"""Running a step that is measured: its ``repeat`` runs one after another in the job's session,
each run's metrics read from the part of the log it wrote and from its metric files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labgate.executor import JobSession, StepRun
from labgate.model import Outcome, StepSpec
from labgate.perf.metrics import Metric, marked_lines, problems_reason, read_run


@dataclass(frozen=True)
class MeasuredStep:
    """How a step's runs ended: ``run`` is the last run's end (a run that did not pass ends the
    repeats; its duration is every run's), ``metrics`` every run's, ``problems`` what could not be
    read (already said in ``run.reason``)."""

    run: StepRun
    metrics: tuple[Metric, ...]
    problems: tuple[str, ...]


async def run_step(
    session: JobSession,
    step: StepSpec,
    env: Mapping[str, str],
    log: Path,
    workdir: Path,
    log_name: str,
) -> MeasuredStep:
    """Run ``step`` ``step.repeat`` times (stopping at a run that does not pass) and read each
    run's metrics. ``workdir`` is the job's local work dir (metric files are brought back into it),
    ``log_name`` the log as a message names it. Raises what ``session.run_step`` raises."""
    metrics: list[Metric] = []
    problems: list[str] = []
    duration = 0.0
    result = StepRun(Outcome.PASS, 0, 0.0)
    for run in range(1, step.repeat + 1):
        start = log.stat().st_size if log.exists() else 0
        result = await session.run_step(step.run, env=env, log=log, timeout=step.timeout)
        duration += result.duration_s
        if result.outcome is Outcome.BROKEN:
            break
        if step.metrics is not None:
            await session.fetch_results(step.metrics.partition(":")[2])
        found, bad = read_run(marked_lines(log, start), log_name, step.metrics, workdir, run)
        metrics += found
        problems += bad
        if result.outcome is not Outcome.PASS:
            break
    reason = result.reason
    if step.repeat > 1 and result.outcome is not Outcome.PASS:
        reason = f"run {run} of {step.repeat}: {reason or result.outcome}"
    ended = StepRun(result.outcome, result.exit_status, duration, problems_reason(reason, problems))
    return MeasuredStep(ended, tuple(metrics), tuple(problems))
