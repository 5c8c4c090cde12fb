"""Text forms of flights for the CLI (``labgate flight show``/``list``)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from labgate.model import FlightResult
from labgate.progress import STYLE


def _styled(outcome: object) -> str:
    style = STYLE.get(outcome, "white")  # type: ignore[call-overload]
    return f"[{style}]{outcome}[/]"


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
