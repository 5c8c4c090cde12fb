"""Host time: an approved user reserves a host for a window (``for`` 2h), which takes it out
of the pool as any reservation does (``labgate host reserve``); during the window, and only
then, they may read its console and power-cycle it with its lab.toml lifecycle commands. The
reservation ends by itself at its end: from then on the pool's controllers give the host jobs
again (they read reservations at every poll) and the user's actions are refused."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import click

from labgate.access.fetch import Refused
from labgate.access.ondemand import admit, check_approved, quota_on
from labgate.config import Lab
from labgate.hosts.cli import parse_duration
from labgate.hosts.lifecycle import console_output, run_lifecycle_command
from labgate.model import HostSpec
from labgate.store import Store
from labgate.store.access import record_host_time
from labgate.store.hosts import HostStateError
from labgate.store.users import Viewer

REASON = "on-demand host time"
CONSOLE_MAX_S = 30.0


@dataclass(frozen=True)
class Reservation:
    host: str
    user: str
    until: str | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _host(lab: Lab, name: str) -> HostSpec:
    for host in lab.hosts:
        if host.name == name:
            return host
    raise Refused("host", f"no host {name!r} in the lab", 404)


def window(lab: Lab, store: Store, viewer: Viewer, user: str, wanted: str) -> timedelta:
    """The reservation's length; Refused when it is not a duration or more than the host time
    the user, or a group of theirs, has left this week (a first answer: :func:`reserve`
    decides)."""
    try:
        length = parse_duration(wanted)
    except click.BadParameter as error:
        raise Refused("for", error.format_message(), 400) from None
    with store.engine.connect() as conn:
        quota_on(conn, lab, viewer, user, hours=length.total_seconds() / 3600)
    return length


def reserve(lab: Lab, store: Store, viewer: Viewer, name: str, wanted: str) -> Reservation:
    """Reserve the host for the user for ``wanted`` (e.g. ``2h``). Its hours count in the
    user's (and their groups') host time from now, the whole window unless it ends early; the
    quota is decided in the transaction that counts them, so two reservations (or a
    reservation and a flight) at once cannot both pass; one refused there gives the host
    back."""
    user = check_approved(lab, viewer)
    _host(lab, name)
    length = window(lab, store, viewer, user, wanted)
    status = store.hosts.statuses([name])[name]
    if status.quarantined:
        raise Refused("host", f"host {name} is quarantined: {status.quarantined}", 409)
    try:
        store.hosts.reserve(name, user, REASON, length)
    except HostStateError as error:
        raise Refused("host", str(error), 409) from None
    try:
        with store.engine.begin() as conn:
            admit(lab, viewer, user, hours=length.total_seconds() / 3600)(conn)
            record_host_time(conn, user, name, length)
    except Refused:
        store.hosts.release(name, f"{user} (over quota)")
        raise
    return held(lab, store, viewer, name)


def held(lab: Lab, store: Store, viewer: Viewer, name: str) -> Reservation:
    """The viewer's reservation of the host now; Refused when they hold none (any more)."""
    user = check_approved(lab, viewer)
    _host(lab, name)
    status = store.hosts.statuses([name])[name]
    if status.reserved_by != user:
        raise Refused("reservation", f"you hold no reservation of host {name} now", 403)
    return Reservation(name, user, status.reserved_until)


def mine(lab: Lab, store: Store, user: str) -> list[Reservation]:
    statuses = store.hosts.statuses([h.name for h in lab.hosts])
    return [
        Reservation(name, user, s.reserved_until)
        for name, s in statuses.items()
        if s.reserved_by == user
    ]


async def console(lab: Lab, store: Store, viewer: Viewer, name: str, seconds: float) -> str:
    """The host's console for ``seconds`` (at most CONSOLE_MAX_S), for its holder."""
    await asyncio.to_thread(held, lab, store, viewer, name)
    host = _host(lab, name)
    if not host.lifecycle.console:
        raise Refused("console", f"host {name} has no console command in lab.toml", 409)
    return await console_output(host, min(seconds, CONSOLE_MAX_S), cwd=lab.dir)


async def power_cycle(lab: Lab, store: Store, viewer: Viewer, name: str) -> tuple[bool, str]:
    """Run the host's power_cycle command, for its holder: (succeeded, its output)."""
    await asyncio.to_thread(held, lab, store, viewer, name)
    host = _host(lab, name)
    if not host.lifecycle.power_cycle:
        raise Refused("power_cycle", f"host {name} has no power_cycle command in lab.toml", 409)
    return await run_lifecycle_command(host, host.lifecycle.power_cycle, cwd=lab.dir)
