"""``labgate review``: process the review queue, list discrepancies with other CI accounts."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from pathlib import Path

import click

from labgate.commandline import (
    LabgateGroup,
    emit_json,
    fail,
    json_on_stdout,
    json_option,
    lab_option,
    open_lab,
    open_store,
)
from labgate.review.base import ReviewRun
from labgate.review.connectors import connectors_for
from labgate.review.loop import ReviewLoop
from labgate.store.review import Discrepancy


@click.group("review", cls=LabgateGroup)
def review_group() -> None:
    """Test the proposed patches of the lab's [[review]] entries and vote on them."""


def run_line(run: ReviewRun) -> str:
    what = {
        "voted": f"voted {run.vote:+d}" if run.vote is not None else "voted",
        "running": f"not finished ({run.reason or 'will be tried again'})",
    }.get(run.state, f"{run.state} ({run.reason})" if run.reason else run.state)
    flight = f" flight {run.flight_id}" if run.flight_id is not None else ""
    return (
        f"run {run.id} {run.connector} change {run.change} patch set {run.patchset[:12]} "
        f"attempt {run.attempt}:{flight} {what}"
    )


@review_group.command("run")
@lab_option
@click.option("--once", is_flag=True, help="Work on the queue until it is empty, then exit.")
@json_option
def run_command(lab_dir: Path, once: bool, json_to: str | None) -> None:
    """Test queued patch sets and vote; without --once, keep listening and testing.
    With --once --json: the runs it worked on, as JSON."""
    if json_to is not None and not once:
        fail("--json needs --once: without it the review loop never ends, so has no result")
    lab = open_lab(lab_dir)
    connectors, left_out = connectors_for(lab)
    for why in left_out:
        click.echo(f"labgate: {why}", err=True)
    if not connectors:
        fail("no [[review]] entry can run (add one to lab.toml)")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    review_log = logging.getLogger("labgate.review")
    review_log.addHandler(handler)
    review_log.setLevel(logging.INFO)
    with open_store(lab) as store:
        loop = ReviewLoop(lab, store, connectors)
        if once:
            runs = asyncio.run(loop.once())
            if not json_on_stdout(json_to):
                for run in runs:
                    click.echo(run_line(run))
            emit_json([dataclasses.asdict(run) for run in runs], json_to)
        else:
            asyncio.run(loop.run_forever(lab.poll_interval))


def discrepancy_line(d: Discrepancy) -> str:
    non_voting = " (non-voting)" if not d.voting else ""
    where = f" {d.url}" if d.url else ""
    return (
        f"{d.connector} change {d.change} patch set {d.patchset[:12]} ({d.revision[:12]}): "
        f"labgate {d.labgate:+d}{non_voting} (run {d.run}, flight {d.flight}) vs "
        f"{d.account} {d.label} {d.value:+d}{where}"
    )


@review_group.command("discrepancies")
@lab_option
@json_option
def discrepancies_command(lab_dir: Path, json_to: str | None) -> None:
    """Patch sets where labgate's vote and another CI account's differ."""
    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        found = store.review.discrepancies()
    emit_json([d.to_json() for d in found], json_to)
    if json_on_stdout(json_to):
        return
    for d in found:
        click.echo(discrepancy_line(d))
    if not found:
        click.echo("no discrepancies")
