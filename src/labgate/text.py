"""Text forms of flights for the CLI (``labgate flight show``/``list``, the demo), and how a
table is printed so that no value a user copies is ever cut."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from labgate.model import FlightResult
from labgate.progress import STYLE

RULE_WIDTH = 100  # a heading's rule when the output is not a terminal (which has no width)


def _styled(outcome: object) -> str:
    style = STYLE.get(outcome, "white")  # type: ignore[call-overload]
    return f"[{style}]{outcome}[/]"


def print_table(out: Console, table: Table) -> None:
    """Print ``table`` whole. When it is wider than the terminal, each row is printed as a
    record instead (its first value, then ``column: value`` lines), so that no value is cut or
    folded. Off a terminal the console does not wrap (see ``labgate.commandline.console``)."""
    if _width_at_most(table) <= out.width:  # the usual case, known without rendering every cell
        out.print(table)
        return
    natural = Measurement.get(out, out.options.update(max_width=10**6), table).maximum
    if natural <= out.width:
        out.print(table)
        return
    if table.title:
        out.print(table.title)
    headers = [str(column.header) for column in table.columns]
    cells = [list(column.cells) for column in table.columns]
    for row in range(table.row_count):
        values = [column[row] for column in cells]
        out.print(f"{headers[0]} {values[0]}", soft_wrap=True)
        for header, value in zip(headers[1:], values[1:], strict=True):
            if value:
                out.print(f"  {header}: ", value, sep="", soft_wrap=True)


def _width_at_most(table: Table) -> int:
    """A bound on ``table``'s natural width: each column's longest header or cell as written
    (markup counts, so it can only be longer than what shows), its padding and its border; a
    cell of another kind than text makes it unbounded. Measuring a table renders every cell:
    for a flight of hundreds of jobs printed to a pipe that was a tenth of ``labgate flight
    run``'s event loop time."""
    width = 1
    for column in table.columns:
        longest = 0
        for cell in (column.header, *column.cells):
            if isinstance(cell, Text):
                longest = max(longest, cell_len(cell.plain))
            elif isinstance(cell, str):
                longest = max(longest, cell_len(cell))
            else:
                return sys.maxsize
        width += longest + 3  # a space either side and a border
    return width


def heading(out: Console, title: str) -> None:
    """A section heading: a rule across the terminal, or one of ``RULE_WIDTH`` elsewhere."""
    out.print(Rule(title), width=min(out.width, RULE_WIDTH))


def flight_table(flight: FlightResult) -> Table:
    """The jobs of a flight with their outcome, host, and the step that ended them."""
    title = (
        f"flight {flight.id}  branch {flight.branch}  blessing {flight.blessing}  "
        f"{flight.state}" + (f": {flight.outcome}" if flight.outcome else "")
    )
    table = Table(title=title, title_justify="left")
    table.add_column("job")
    table.add_column("outcome")
    table.add_column("host")
    table.add_column("steps")
    table.add_column("reason")
    for job in flight.jobs:
        steps = " ".join(
            f"{s.name}:{s.outcome}" + (f"({s.duration_s:.2f}s)" if s.duration_s else "")
            for s in job.steps
        )
        table.add_row(job.name, _styled(job.outcome), job.host or "", steps, job.reason or "")
    return table


def revisions_table(flight: FlightResult) -> Table:
    table = Table(title="revision tuple", title_justify="left")
    table.add_column("tree")
    table.add_column("revision")
    for tree, sha in sorted(flight.revisions.items()):
        table.add_row(tree, sha)
    return table


def flights_table(flights: Sequence[FlightResult]) -> Table:
    table = Table()
    for col in ("flight", "branch", "blessing", "state", "outcome", "started", "finished"):
        table.add_column(col)
    for f in flights:
        table.add_row(
            str(f.id),
            f.branch,
            str(f.blessing),
            str(f.state),
            _styled(f.outcome) if f.outcome else "",
            f.started or "",
            f.finished or "",
        )
    return table
