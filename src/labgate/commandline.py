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
from labgate.store import Store, StoreError

F = TypeVar("F", bound=Callable[..., Any])

USAGE_ERROR = 2
CANCELLED = 130


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
