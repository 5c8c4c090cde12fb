"""What every ``labgate`` command shares: the ``--lab`` and ``--json`` options, opening the lab
and its store, the consoles, and one convention for errors and exit statuses.

The convention (written in the README, checked by tests/test_cli_conventions.py):

- exit 0 success, 1 a result that is not a success (a flight that did not pass, a push not
  made), 2 a usage or configuration error, 130 cancelled (Ctrl-C or SIGTERM);
- an error is one line on stderr, ``labgate: <what is wrong>``, never a traceback;
- a command that shows results takes ``--json``: alone (or ``--json -``) it prints the JSON
  document alone on stdout (anything else goes to stderr); ``--json PATH`` writes it to PATH and
  prints the text form as usual. The word after ``--json`` is its PATH when it is ``-``, has a
  ``/`` or ends in ``.json`` (or on a command without arguments); ``--json=PATH`` is always a
  PATH. So ``labgate flight show --json 12`` shows flight 12 as JSON.

Imports here are light (click and the model only): ``labgate --help`` must not load pydantic,
SQLAlchemy or rich.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from labgate.model import Blessing, Embargo

if TYPE_CHECKING:
    from rich.console import Console

    from labgate.config import Lab
    from labgate.store import Store

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

FAILED = 1
USAGE_ERROR = 2
CANCELLED = 130
JSON_STDOUT = "-"
MAX_ID = 2**63 - 1
"""The largest id a store keeps (its integer keys are 64-bit)."""
ID = click.IntRange(1, MAX_ID)
"""The click type of a flight's (or any stored thing's) id: a number past MAX_ID is a usage
error, not a traceback."""


def settle() -> None:
    """Called by a command that runs on (a flight, a gate, a worker, the dashboard) once it has
    started, before its event loop:

    - what start-up made (modules, the lab, the app: about 100,000 objects) lives as long as the
      process, so it leaves the garbage collector's generations: a full collection then walks
      only what the work itself made, not all of that again, which set the slowest page times
      and step ends;
    - on Python 3.11 the event loop learns that a step's process ended from a pidfd it polls
      with everything else, as Python 3.12 does by itself, not from a thread started for each
      process (see ``labgate.children``).
    """
    from labgate import children  # here: the commands that start no loop start without asyncio

    gc.freeze()
    children.install()


def fail(message: str, status: int = USAGE_ERROR) -> NoReturn:
    """End the command with ``labgate: <message>`` on stderr and exit status ``status``."""
    click.echo(f"labgate: {message}", err=True)
    sys.exit(status)


# --- the command classes: the error convention and --json's optional PATH ----------------------


def _json_path_word(word: str, command_takes_words: bool) -> bool:
    """Whether the word after a bare ``--json`` is its PATH rather than the command's argument."""
    if word == JSON_STDOUT:
        return True
    if word.startswith("-"):
        return False
    return not command_takes_words or "/" in word or word.endswith(".json")


class JsonOption(click.Option):
    """The ``--json`` option of :func:`json_option`."""


class LabgateCommand(click.Command):
    """A command whose ``--json`` (see :func:`json_option`) takes an optional PATH."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(isinstance(p, JsonOption) for p in self.params):
            takes_words = any(isinstance(p, click.Argument) for p in self.params)
            args = json_args(args, takes_words)
        return super().parse_args(ctx, args)


def json_args(args: Sequence[str], command_takes_words: bool) -> list[str]:
    """``--json`` → ``--json=-``, ``--json PATH`` → ``--json=PATH`` (up to a ``--``)."""
    out: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            out += [arg, *rest]
            break
        if arg != "--json":
            out.append(arg)
        elif rest and _json_path_word(rest[0], command_takes_words):
            out.append(f"--json={rest.pop(0)}")
        else:
            out.append(f"--json={JSON_STDOUT}")
    return out


class LabgateGroup(click.Group):
    """The ``labgate`` groups: their commands are :class:`LabgateCommand`; the top group turns
    every error into ``labgate: ...`` (exit 2) and Ctrl-C into exit 130."""

    command_class = LabgateCommand
    group_class: type[click.Group] | type[type] | None = type  # subgroups: LabgateGroups too

    def main(self, args: Sequence[str] | None = None, **extra: Any) -> NoReturn:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        try:
            status = super().main(args, standalone_mode=False, **extra)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else "labgate"
            fail(f"{error.format_message().rstrip('.')} (see `{where} --help`)")
        except click.ClickException as error:
            fail(error.format_message())
        except (click.Abort, KeyboardInterrupt, EOFError):
            click.echo("", err=True)
            sys.exit(CANCELLED)
        sys.exit(status if isinstance(status, int) else 0)


# --- options ------------------------------------------------------------------------------------


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


def json_option(func: F) -> F:
    """``--json [PATH|-]``: the command's result as JSON, on stdout (alone or ``-``) or in PATH.
    The command receives ``json_to``: None, ``"-"`` or the PATH; see :func:`emit_json`."""
    return click.option(
        "--json",
        "json_to",
        cls=JsonOption,
        metavar="[PATH|-]",
        default=None,
        help="Print the result as JSON on stdout (or write it to PATH).",
    )(func)


def json_on_stdout(json_to: str | None) -> bool:
    """Whether stdout is for the JSON document alone (text goes to stderr then)."""
    return json_to == JSON_STDOUT


def emit_json(document: Any, json_to: str | None) -> None:
    """Write ``document`` where ``--json`` asked: stdout for ``-``, else the file PATH."""
    if json_to is None:
        return
    text = json.dumps(document, indent=2) + "\n"
    if json_to == JSON_STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(json_to).write_text(text, encoding="utf-8")
    except OSError as error:
        fail(f"--json {json_to}: cannot write it: {error.strerror or error}")


@dataclass(frozen=True)
class FlightWanted:
    """What :func:`flight_options` asked for: revisions (``TREE=REV``), job globs, blessing."""

    revs: tuple[str, ...]
    jobs: tuple[str, ...]
    blessing: str


def flight_options(func: F) -> F:
    """``--rev TREE=REV``, ``--job GLOB`` and ``--blessing``: what a planned flight tests. The
    command receives them as one ``wanted`` (a :class:`FlightWanted`)."""

    @functools.wraps(func)
    def command(
        *args: Any, revs: tuple[str, ...], jobs: tuple[str, ...], blessing: str, **kwargs: Any
    ) -> Any:
        return func(*args, wanted=FlightWanted(revs, jobs, blessing), **kwargs)

    decorated: Any = command
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
        decorated = option(decorated)
    return decorated


# --- consoles -----------------------------------------------------------------------------------


def console(*, stderr: bool = False) -> Console:
    """The console a command prints text with. A long line is never broken into several (a
    terminal folds it on screen, and it copies whole); tables take the terminal's width (see
    ``labgate.text.print_table``), and when the output is a file or a pipe, as much as they need."""
    from rich.console import Console

    terminal = Console(stderr=stderr).is_terminal
    width = None if terminal else UNWRAPPED_WIDTH
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


# wide enough for any line we print; rich needs a finite width
UNWRAPPED_WIDTH = 100_000


# --- the lab and its store ------------------------------------------------------------------------


def parse_revs(revs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in revs:
        tree, sep, rev = item.partition("=")
        if not sep or not tree or not rev:
            fail(f"--rev {item!r}: expected TREE=REV, e.g. --rev xen=staging~3")
        out[tree] = rev
    return out


def known_branch(lab: Lab, branch: str) -> None:
    """End the command (exit 2) when ``branch`` is not one of the lab's branches."""
    if branch not in lab.branches:
        fail(f"unknown branch {branch!r} (branches: {', '.join(lab.branches) or 'none'})")


def plan_from_options(
    lab: Lab, store: Store, branch: str, wanted: FlightWanted, embargo: Embargo | None = None
) -> int:
    """Plan the flight that :func:`flight_options` describe (under ``embargo`` if given); a bad
    option ends the command."""
    from labgate.flight import FlightError, plan_flight

    known_branch(lab, branch)
    try:
        return plan_flight(
            lab,
            store,
            branch,
            overrides=parse_revs(wanted.revs),
            job_globs=wanted.jobs,
            blessing=Blessing(wanted.blessing),
            embargo=embargo,
        )
    except (FlightError, LookupError) as error:
        fail(str(error))


def open_lab(lab_dir: Path) -> Lab:
    from labgate.config import ConfigError, load_lab

    try:
        return load_lab(lab_dir.resolve())
    except ConfigError as error:
        fail(str(error))


def with_store(lab_dir: Path, use: Callable[[Lab, Store], T]) -> T:
    """Open the lab and its store, call ``use`` (a read or a change) and return what it gives;
    what the store refuses (no such user, a request decided already...) ends the command with
    its reason."""
    from labgate.store import StoreError

    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        try:
            return use(lab, store)
        except StoreError as error:
            fail(str(error))


@contextmanager
def open_store(lab: Lab) -> Iterator[Store]:
    from labgate.store import Store, StoreError

    try:
        store = Store.open(lab.database_url)
    except StoreError as error:
        fail(str(error))
    try:
        yield store
    finally:
        store.close()
