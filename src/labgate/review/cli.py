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
from labgate.review.readiness import discrepancy_line, readiness_line


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


@review_group.command("discrepancies")
@lab_option
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many of each review target's latest patch sets the figures cover.",
)
@json_option
def discrepancies_command(lab_dir: Path, last: int, json_to: str | None) -> None:
    """Whether labgate is ready to vote: per review target, over its last patch sets, agreement
    with the other CI accounts' results on the same patch sets, broken runs, and the time from
    a patch set to labgate's result (p50, p95); then each patch set where labgate's vote and
    another CI account's differ. JSON: {"targets": [...], "discrepancies": [...]}."""
    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        targets = store.review.readiness(last)
        found = store.review.discrepancies()
    emit_json(
        {"targets": [r.to_json() for r in targets], "discrepancies": [d.to_json() for d in found]},
        json_to,
    )
    if json_on_stdout(json_to):
        return
    for r in targets:
        click.echo(readiness_line(r))
    if not targets:
        click.echo("no patch set has a result of labgate yet")
    for d in found:
        click.echo(discrepancy_line(d))
    if not found:
        click.echo("no discrepancies")
