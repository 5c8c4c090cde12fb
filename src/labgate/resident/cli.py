"""``labgate resident ...``: start, stop and look at this user's resident controller."""

from __future__ import annotations

import os
import select

import click

from labgate import resident
from labgate.commandline import LabgateGroup, emit_json, fail, json_on_stdout, json_option

START_WAIT_S = 60.0  # preloading takes about a second; a machine under load, much longer


@click.group("resident", cls=LabgateGroup)
def resident_group() -> None:
    """This user's resident controller: commands start without importing labgate again. On a
    terminal it starts by itself; LABGATE_RESIDENT=0 turns it off."""


@resident_group.command("start")
def start() -> None:
    """Start the resident controller in the background and wait until it answers."""
    try:
        resident.private_dir(resident.runtime_dir())
    except OSError as error:
        fail(f"cannot start the resident controller: {error}")
    read, write = os.pipe()
    try:
        resident.start_detached(ready=write)
    finally:
        os.close(write)
    with os.fdopen(read) as ready:
        if not select.select([ready], [], [], START_WAIT_S)[0]:
            fail(f"the resident controller did not answer within {START_WAIT_S:.0f} s")
        line = ready.readline().strip()
    answer = resident.request({"status": True})
    if not line or answer is None:
        fail(f"the resident controller did not start; see {resident.runtime_dir()}/resident.log")
    click.echo(f"resident controller {answer['resident']} on {resident.socket_path()}")


@resident_group.command("stop")
def stop() -> None:
    """Stop the resident controller (the commands it runs finish on their own)."""
    answer = resident.request({"stop": True})
    click.echo("stopped" if answer is not None else "no resident controller was running")


@resident_group.command("status")
@json_option
def status(json_to: str | None) -> None:
    """Whether a resident controller answers, its process and how many commands it ran."""
    answer = resident.request({"status": True})
    document = {
        "socket": str(resident.socket_path()),
        "running": answer is not None,
        "pid": answer["resident"] if answer else None,
        "commands": answer["served"] if answer else 0,
        "commands_running": answer["running"] if answer else 0,
    }
    if not json_on_stdout(json_to):
        if answer is None:
            click.echo(f"no resident controller answers on {document['socket']}")
        else:
            click.echo(
                f"resident controller {document['pid']} on {document['socket']}: "
                f"{document['commands']} command(s) run, {document['commands_running']} running"
            )
    emit_json(document, json_to)
