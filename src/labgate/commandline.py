"""What every ``labgate`` command shares: the ``--lab`` option, opening the lab and its store,
and one clear line (never a traceback) for a usage or configuration error (exit status 2)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from labgate.config import ConfigError, Lab, load_lab
from labgate.model import Blessing
from labgate.store import Store, StoreError

F = TypeVar("F", bound=Callable[..., Any])

USAGE_ERROR = 2
CANCELLED = 130
MAX_ID = 2**63 - 1
"""The largest id a store keeps (its integer keys are 64-bit)."""
ID = click.IntRange(1, MAX_ID)
"""The click type of a flight's (or any stored thing's) id: a number past MAX_ID is a usage
error, not a traceback."""


def fail(message: str, status: int = USAGE_ERROR) -> NoReturn:
    click.echo(f"labgate: {message}", err=True)
    sys.exit(status)


def lab_option(func: F) -> F:
    return click.option(
        "--lab",
        "lab_dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="LABGATE_LAB",
        default=".",
        show_default="the current dir or $LABGATE_LAB",
        help="The lab directory (holding lab.toml).",
    )(func)


def flight_options(func: F) -> F:
    """``--rev TREE=REV``, ``--job GLOB`` and ``--blessing``: what a planned flight tests."""
    for option in reversed(
        (
            click.option(
                "--rev", "revs", multiple=True, metavar="TREE=REV", help="Test REV of TREE."
            ),
            click.option(
                "--job", "jobs", multiple=True, metavar="GLOB", help="Run only matching jobs."
            ),
            click.option(
                "--blessing",
                type=click.Choice([b.value for b in Blessing]),
                default=Blessing.ADHOC.value,
                show_default=True,
            ),
        )
    ):
        func = option(func)
    return func


def parse_revs(revs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in revs:
        tree, sep, rev = item.partition("=")
        if not sep or not tree or not rev:
            fail(f"--rev {item!r}: expected TREE=REV, e.g. --rev xen=staging~3")
        out[tree] = rev
    return out


def plan_from_options(
    lab: Lab, store: Store, branch: str, revs: tuple[str, ...], jobs: tuple[str, ...], blessing: str
) -> int:
    """Plan the flight that :func:`flight_options` describe; a bad option ends the command."""
    from labgate.flight import FlightError, plan_flight

    if branch not in lab.branches:
        fail(f"unknown branch {branch!r} (branches: {', '.join(lab.branches) or 'none'})")
    try:
        return plan_flight(
            lab,
            store,
            branch,
            overrides=parse_revs(revs),
            job_globs=jobs,
            blessing=Blessing(blessing),
        )
    except (FlightError, LookupError) as error:
        fail(str(error))


def open_lab(lab_dir: Path) -> Lab:
    try:
        return load_lab(lab_dir.resolve())
    except ConfigError as error:
        fail(str(error))


@contextmanager
def open_store(lab: Lab) -> Iterator[Store]:
    try:
        store = Store.open(lab.database_url)
    except StoreError as error:
        fail(str(error))
    try:
        yield store
    finally:
        store.close()
