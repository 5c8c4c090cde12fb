"""The ``labgate`` command line: wiring only; the work is done by the core and the edges."""

from __future__ import annotations

import click

from labgate import __version__
from labgate.bisect.cli import bisect_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labgate")
def main() -> None:
    """labgate: a test lab controller (flights, push gate, bisection)."""


main.add_command(bisect_group)
