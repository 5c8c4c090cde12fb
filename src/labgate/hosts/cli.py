"""``labgate host ...``: look at hosts, quarantine and release them, reserve one for a developer
(like osstest's mg-allocate), run their power commands and health checks."""

from __future__ import annotations

import asyncio
import getpass
import re
import socket
import sys
from datetime import timedelta
from pathlib import Path

import click
from rich.table import Table

from labgate.commandline import (
    CANCELLED,
    FlightWanted,
    LabgateGroup,
    console,
    emit_json,
    fail,
    flight_options,
    json_on_stdout,
    json_option,
    lab_option,
    open_lab,
    open_store,
    plan_from_options,
    settle,
)
from labgate.config import Lab, UnknownNameError
from labgate.hosts.lifecycle import run_lifecycle_command
from labgate.model import Blessing, HostSpec
from labgate.store.hosts import HostStateError
from labgate.store.slots import BLESSING_PRIORITY
from labgate.text import print_table

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``, or sums like ``1h30m``."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise click.BadParameter(f"{text!r}: write a duration like 90s, 30m, 2h or 1d")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def whoami() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _host(lab: Lab, name: str) -> HostSpec:
    try:
        return lab.host(name)
    except UnknownNameError as error:
        fail(str(error))


@click.group("host", cls=LabgateGroup)
def host_group() -> None:
    """Look at the lab's hosts; quarantine, release, reserve them."""


@host_group.command("list")
@lab_option
@json_option
def host_list(lab_dir: Path, json_to: str | None) -> None:
    """Every host: executor, flags, slots, state (in service, quarantined, reserved)."""
    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        statuses = store.hosts.statuses([h.name for h in lab.hosts])
    rows = [
        {
            "name": h.name,
            "executor": h.executor,
            "flags": sorted(h.flags),
            "slots": h.slots,
            **statuses[h.name].to_json(),
        }
        for h in lab.hosts
    ]
    emit_json(rows, json_to)
    if json_on_stdout(json_to):
        return
    table = Table("host", "executor", "flags", "slots", "state", "why", box=None)
    for r in rows:
        until = r["reserved_until"] or "released"
        reserved = f"{r['reserved_by']}: {r['reserved_reason']} (until {until})"
        why = r["quarantined"] or (reserved if r["reserved_by"] else "")
        table.add_row(
            r["name"], r["executor"], ", ".join(r["flags"]), str(r["slots"]), r["state"], why
        )
    print_table(console(), table)


@host_group.command("show")
@lab_option
@click.argument("name")
@click.option("--limit", default=20, show_default=True, help="History rows to show.")
@json_option
def host_show(lab_dir: Path, name: str, limit: int, json_to: str | None) -> None:
    """One host: its state, lifecycle commands and history (jobs, quarantines, reservations)."""
    lab = open_lab(lab_dir)
    spec = _host(lab, name)
    with open_store(lab) as store:
        registry = store.hosts
        status = registry.statuses([name])[name]
        events = registry.history(name, limit=limit)
    lifecycle = {k: v for k, v in vars(spec.lifecycle).items() if v is not None}
    emit_json(
        {
            **status.to_json(),
            "executor": spec.executor,
            "flags": sorted(spec.flags),
            "slots": spec.slots,
            "lifecycle": lifecycle,
            "history": [e.to_json() for e in events],
        },
        json_to,
    )
    if json_on_stdout(json_to):
        return
    click.echo(f"host {name}: {status.state}  executor {spec.executor}  slots {spec.slots}")
    click.echo(f"  flags {', '.join(sorted(spec.flags)) or '(none)'}")
    if status.quarantined:
        click.echo(f"  quarantined since {status.quarantined_at}: {status.quarantined}")
    if status.reserved_by:
        until = status.reserved_until or "released"
        click.echo(f"  reserved by {status.reserved_by} until {until}: {status.reserved_reason}")
    click.echo(f"  broken jobs in a row: {status.broken_streak}")
    for key, value in lifecycle.items():
        click.echo(f"  {key}: {value}")
    click.echo("history (newest first)")
    for e in events:
        job = f" job {e.job_id} attempt {e.attempt}" if e.job_id is not None else ""
        outcome = f" {e.outcome}" if e.outcome else ""
        reason = f": {e.reason}" if e.reason else ""
        click.echo(f"  {e.created}  {e.kind}{job}{outcome}{reason}")


@host_group.command("quarantine")
@lab_option
@click.argument("name")
@click.option("--reason", required=True, help="Why (shown with the host until released).")
def host_quarantine(lab_dir: Path, name: str, reason: str) -> None:
    """Take a host out of service: no job is given it until `labgate host release`."""
    lab = open_lab(lab_dir)
    _host(lab, name)
    with open_store(lab) as store:
        store.hosts.quarantine(name, f"{reason} (by {whoami()})")
    click.echo(f"host {name} quarantined: {reason}")


@host_group.command("release")
@lab_option
@click.argument("name")
def host_release(lab_dir: Path, name: str) -> None:
    """End a host's quarantine or reservation: it is given jobs again."""
    lab = open_lab(lab_dir)
    _host(lab, name)
    with open_store(lab) as store:
        ended = store.hosts.release(name, whoami())
    if ended:
        click.echo(f"host {name} released (ended: {', '.join(ended)})")
    else:
        click.echo(f"host {name} was in service (neither quarantined nor reserved): no change")


@host_group.command("reserve")
@lab_option
@click.argument("name")
@click.option("--for", "duration", default=None, help="How long, e.g. 2h (default: released).")
@click.option("--reason", required=True, help="What it is for.")
@click.option("--as", "who", default=None, help="Who holds it (default: user@machine).")
def host_reserve(
    lab_dir: Path, name: str, duration: str | None, reason: str, who: str | None
) -> None:
    """Reserve a host for a person: no job is given it until the time is up or it is released.
    A job already running on it finishes."""
    lab = open_lab(lab_dir)
    _host(lab, name)
    length = parse_duration(duration) if duration else None
    holder = who or whoami()
    with open_store(lab) as store:
        try:
            store.hosts.reserve(name, holder, reason, length)
        except HostStateError as error:
            fail(str(error), 1)
    until = f" for {duration}" if duration else " until released"
    click.echo(f"host {name} reserved by {holder}{until}: {reason}")


@host_group.command("power")
@lab_option
@click.argument("name")
@click.argument("action", type=click.Choice(["on", "off", "cycle"]))
def host_power(lab_dir: Path, name: str, action: str) -> None:
    """Run the host's power_on, power_off or power_cycle command."""
    lab = open_lab(lab_dir)
    spec = _host(lab, name)
    key = f"power_{action}"
    command = getattr(spec.lifecycle, key)
    if not command:
        fail(f"host {name} has no {key} command in lab.toml")
    ok, output = asyncio.run(run_lifecycle_command(spec, command, cwd=lab.dir))
    click.echo(output)
    sys.exit(0 if ok else 1)


@host_group.command("check")
@lab_option
@click.argument("name")
@json_option
def host_check(lab_dir: Path, name: str, json_to: str | None) -> None:
    """Run the host's health check now; a failure quarantines it (exit 1)."""
    lab = open_lab(lab_dir)
    spec = _host(lab, name)
    command = spec.lifecycle.health
    if not command:
        fail(f"host {name} has no health command in lab.toml")
    ok, output = asyncio.run(run_lifecycle_command(spec, command, cwd=lab.dir))
    if ok:
        line = f"host {name} healthy" + (f": {output}" if output else "")
    else:
        with open_store(lab) as store:
            store.hosts.quarantine(name, f"health check failed: {output}", kind="health")
        line = f"host {name} quarantined: health check failed: {output}"
    click.echo(line, err=json_on_stdout(json_to))
    emit_json({"host": name, "healthy": ok, "output": output}, json_to)
    sys.exit(0 if ok else 1)


@host_group.command("queue")
@lab_option
@click.argument("branch")
@flight_options
@json_option
def host_queue(lab_dir: Path, branch: str, wanted: FlightWanted, json_to: str | None) -> None:
    """Plan a flight of BRANCH and hand it to the pool: `labgate host worker`s run it.
    Prints the flight's id (with --json, the queued flight as `labgate flight show` has it)."""
    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        flight_id = plan_from_options(lab, store, branch, wanted)
        store.submit_flight(flight_id)
        queued = store.get_flight(flight_id)
    if not json_on_stdout(json_to):
        click.echo(flight_id)
    emit_json(queued.to_json(), json_to)


@host_group.command("worker")
@lab_option
@click.option("--owner", default=None, help="This controller's name (default: machine:pid).")
@click.option("--lease", "lease_s", default=30.0, show_default=True, help="Lease, seconds.")
@click.option("--poll", "poll_s", default=1.0, show_default=True, help="Poll, seconds.")
@click.option("--until-idle", is_flag=True, help="Exit once no flight of the pool is active.")
@click.option(
    "--priority",
    default=",".join(BLESSING_PRIORITY),
    show_default=True,
    help="Blessings, most urgent first.",
)
def host_worker(
    lab_dir: Path,
    owner: str | None,
    lease_s: float,
    poll_s: float,
    until_idle: bool,
    priority: str,
) -> None:
    """Run the pool's queued jobs on the lab's hosts, sharing them safely with every other
    worker on the same store (PostgreSQL for several machines)."""
    from labgate.flights import Flights, controller_owner

    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        order = tuple(b.strip() for b in priority.split(",") if b.strip())
        unknown = [b for b in order if b not in {x.value for x in Blessing}]
        if unknown:
            fail(f"--priority: unknown blessing {', '.join(unknown)}")
        flights = Flights(
            lab,
            store,
            owner=owner or controller_owner(),
            lease_s=lease_s,
            poll_s=poll_s,
            priority=order,
        )
        settle()
        try:
            asyncio.run(flights.serve(until_idle=until_idle))
        except KeyboardInterrupt:
            sys.exit(CANCELLED)
    click.echo(f"{flights.owner}: ran {flights.jobs_run} jobs")
