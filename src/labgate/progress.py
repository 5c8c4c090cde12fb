"""Live progress of a flight on a terminal (rich), or a line per finished job elsewhere."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from labgate.model import Outcome

if TYPE_CHECKING:
    from rich.console import Console, Group

STYLE = {
    Outcome.PASS: "green",
    Outcome.FAIL: "red",
    Outcome.BROKEN: "magenta",
    Outcome.BLOCKED: "yellow",
    Outcome.SKIP: "cyan",
    Outcome.CANCELLED: "yellow",
}


class FlightProgress:
    """Shows jobs done/total and, for each running job, its host, step and elapsed time.

    Use as a context manager around the flight run. On a terminal the display is live; otherwise
    each finished job is printed as one line (for logs and CI). Each line names its flight:
    several flights (a bisection's) may print to one console at once.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live_mode = console.is_terminal
        self.flight_id: int | None = None
        self.running: dict[str, tuple[str, str, float]] = {}
        self.bar: Any = None
        self.live: Any = None
        if self.live_mode:  # only a terminal shows them: elsewhere a flight starts without them
            from rich.live import Live
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(
                TextColumn("[bold]flight {task.fields[flight]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("jobs"),
                TimeElapsedColumn(),
                console=console,
            )
            self.task = self.bar.add_task("flight", total=None, flight="?")
            self.live = Live(self, console=console, refresh_per_second=8, transient=True)

    def __rich__(self) -> Group:
        from rich.console import Group
        from rich.table import Table

        table = Table(box=None, show_header=bool(self.running), pad_edge=False)
        table.add_column("job")
        table.add_column("host")
        table.add_column("step")
        table.add_column("elapsed", justify="right")
        now = time.monotonic()
        for job, (host, step, started) in sorted(self.running.items()):
            table.add_row(job, host, step, f"{now - started:.1f}s")
        return Group(self.bar, table)

    def __enter__(self) -> FlightProgress:
        if self.live_mode:
            self.live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.live_mode:
            self.live.__exit__(exc_type, exc, tb)

    def flight_started(self, flight_id: int, total: int, done: int) -> None:
        self.flight_id = flight_id
        if self.bar is not None:
            self.bar.update(self.task, total=total, completed=done, flight=flight_id)

    def job_started(self, job: str, host: str) -> None:
        self.running[job] = (host, "preparing", time.monotonic())

    def step_started(self, job: str, step: str) -> None:
        host, _, started = self.running.get(job, ("?", "", time.monotonic()))
        self.running[job] = (host, step, started)

    def job_finished(self, job: str, outcome: Outcome, host: str | None) -> None:
        self.running.pop(job, None)
        if self.bar is not None:
            self.bar.advance(self.task)
        where = f" on {host}" if host else ""
        flight = f"flight {self.flight_id}: " if self.flight_id is not None else ""
        if not self.live_mode and self.console.color_system is None:
            # a log line, written as is: rich's markup and rendering of it cost more than a
            # step's own record in the store
            self.console.file.write(f"{flight}{outcome} {job}{where}\n")
            return
        style = STYLE.get(outcome, "white")
        self.console.print(f"{flight}[{style}]{outcome}[/] {job}{where}", highlight=False)
