"""``labgate review``: process the review queue, list discrepancies with other CI accounts."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import click

from labgate.commandline import fail, lab_option, open_lab, open_store
from labgate.review.base import ReviewRun
from labgate.review.connectors import connectors_for
from labgate.review.loop import ReviewLoop
from labgate.store.review import Discrepancy


@click.group("review")
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
def run_command(lab_dir: Path, once: bool) -> None:
    """Test queued patch sets and vote; without --once, keep listening and testing."""
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
            for run in asyncio.run(loop.process_once()):
                click.echo(run_line(run))
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
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
def discrepancies_command(lab_dir: Path, json_output: bool) -> None:
    """Patch sets where labgate's vote and another CI account's differ."""
    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        found = store.review.discrepancies()
    if json_output:
        click.echo(json.dumps([d.to_json() for d in found], indent=2))
        return
    for d in found:
        click.echo(discrepancy_line(d))
    if not found:
        click.echo("no discrepancies")
