"""The ``labgate`` command line: wiring only; the work is done by the core and the edges.

Exit statuses: 0 success (every job passed or skipped), 1 a flight did not pass, 2 a usage or
configuration error (always one clear message, never a traceback), 130 cancelled by Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from labgate import __version__
from labgate.bisect.cli import bisect_group
from labgate.commandline import (
    CANCELLED,
    ID,
    fail,
    flight_options,
    lab_option,
    open_lab,
    open_store,
    plan_from_options,
)
from labgate.config import Lab, render_plan
from labgate.model import FlightResult, FlightState, Outcome
from labgate.perf.cli import perf_group
from labgate.progress import FlightProgress
from labgate.store import Store, StoreError
from labgate.text import flight_table, flights_table, revisions_table


def console_for(json_output: bool) -> Console:
    # with --json, stdout is for the JSON alone; progress goes to stderr
    return Console(stderr=json_output, highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labgate")
def main() -> None:
    """labgate: a test lab controller (flights, push gate, bisection)."""


main.add_command(bisect_group)
main.add_command(perf_group)


@main.command()
@lab_option
def check(lab_dir: Path) -> None:
    """Validate lab.toml and print the plan: jobs per branch, hosts, requirements."""
    lab = open_lab(lab_dir)
    click.echo(render_plan(lab))


@main.group()
def flight() -> None:
    """Run and inspect flights."""


def run_to_end(lab: Lab, store: Store, flight_id: int, console: Console) -> FlightResult:
    """Run a stored flight with live progress; Ctrl-C (or SIGTERM) cancels it cleanly."""

    async def go() -> FlightResult:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        from labgate.flights import Flights

        with FlightProgress(console) as progress:
            return await Flights(lab, store).run(flight_id, progress=progress)

    try:
        return asyncio.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print(
            f"flight {flight_id} cancelled; running steps were killed. "
            f"`labgate flight resume {flight_id}` runs what did not finish."
        )
        sys.exit(CANCELLED)


def finish(flight: FlightResult, console: Console, json_output: bool) -> NoReturn:
    if json_output:
        click.echo(json.dumps(flight.to_json(), indent=2))
    else:
        console.print(flight_table(flight))
    sys.exit(0 if flight.outcome is Outcome.PASS else 1)


@flight.command("run")
@lab_option
@click.argument("branch")
@flight_options
@click.option("--json", "json_output", is_flag=True, help="Print the flight as JSON.")
def flight_run(
    lab_dir: Path,
    branch: str,
    revs: tuple[str, ...],
    jobs: tuple[str, ...],
    blessing: str,
    json_output: bool,
) -> None:
    """Plan and run a flight of BRANCH's jobs."""
    lab = open_lab(lab_dir)
    console = console_for(json_output)
    with open_store(lab) as store:
        flight_id = plan_from_options(lab, store, branch, revs, jobs, blessing)
        console.print(f"flight {flight_id}: branch {branch}, blessing {blessing}")
        result = run_to_end(lab, store, flight_id, console)
        finish(result, console, json_output)


def get_flight(store: Store, flight_id: int) -> FlightResult:
    try:
        return store.get_flight(flight_id)
    except StoreError as error:
        fail(str(error))


@flight.command("resume")
@lab_option
@click.argument("flight_id", type=int)
@click.option("--json", "json_output", is_flag=True)
def flight_resume(lab_dir: Path, flight_id: int, json_output: bool) -> None:
    """Run what an interrupted or cancelled flight did not finish (finished jobs are kept)."""
    lab = open_lab(lab_dir)
    console = console_for(json_output)
    with open_store(lab) as store:
        existing = get_flight(store, flight_id)
        if existing.state is FlightState.FINISHED:
            console.print(f"flight {flight_id} already finished: {existing.outcome}")
            finish(existing, console, json_output)
        from labgate.flights import Flights

        runners = Flights(lab, store).runners_of(flight_id)
        if runners:
            fail(
                f"flight {flight_id} is being run by {', '.join(runners)}; it can be resumed "
                "once that controller is gone (its lease expires when it stops)"
            )
        result = run_to_end(lab, store, flight_id, console)
        finish(result, console, json_output)


@flight.command("show")
@lab_option
@click.argument("flight_id", type=ID)
@click.option("--json", "json_output", is_flag=True)
def flight_show(lab_dir: Path, flight_id: int, json_output: bool) -> None:
    """Show a flight: revision tuple, jobs, steps, outcomes."""
    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        result = get_flight(store, flight_id)
    if json_output:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    console = console_for(False)
    console.print(revisions_table(result))
    console.print(flight_table(result))


@flight.command("list")
@lab_option
@click.option("--branch", default=None)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "json_output", is_flag=True)
def flight_list(lab_dir: Path, branch: str | None, limit: int, json_output: bool) -> None:
    """List flights, newest first."""
    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        flights = store.list_flights(branch, limit=limit)
    if json_output:
        click.echo(json.dumps([f.to_json() for f in flights], indent=2))
        return
    console_for(False).print(flights_table(flights))


@flight.command("log")
@lab_option
@click.argument("flight_id", type=ID)
@click.argument("job")
@click.argument("step", required=False)
def flight_log(lab_dir: Path, flight_id: int, job: str, step: str | None) -> None:
    """Print the log of a job's steps (or of one STEP)."""
    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        result = get_flight(store, flight_id)
    try:
        job_result = result.job(job)
    except KeyError:
        names = ", ".join(j.name for j in result.jobs)
        fail(f"flight {flight_id} has no job {job!r} (jobs: {names})")
    steps = [s for s in job_result.steps if step is None or s.name == step]
    if not steps:
        names = ", ".join(s.name for s in job_result.steps)
        fail(f"job {job!r} has no step {step!r} (steps: {names})")
    log_root = lab.log_dir.resolve()
    for s in steps:
        if step is None:
            click.echo(f"=== {job} / {s.name}: {s.outcome}")
        if not s.log:
            click.echo("(no log: the step has not run)")
            continue
        path = (log_root / s.log).resolve()
        if not path.is_relative_to(log_root):
            fail(f"log path {s.log!r} is outside the lab's log dir")
        try:
            sys.stdout.write(path.read_text(errors="replace"))
        except FileNotFoundError:
            click.echo(f"(log file {path} is missing)")
        sys.stdout.flush()


@main.command()
@lab_option
@click.argument("branch")
@click.option("--once", is_flag=True, help="One cycle, then exit (default: poll staging).")
@click.option("--json", "json_output", is_flag=True, help="Print each cycle's result as JSON.")
def gate(lab_dir: Path, branch: str, once: bool, json_output: bool) -> None:
    """Test BRANCH's staging; push it to tested when nothing regressed; bisect regressions.

    Exit 0 when pushed or nothing to do, 1 when not pushed, 2 for a usage or config error."""
    from labgate.gate import Gate, GateError

    lab = open_lab(lab_dir)
    if branch not in lab.branches:
        fail(f"unknown branch {branch!r} (branches: {', '.join(lab.branches) or 'none'})")
    console = console_for(json_output)

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    async def cycles(store: Store) -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        async for result in Gate(lab, store, say=say).cycles(branch):
            if isinstance(result, GateError):
                if once:
                    fail(str(result))
                say(f"labgate: {result}")
                continue
            if json_output:
                click.echo(json.dumps(result.to_json(), indent=2))
            elif result.report:
                click.echo(result.report)
            elif result.action == "busy":  # no report, and the gate said nothing
                say(f"{branch}: {result.message}")
            if once:
                return result.exit_status
        raise AssertionError("the gate's cycles never end")

    with open_store(lab) as store:
        try:
            status = asyncio.run(cycles(store))
        except (KeyboardInterrupt, asyncio.CancelledError):
            console.print("gate stopped; running flights were cancelled (`labgate flight resume`).")
            sys.exit(CANCELLED)
    sys.exit(status)


@main.command()
@lab_option
@click.argument("branch")
@click.argument("job")
@click.argument("step", required=False)
@click.option("--limit", default=50, show_default=True, help="How many flights to look back.")
@click.option("--json", "json_output", is_flag=True)
def history(
    lab_dir: Path, branch: str, job: str, step: str | None, limit: int, json_output: bool
) -> None:
    """A job's (or step's) outcomes across BRANCH's flights, with the learned flake rates."""
    from labgate.report import render_history
    from labgate.verdict import flake_rate, history_rows, step_flake_rates

    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        flights = store.branch_history(branch, limit=limit)
    rows = history_rows(flights, job, step)
    if step is None:
        rates = step_flake_rates(flights, job)
    else:
        rates = {step: flake_rate(flights, job, step)}
    if json_output:
        click.echo(
            json.dumps(
                {
                    "branch": branch,
                    "job": job,
                    "step": step,
                    "flake_rates": rates,
                    "flights": [
                        {
                            "flight": r.flight,
                            "blessing": str(r.blessing),
                            "started": r.started,
                            "revisions": dict(r.revisions),
                            "host": r.host,
                            "outcome": str(r.outcome),
                            "reason": r.reason,
                        }
                        for r in rows
                    ],
                },
                indent=2,
            )
        )
        return
    click.echo(render_history(job, step, rows, rates), nl=False)


@main.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path))
def demo(directory: Path | None) -> None:
    """Make a demo lab in a new directory and run a flight in it."""
    from labgate.demo import run_demo

    sys.exit(run_demo(directory, Console(highlight=False)))


from labgate.serve import serve_command  # noqa: E402  (light: the web stack loads on use)

main.add_command(serve_command)
main.add_command(__import__("labgate.review.cli", fromlist=["*"]).review_group)
main.add_command(__import__("labgate.hosts.cli", fromlist=["*"]).host_group)
