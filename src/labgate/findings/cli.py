"""``labgate findings``: a flight's static analysis findings against its baseline, their triage
and each rule's count over a branch's history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from labgate.commandline import (
    ID,
    LabgateGroup,
    console,
    emit_json,
    fail,
    json_on_stdout,
    json_option,
    known_branch,
    lab_option,
    open_lab,
    open_store,
)


class _FindingsGroup(LabgateGroup):
    """``labgate findings FLIGHT`` is ``labgate findings show FLIGHT``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group("findings", cls=_FindingsGroup)
def findings_group() -> None:
    """Static analysis findings: a flight's against its baseline (`labgate findings FLIGHT`),
    triage, trends."""


@findings_group.command("show")
@lab_option
@click.argument("flight_id", type=ID)
@json_option
def show(lab_dir: Path, flight_id: int, json_to: str | None) -> None:
    """List a flight's findings against its baseline: new, unchanged and fixed, with triage and
    the commit blamed for each new one. Exit 1 when a new finding blocks the push."""
    from labgate.findings.report import flight_comparison, lines
    from labgate.store import StoreError

    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        try:
            comparison = flight_comparison(store, flight_id, lab.findings)
        except StoreError as error:
            fail(str(error))
        flight = store.get_flight(flight_id)
        base = store.get_flight(comparison.baseline) if comparison.baseline else None
    document: dict[str, Any] = comparison.to_json()
    for row, item in zip(comparison.rows, document["findings"], strict=True):
        at = (base.revisions if base else {}) if str(row.state) == "fixed" else flight.revisions
        item["revision"] = at.get(row.finding.tree or "")
    if not json_on_stdout(json_to):
        out = console()
        at_base = base.revisions if base else {}
        for line in lines(comparison, flight.revisions, at_base):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    emit_json(document, json_to)
    raise SystemExit(1 if comparison.blocking else 0)


@findings_group.command("triage")
@lab_option
@click.argument("identity")
@click.option(
    "--as",
    "state",
    required=True,
    type=click.Choice(["false-positive", "intentional"]),
    help="What the finding is.",
)
@click.option("--reason", required=True, help="Why (kept with the triage).")
@click.option("--by", "who", required=True, help="Who says so.")
def triage(lab_dir: Path, identity: str, state: str, reason: str, who: str) -> None:
    """Triage a finding by its identity (a prefix of at least 8 characters shown by `labgate
    findings FLIGHT` will do): it stays triaged in every revision and no longer blocks."""
    from labgate.findings.model import TriageState

    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        full = _identity(store, identity)
        said = store.set_triage(full, TriageState(state), reason.strip(), who.strip())
    console().print(f"{full}: {said.state} by {said.by}: {said.reason}", markup=False)


@findings_group.command("untriage")
@lab_option
@click.argument("identity")
def untriage(lab_dir: Path, identity: str) -> None:
    """Forget a finding's triage (it blocks again if its rule and level do)."""
    lab = open_lab(lab_dir)
    with open_store(lab) as store:
        full = _identity(store, identity)
        if not store.clear_triage(full):
            fail(f"finding {full} has no triage", 1)
    console().print(f"{full}: triage removed", markup=False)


@findings_group.command("trend")
@lab_option
@click.argument("branch")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
def trend(lab_dir: Path, branch: str, limit: int, json_to: str | None) -> None:
    """Each rule's count of findings over the branch's last real flights, oldest first."""
    lab = open_lab(lab_dir)
    known_branch(lab, branch)
    with open_store(lab) as store:
        rows = store.rule_counts(branch, limit)
    document = [{"flight": f, "rule": rule, "count": n} for f, rule, n in rows]
    if not json_on_stdout(json_to):
        out = console()
        for f, rule, n in rows:
            out.print(f"{f}\t{rule}\t{n}", markup=False, highlight=False)
    emit_json(document, json_to)


def _identity(store: Any, given: str) -> str:
    """The full identity a prefix names (8 characters at least, one identity only)."""
    from labgate.findings.identity import IDENTITY_LENGTH

    given = given.strip().lower()
    if len(given) == IDENTITY_LENGTH:
        return given
    if len(given) < 8:
        fail(f"identity {given!r}: give at least 8 characters of it")
    found = store.identities_like(given)
    if len(found) != 1:
        what = "no finding in the store starts" if not found else "several findings start"
        fail(f"identity {given!r}: {what} with it")
    return str(found[0])
