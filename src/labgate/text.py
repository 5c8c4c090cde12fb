"""Text forms of flights for the CLI (``labgate flight show``/``list``, the demo), and how a
table is printed so that no value a user copies is ever cut."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich import box
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
        plain = _plain_rendering(out, table)
        if plain is not None:
            out.out(plain, highlight=False)
        else:
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


def _plain_rendering(out: Console, table: Table) -> str | None:
    """``table`` as rich would print it on ``out``, when rich would print it without styles
    (no colour: a pipe or a file) and it is a default table whose rows each fit on one line;
    else None. Rich lays out every cell of every row through its renderables, which for a
    flight of 100 jobs printed to a pipe took 75–170 ms on a loaded machine; the lines here are
    the same characters (``tests/test_cli.py`` compares them with rich's own on 40 random
    tables) in 11–17 ms."""
    if out.color_system is not None or out.options.ascii_only or out.legacy_windows:
        return None
    if not (
        table.box is box.HEAVY_HEAD
        and table.show_header
        and table.show_edge
        and not (table.show_footer or table.show_lines or table.expand or table.leading)
        and table.padding == (0, 1, 0, 1)
        and table.pad_edge
        and not table.collapse_padding
        and table.caption is None
        and (table.title is None or table.title_justify == "left")
        and table.width is None
        and not table.row_styles
        and all(not row.end_section for row in table.rows)
    ):
        return None
    columns = table.columns
    if not columns or any(
        c.justify != "left" or c.width is not None or c.min_width is not None
        or c.max_width is not None or c.ratio is not None
        for c in columns
    ):  # fmt: skip
        return None
    grid: list[list[str]] = []
    for cells in zip(*([c.header, *c.cells] for c in columns), strict=True):
        line = []
        for cell in cells:
            if isinstance(cell, str):
                cell = out.render_str(cell)
            if not isinstance(cell, Text) or "\n" in cell.plain or "\t" in cell.plain:
                return None
            line.append(cell.plain)
        grid.append(line)
    widths = [max(cell_len(row[i]) for row in grid) + 2 for i in range(len(columns))]
    title = None
    if table.title is not None:
        title_text = out.render_str(table.title) if isinstance(table.title, str) else table.title
        if not isinstance(title_text, Text) or "\n" in title_text.plain:
            return None
        title = title_text.plain
        width = sum(widths) + len(widths) + 1
        if cell_len(title) > width:  # rich would wrap it
            return None
        if not out.soft_wrap:  # rich pads it to the table's width
            title += " " * (width - cell_len(title))
    b = box.HEAVY_HEAD

    def rule(left: str, horizontal: str, cross: str, right: str) -> str:
        return left + cross.join(horizontal * w for w in widths) + right

    def row(values: list[str], left: str, vertical: str, right: str) -> str:
        padded = (
            f" {v}{' ' * (w - 2 - cell_len(v))} " for v, w in zip(values, widths, strict=True)
        )
        return left + vertical.join(padded) + right

    lines = [] if title is None else [title]
    lines.append(rule(b.top_left, b.top, b.top_divider, b.top_right))
    lines.append(row(grid[0], b.head_left, b.head_vertical, b.head_right))
    lines.append(rule(b.head_row_left, b.head_row_horizontal, b.head_row_cross, b.head_row_right))
    lines += [row(values, b.mid_left, b.mid_vertical, b.mid_right) for values in grid[1:]]
    lines.append(rule(b.bottom_left, b.bottom, b.bottom_divider, b.bottom_right))
    return "\n".join(lines)


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
