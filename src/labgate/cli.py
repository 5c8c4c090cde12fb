"""The ``labgate`` command line: wiring only; the work is done by the core and the edges.

Exit statuses and the ``--json`` option follow the one convention of :mod:`labgate.commandline`.
Start-up matters (``labgate --help`` in well under 150 ms): this module imports click and the
light modules only; each command imports what it uses, and the groups in their own modules
(``bisect``, ``host``, ``review``, ``serve``) are loaded when named.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import click

from labgate import __version__
from labgate.commandline import (
    CANCELLED,
    FAILED,
    ID,
    FlightWanted,
    LabgateGroup,
    console,
    emit_json,
    fail,
    flight_options,
    json_on_stdout,
    json_option,
    known_branch,
    lab_option,
    open_lab,
    open_store,
    parse_revs,
    plan_from_options,
    settle,
)
from labgate.model import Embargo

if TYPE_CHECKING:
    from rich.console import Console

    from labgate.config import Lab
    from labgate.model import FlightResult
    from labgate.store import Store


SUMMARY_LIMIT = 1000  # a command's summary is its docstring's first sentence, never cut


class TopGroup(LabgateGroup):
    """``labgate``: its own commands, plus groups loaded from their modules when named.

    ``LAZY`` gives each such command's module attribute and its one-line summary (shown by
    ``labgate --help`` without importing it; tests check it is the command's own)."""

    group_class: type[click.Group] | type[type] | None = LabgateGroup

    LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "bisect": (
            "labgate.bisect.cli:bisect_group",
            "Find the commit that made a test fail, even when the test is flaky.",
        ),
        "perf": (
            "labgate.perf.cli:perf_group",
            "Performance metrics: a flight's against its baseline's, histories, change points.",
        ),
        "host": (
            "labgate.hosts.cli:host_group",
            "Look at the lab's hosts; quarantine, release, reserve them.",
        ),
        "review": (
            "labgate.review.cli:review_group",
            "Test the proposed patches of the lab's [[review]] entries and vote on them.",
        ),
        "user": (
            "labgate.embargo:user_group",
            "The lab's users and their groups (who sees embargoed work).",
        ),
        "token": (
            "labgate.embargo:token_group",
            "API tokens of the lab's users: create, revoke.",
        ),
        "access": (
            "labgate.access.cli:access_group",
            "Community members' access requests (approve, refuse) and the on-demand queue.",
        ),
        "embargo": (
            "labgate.embargo:embargo_group",
            "Lift an embargo; read who saw embargoed work.",
        ),
        "findings": (
            "labgate.findings.cli:findings_group",
            "Static analysis findings: a flight's against its baseline (`labgate findings "
            "FLIGHT`), triage, trends.",
        ),
        "resident": (
            "labgate.resident.cli:resident_group",
            "This user's resident controller: commands start without importing labgate again.",
        ),
        "serve": (
            "labgate.serve:serve_command",
            "Serve the lab's dashboard and JSON API (one JSON line per request on stderr), "
            "and run the push gate of the branches given with --gate.",
        ),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.LAZY:
            module, _, attr = self.LAZY[cmd_name][0].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # whole summaries, wrapped rather than cut, for loaded and lazy commands alike
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None:
                rows.append((name, self.LAZY[name][1]))
            elif not command.hidden:
                rows.append((name, command.get_short_help_str(limit=SUMMARY_LIMIT)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=TopGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labgate")
def main() -> None:
    """labgate: a test lab controller (flights, push gate, bisection)."""


@main.command()
@lab_option
@json_option
@click.option("--offline", is_flag=True, help="Check the file alone: do not reach the trees' urls.")
def check(lab_dir: Path, json_to: str | None, offline: bool) -> None:
    """Validate lab.toml and print its job matrix: jobs per branch, hosts, requirements. Unless
    --offline, also check that every tree's url answers and every ref a branch names exists."""
    from labgate.config import ConfigError, render_matrix

    lab = open_lab(lab_dir)
    if not offline:
        from labgate.remotes import check_remotes

        problems = check_remotes(lab)
        if problems:
            fail(str(ConfigError(problems)))
    if not json_on_stdout(json_to):
        click.echo(render_matrix(lab))
    emit_json(plan_json(lab), json_to)


def plan_json(lab: Lab) -> dict[str, Any]:
    """``labgate check --json``: the job matrix ``render_matrix`` prints, for programs."""
    return {
        "lab": lab.name,
        "file": str(lab.file),
        "trees": {name: tree.url for name, tree in lab.trees.items()},
        "branches": [
            {
                "name": name,
                "tree": branch.tree,
                "staging": branch.staging,
                "tested": branch.tested,
                "revisions": lab.revision_refs(name),
                "jobs": [job.name for job in lab.jobs_for(name)],
            }
            for name, branch in lab.branches.items()
        ],
        "hosts": [
            {"name": h.name, "flags": sorted(h.flags), "slots": h.slots, "executor": h.executor}
            for h in lab.hosts
        ],
        "jobs": [
            {
                "name": job.name,
                "requires": list(job.requires),
                "depends": list(job.depends),
                "exclusive": job.exclusive,
                "runvars": dict(job.runvars),
                "steps": [{"name": s.name, "run": s.run, "timeout": s.timeout} for s in job.steps],
                "hosts": [h.name for h in lab.hosts_for(job)],
            }
            for job in lab.jobs
        ],
    }


@main.group()
def flight() -> None:
    """Run and inspect flights."""


def run_to_end(
    lab: Lab, store: Store, flight_id: int, out: Console, planned: FlightResult | None = None
) -> FlightResult:
    """Run a stored flight with live progress; Ctrl-C (or SIGTERM) cancels it cleanly.
    ``planned``: the flight just planned (see ``Flights.run``)."""
    import asyncio
    import signal

    from labgate.flights import Flights
    from labgate.progress import FlightProgress

    async def go() -> FlightResult:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        with FlightProgress(out) as progress:
            return await Flights(lab, store).run(flight_id, progress=progress, planned=planned)

    settle()
    try:
        return asyncio.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        out.print(
            f"flight {flight_id} cancelled; running steps were killed. "
            f"`labgate flight resume {flight_id}` runs what did not finish."
        )
        sys.exit(CANCELLED)


def finish(flight: FlightResult, out: Console, json_to: str | None) -> NoReturn:
    from labgate.model import Outcome
    from labgate.text import flight_table, print_table

    if not json_on_stdout(json_to):
        print_table(out, flight_table(flight))
    emit_json(flight.to_json(), json_to)
    sys.exit(0 if flight.outcome is Outcome.PASS else FAILED)


def testing_lines(flight: FlightResult, refs: dict[str, str]) -> list[str]:
    """What a flight tests, before it runs: one line per tree, its full sha and the ref asked."""
    width = max((len(tree) for tree in flight.revisions), default=0)
    return [
        f"  {tree:<{width}}  {sha}" + (f"  ({refs[tree]})" if tree in refs else "")
        for tree, sha in sorted(flight.revisions.items())
    ]


@flight.command("run")
@lab_option
@click.argument("branch")
@flight_options
@click.option(
    "--embargo", "group", metavar="GROUP", help="Only GROUP's members see the flight until --until."
)
@click.option("--until", metavar="TIME", help="When the embargo ends (RFC 3339, with its offset).")
@json_option
def flight_run(
    lab_dir: Path,
    branch: str,
    wanted: FlightWanted,
    group: str | None,
    until: str | None,
    json_to: str | None,
) -> None:
    """Plan and run a flight of BRANCH's jobs (under embargo with --embargo and --until: only on
    hosts with the embargo-ok flag, seen only by the group)."""
    embargo = embargo_option(group, until)
    if embargo is not None and wanted.blessing in ("real", "bisect"):
        # real and bisect flights are the branch's evidence: its public verdicts would read them
        fail(
            f"--embargo takes an adhoc or play flight, not {wanted.blessing}: "
            "put the branch itself under embargo in lab.toml instead"
        )
    lab = open_lab(lab_dir)
    out = console(stderr=json_on_stdout(json_to))
    with open_store(lab) as store:
        flight_id = plan_from_options(lab, store, branch, wanted, embargo)
        planned = store.get_flight(flight_id)
        refs = {**lab.revision_refs(branch), **parse_revs(wanted.revs)}
        out.print(
            f"flight {flight_id}: branch {branch}, blessing {wanted.blessing}, "
            f"{len(planned.jobs)} jobs, testing:",
            markup=False,
        )
        for line in testing_lines(planned, refs):
            out.print(line, markup=False)
        result = run_to_end(lab, store, flight_id, out, planned)
        finish(result, out, json_to)


def embargo_option(group: str | None, until: str | None) -> Embargo | None:
    """The embargo ``--embargo GROUP --until TIME`` ask for; both or neither."""
    if group is None and until is None:
        return None
    if group is None or until is None:
        fail("--embargo GROUP and --until TIME go together")
    from labgate.config import rfc3339

    try:
        return Embargo(group, rfc3339(until))
    except ValueError as error:
        fail(f"--until: {getattr(error, 'message', error)}")


def get_flight(store: Store, flight_id: int) -> FlightResult:
    from labgate.store import StoreError

    try:
        return store.get_flight(flight_id)
    except StoreError as error:
        fail(str(error))


@flight.command("resume")
@lab_option
@click.argument("flight_id", type=int)
@json_option
def flight_resume(lab_dir: Path, flight_id: int, json_to: str | None) -> None:
    """Run what an interrupted or cancelled flight did not finish (finished jobs are kept)."""
    from labgate.flights import Flights
    from labgate.model import FlightState

    lab = open_lab(lab_dir)
    out = console(stderr=json_on_stdout(json_to))
    with open_store(lab) as store:
        existing = get_flight(store, flight_id)
        if existing.state is FlightState.FINISHED:
            out.print(f"flight {flight_id} already finished: {existing.outcome}", markup=False)
            finish(existing, out, json_to)
        runners = Flights(lab, store).runners_of(flight_id)
        if runners:
            fail(
                f"flight {flight_id} is being run by {', '.join(runners)}; it can be resumed "
                "once that controller is gone (its lease expires when it stops)"
            )
        result = run_to_end(lab, store, flight_id, out)
        finish(result, out, json_to)


@flight.command("show")
@lab_option
@click.argument("flight_id", type=ID)
@json_option
def flight_show(lab_dir: Path, flight_id: int, json_to: str | None) -> None:
    """Show a flight: revision tuple, jobs, steps, outcomes."""
    from labgate.text import flight_table, print_table, revisions_table

    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        result = get_flight(store, flight_id)
    if not json_on_stdout(json_to):
        out = console()
        print_table(out, revisions_table(result))
        print_table(out, flight_table(result))
    emit_json(result.to_json(), json_to)


@flight.command("list")
@lab_option
@click.option("--branch", default=None)
@click.option("--limit", default=50, show_default=True)
@json_option
def flight_list(lab_dir: Path, branch: str | None, limit: int, json_to: str | None) -> None:
    """List flights, newest first."""
    from labgate.text import flights_table, print_table

    lab = open_lab(lab_dir)
    if branch is not None:
        known_branch(lab, branch)
    with open_store(lab) as store:
        flights = store.list_flights(branch, limit=limit)
    if not json_on_stdout(json_to):
        print_table(console(), flights_table(flights))
    emit_json([f.to_json() for f in flights], json_to)


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
@json_option
def gate(lab_dir: Path, branch: str, once: bool, json_to: str | None) -> None:
    """Test BRANCH's staging; push it to tested when nothing regressed; bisect regressions.

    Exit 0 when pushed or nothing to do, 1 when not pushed, 2 for a usage or config error.
    With --json, each cycle's result (one JSON document per cycle)."""
    import asyncio
    import signal

    from labgate.gate import Gate, GateError

    lab = open_lab(lab_dir)
    known_branch(lab, branch)
    out = console(stderr=json_on_stdout(json_to))

    def say(line: str) -> None:
        out.print(line, highlight=False, markup=False)

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
            if not json_on_stdout(json_to) and result.report:
                click.echo(result.report)
            elif result.action == "busy":  # no report, and the gate said nothing
                say(f"{branch}: {result.message}")
            emit_json(result.to_json(), json_to)
            if once:
                return result.exit_status
        raise AssertionError("the gate's cycles never end")

    with open_store(lab) as store:
        settle()
        try:
            status = asyncio.run(cycles(store))
        except (KeyboardInterrupt, asyncio.CancelledError):
            out.print("gate stopped; running flights were cancelled (`labgate flight resume`).")
            sys.exit(CANCELLED)
    sys.exit(status)


@main.command()
@lab_option
@click.argument("branch")
@click.argument("job")
@click.argument("step", required=False)
@click.option("--limit", default=50, show_default=True, help="How many flights to look back.")
@json_option
def history(
    lab_dir: Path, branch: str, job: str, step: str | None, limit: int, json_to: str | None
) -> None:
    """A job's (or step's) outcomes across BRANCH's flights, with its flake rates and their
    evidence."""
    from labgate.report import render_history
    from labgate.verdict import flake_evidence, history_rows, step_flake_rates

    lab = open_lab(lab_dir)
    known_branch(lab, branch)
    with open_store(lab) as store:
        flights = store.branch_history(branch, limit=limit)
    rows = history_rows(flights, job, step)
    if not rows:
        _known_job_and_step(lab, branch, job, step)
    if step is None:
        rates = step_flake_rates(flights, job)
    else:
        rates = {step: flake_evidence(flights, job, step)}
    if not json_on_stdout(json_to):
        click.echo(render_history(job, step, rows, rates), nl=False)
    emit_json(
        {
            "branch": branch,
            "job": job,
            "step": step,
            "flake_rates": {name: rate.to_json() for name, rate in rates.items()},
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
        json_to,
    )


def _known_job_and_step(lab: Lab, branch: str, job: str, step: str | None) -> None:
    """A job (and step) that neither lab.toml nor the history knows is a typo: exit 2."""
    jobs = {j.name: j for j in lab.jobs_for(branch)}
    if job not in jobs:
        fail(f"branch {branch!r} has no job {job!r} (jobs: {', '.join(jobs) or 'none'})")
    steps = [s.name for s in jobs[job].steps]
    if step is not None and step not in steps:
        fail(f"job {job!r} has no step {step!r} (steps: {', '.join(steps) or 'none'})")


@main.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path))
def demo(directory: Path | None) -> None:
    """Make a demo lab in DIRECTORY (default: a new directory under the system's temporary
    directory) and tell the push gate's story in it."""
    from labgate.demo import run_demo

    sys.exit(run_demo(directory, console()))
