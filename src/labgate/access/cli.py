"""``labgate access``: the lab admin's side of access requests (list, approve, refuse) and the
on-demand queue."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from labgate.access.queue import standing
from labgate.commandline import (
    LabgateGroup,
    console,
    emit_json,
    json_on_stdout,
    json_option,
    lab_option,
    with_store,
)
from labgate.store.access import AccessRequests
from labgate.text import print_table


@click.group("access", cls=LabgateGroup)
def access_group() -> None:
    """Community members' access requests (approve, refuse) and the on-demand queue."""


@access_group.command("list")
@lab_option
@json_option
@click.option(
    "--state", type=click.Choice(["pending", "approved", "refused"]), help="Only these requests."
)
def access_list(lab_dir: Path, json_to: str | None, state: str | None) -> None:
    """Every access request, newest first, with its decision (who, when, why)."""
    found = with_store(lab_dir, lambda _lab, store: AccessRequests(store.engine).requests(state))
    emit_json([r.to_json() for r in found], json_to)
    if json_on_stdout(json_to):
        return
    table = Table("id", "state", "name", "email", "affiliation", "decided", box=None)
    for r in found:
        decided = f"{r.decided_by} {r.decided} {r.decision_why or ''}" if r.decided else ""
        table.add_row(str(r.id), r.state, r.name, r.email, r.affiliation, decided.strip())
    print_table(console(), table)


@access_group.command("approve")
@lab_option
@click.argument("request_id", type=int, metavar="ID")
@click.option("--group", help="The user's group (default: [access] group, `community`).")
@click.option("--user", help="The user's name (default: their e-mail address).")
@click.option("--why", default="", help="Recorded with the approval.")
@click.option("--by", default="lab admin", show_default=True, help="Who approves, for the record.")
def access_approve(
    lab_dir: Path, request_id: int, group: str | None, user: str | None, why: str, by: str
) -> None:
    """Approve request ID: the user and their API token, printed alone on stdout (stored hashed:
    this is the only time it is shown; give it to them)."""
    name, token = with_store(
        lab_dir,
        lambda lab, store: AccessRequests(store.engine).approve(
            request_id,
            by=by,
            group=group or lab.access.group,
            user=user,
            why=why,
            token_days=lab.access.token_days,
        ),
    )
    click.echo(f"request {request_id} approved: user {name}", err=True)
    click.echo(token)


@access_group.command("refuse")
@lab_option
@click.argument("request_id", type=int, metavar="ID")
@click.option("--why", required=True, help="Why (recorded; required).")
@click.option("--by", default="lab admin", show_default=True, help="Who refuses, for the record.")
def access_refuse(lab_dir: Path, request_id: int, why: str, by: str) -> None:
    """Refuse request ID, saying why."""
    with_store(
        lab_dir, lambda _lab, store: AccessRequests(store.engine).refuse(request_id, by=by, why=why)
    )
    click.echo(f"request {request_id} refused", err=True)


@access_group.command("queue")
@lab_option
@json_option
def access_queue(lab_dir: Path, json_to: str | None) -> None:
    """The on-demand flights waiting for hosts: each one's place and why it waits."""
    rows = [p.to_json() for p in with_store(lab_dir, standing)]
    emit_json(rows, json_to)
    if json_on_stdout(json_to):
        return
    table = Table("place", "flight", "user", "branch", "queued", "running", "why", box=None)
    for r in rows:
        table.add_row(*(str(r[k]) for k in ("place", "flight", "owner", "branch", "queued",
                                             "running", "why")))  # fmt: skip
    print_table(console(), table)
