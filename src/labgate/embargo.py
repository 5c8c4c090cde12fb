"""Embargoed work, and the users and tokens who may see it: ``labgate user``, ``labgate token``
and ``labgate embargo``.

A flight under embargo (its branch's ``embargo`` in lab.toml, or ``flight run --embargo``) is
seen only by its group's members until its ``until`` or ``labgate embargo lift``; then it is
public at once, as if it always had been. The rule itself is one SQL predicate of the store
(:func:`labgate.store.users.visible`); this module is the commands and the mail recipients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import click
from rich.table import Table

from labgate.commandline import (
    LabgateGroup,
    console,
    emit_json,
    fail,
    json_on_stdout,
    json_option,
    lab_option,
    open_lab,
    open_store,
    with_store,
)
from labgate.store import Store
from labgate.store.users import Users
from labgate.text import print_table


def mail_recipients(store: Store, flight_id: int) -> list[str] | None:
    """Where a report of the flight may go: None for a public flight (the lab's list), else only
    the addresses of its embargo group's members (maybe none: then it is not mailed)."""
    users = Users(store.engine)
    embargo = users.embargo(flight_id)
    return None if embargo is None else users.addresses(embargo.group)


def _users(store: Store) -> Users:
    return Users(store.engine)


T = TypeVar("T")


def _with_users(lab_dir: Path, use: Callable[[Users], T]) -> T:
    """Read or change the lab's users (see :func:`labgate.commandline.with_store`)."""
    return with_store(lab_dir, lambda _lab, store: use(_users(store)))


# --- labgate user --------------------------------------------------------------------------


@click.group("user", cls=LabgateGroup)
def user_group() -> None:
    """The lab's users and their groups (who sees embargoed work)."""


@user_group.command("add")
@lab_option
@click.argument("name")
@click.option("--email", help="Where the reports of the user's embargoed flights go.")
@click.option("--group", "groups", multiple=True, metavar="G", help="A group the user is in.")
@click.option(
    "--admin-of", "admin_of", multiple=True, metavar="G", help="A group whose audit log they read."
)
def user_add(
    lab_dir: Path, name: str, email: str | None, groups: Sequence[str], admin_of: Sequence[str]
) -> None:
    """Add a user, in the groups given."""
    _with_users(
        lab_dir, lambda users: users.add(name, email=email, groups=groups, admin_of=admin_of)
    )
    click.echo(f"user {name} added", err=True)


@user_group.command("join")
@lab_option
@click.argument("name")
@click.argument("group")
@click.option("--admin", is_flag=True, help="As one of the group's admins (reads its audit log).")
def user_join(lab_dir: Path, name: str, group: str, admin: bool) -> None:
    """Put user NAME in GROUP: they see its embargoed work from their next request on."""
    changed = _with_users(lab_dir, lambda users: users.join(name, group, admin=admin))
    role = "an admin" if admin else "a member"
    click.echo(f"{name} is {role} of {group}{'' if changed else ' already'}", err=True)


@user_group.command("leave")
@lab_option
@click.argument("name")
@click.argument("group")
def user_leave(lab_dir: Path, name: str, group: str) -> None:
    """Take user NAME out of GROUP: its embargoed work is hidden from them at once."""
    _with_users(lab_dir, lambda users: users.leave(name, group))
    click.echo(f"{name} left {group}", err=True)


@user_group.command("remove")
@lab_option
@click.argument("name")
def user_remove(lab_dir: Path, name: str) -> None:
    """Remove user NAME, their groups and tokens (their sessions end); the audit log keeps
    their name."""
    live = _with_users(lab_dir, lambda users: users.remove(name))
    click.echo(f"user {name} removed ({live} live token(s) revoked)", err=True)


@user_group.command("list")
@lab_option
@json_option
def user_list(lab_dir: Path, json_to: str | None) -> None:
    """Every user: mail address, groups, live tokens."""
    users = _with_users(lab_dir, Users.records)
    emit_json([u.to_json() for u in users], json_to)
    if json_on_stdout(json_to):
        return
    table = Table("user", "email", "groups", "admin of", "tokens", box=None)
    for u in users:
        table.add_row(
            u.name, u.email or "", ", ".join(u.groups), ", ".join(u.admin_of), str(u.tokens)
        )
    print_table(console(), table)


# --- labgate token -------------------------------------------------------------------------


@click.group("token", cls=LabgateGroup)
def token_group() -> None:
    """API tokens of the lab's users: create, revoke."""


@token_group.command("create")
@lab_option
@click.argument("name")
def token_create(lab_dir: Path, name: str) -> None:
    """Make a token for user NAME and print it alone on stdout (it is stored hashed: this is the
    only time it is shown)."""
    click.echo(_with_users(lab_dir, lambda users: users.create_token(name)))


@token_group.command("revoke")
@lab_option
@click.argument("name")
@click.option(
    "--token",
    "token",
    envvar="LABGATE_TOKEN",
    help="Revoke only this token (also from $LABGATE_TOKEN); default: every token of NAME.",
)
def token_revoke(lab_dir: Path, name: str, token: str | None) -> None:
    """Revoke user NAME's tokens: they stop working at once, in live sessions too."""
    count = _with_users(lab_dir, lambda users: users.revoke(name, token))
    click.echo(f"{count} token(s) of {name} revoked", err=True)
    if token is not None and count == 0:
        fail(f"user {name} has no such live token", 1)


# --- labgate embargo -----------------------------------------------------------------------


@click.group("embargo", cls=LabgateGroup)
def embargo_group() -> None:
    """Lift an embargo; read who saw embargoed work."""


@embargo_group.command("lift")
@lab_option
@click.option("--group", help="Make every flight of this group's embargo public now.")
@click.option("--flight", "flight_id", type=int, help="Make this one flight public now.")
def embargo_lift(lab_dir: Path, group: str | None, flight_id: int | None) -> None:
    """Make embargoed flights public now, in one step (one UPDATE of the store). A branch whose
    lab.toml still has an embargo keeps planning embargoed flights: remove it there too."""
    lab = open_lab(lab_dir)
    if (group is None) == (flight_id is None):
        fail("give --group G or --flight N (one of them)")
    with open_store(lab) as store:
        lifted = _users(store).lift(group=group, flight_id=flight_id)
    click.echo(f"{len(lifted)} flight(s) public now: {' '.join(map(str, lifted)) or '-'}")
    still = [b.name for b in lab.branches.values() if b.embargo and b.embargo.group == group]
    if still:
        click.echo(
            f"lab.toml still puts branch(es) {', '.join(still)} under embargo {group}: "
            "their new flights stay embargoed until you remove it",
            err=True,
        )


@embargo_group.command("audit")
@lab_option
@click.argument("group")
@click.option("--limit", default=1000, show_default=True)
@json_option
def embargo_audit(lab_dir: Path, group: str, limit: int, json_to: str | None) -> None:
    """Who saw GROUP's embargoed work, and when (newest first)."""
    entries = _with_users(lab_dir, lambda users: users.audit(group, limit=limit))
    emit_json([e.to_json() for e in entries], json_to)
    if json_on_stdout(json_to):
        return
    table = Table("when", "user", "flight", "what", box=None)
    for e in entries:
        table.add_row(e.created, e.user, str(e.flight), e.what)
    print_table(console(), table)
