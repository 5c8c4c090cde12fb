"""``labgate bisect``: a better ``git bisect run`` for any git repository."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.live import Live
from rich.text import Text

from labgate.bisect.engine import BisectError, Decision, Outcome, Search
from labgate.bisect.gitgraph import GitError, commit_info, read_range, toplevel
from labgate.bisect.run import (
    TREE,
    Progress,
    Result,
    SearchAborted,
    append_observation,
    bisect_run,
    load_observations,
)

EXIT_CULPRIT = 0
EXIT_UNDECIDED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
TOP_CANDIDATES = 5


@click.group("bisect")
def bisect_group() -> None:
    """Find the commit that made a test fail, even when the test is flaky."""


@bisect_group.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--good", "good", multiple=True, metavar="REV", help="A revision without the bug.")
@click.option("--bad", "bad", metavar="REV", help="A revision with the bug.")
@click.option(
    "--jobs",
    "-j",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Runs at once, each in its own worktree.",
)
@click.option(
    "--confidence",
    default=0.99,
    show_default=True,
    type=click.FloatRange(0.5, 1.0, max_open=True),
    help="Name a culprit once it is this likely, however flaky or intermittent the test.",
)
@click.option("--first-parent", is_flag=True, help="Follow only the first parent of merges.")
@click.option(
    "--max-executions",
    type=click.IntRange(min=1),
    metavar="N",
    help="Give up (undecided) after N runs, earlier observations included.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the search's RNG.")
@click.option(
    "--observations",
    "observations_path",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON lines of earlier results to reuse; every new result is appended.",
)
@click.option(
    "--json", "json_path", metavar="PATH|-", help="Write the result as JSON ('-': stdout)."
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_command(
    good: tuple[str, ...],
    bad: str | None,
    jobs: int,
    confidence: float,
    first_parent: bool,
    max_executions: int | None,
    seed: int,
    observations_path: Path | None,
    json_path: str | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND on commits between --good and --bad until the first bad commit is known.

    Each run happens in its own temporary git worktree at the commit, with COMMAND started in its
    root; your checkout, HEAD and index are never touched. COMMAND's exit status means what it
    means to git bisect run: 0 good, 125 skip, 1-127 bad, 128 or more aborts the search.

    Exit status: 0 culprit named, 1 undecided, 2 usage error, 130 interrupted.

    \b
    Example:
        labgate bisect run --good v1.0 --bad main -j 4 -- make test
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    if not command:
        _usage(err, "no command to run: give it after `--`, e.g. `-- make test`")
    if bad is None:
        _usage(err, "--bad REV is required")
    if not good:
        _usage(err, "at least one --good REV is required")
    try:
        repo = toplevel(Path.cwd())
        tree_range = read_range(repo, good, bad, tree=TREE)
        earlier = _load_earlier(observations_path, tree_range.parents, err)
        search = Search(
            [tree_range],
            first_parent=first_parent,
            confidence=confidence,
            max_executions=max_executions,
            seed=seed,
        )
        result = _run(repo, search, command, jobs, earlier, observations_path, err)
    except (BisectError, GitError, OSError) as error:
        _usage(err, str(error))
    except SearchAborted as aborted:
        if aborted.output_tail:
            err.print(Text(aborted.output_tail), style="dim")
        err.print(f"labgate bisect run: {aborted}")
        if json_path is not None and aborted.result is not None:
            _write_json(json_path, aborted.result)
        sys.exit(EXIT_UNDECIDED)
    except KeyboardInterrupt:
        saved = f"; results so far are in {observations_path}" if observations_path else ""
        err.print(f"labgate bisect run: interrupted, every worktree removed{saved}")
        sys.exit(EXIT_INTERRUPTED)
    try:
        _report(repo, result, json_path, err)
    except (GitError, OSError) as error:
        _usage(err, str(error))
    sys.exit(EXIT_CULPRIT if result.decision.kind == "culprit" else EXIT_UNDECIDED)


def _usage(err: Console, message: str) -> NoReturn:
    err.print(f"labgate bisect run: error: {message}")
    sys.exit(EXIT_USAGE)


def _load_earlier(
    path: Path | None, in_range: Mapping[str, object], err: Console
) -> list[tuple[str, Outcome]]:
    """Earlier observations of commits in the range (others belong to another search)."""
    if path is None:
        return []
    every = load_observations(path)
    earlier = [(commit, outcome) for commit, outcome in every if commit in in_range]
    if len(earlier) < len(every):
        err.print(f"{path}: {len(every) - len(earlier)} observations outside this range ignored")
    return earlier


def _run(
    repo: Path,
    search: Search,
    command: Sequence[str],
    jobs: int,
    earlier: Sequence[tuple[str, Outcome]],
    observations_path: Path | None,
    err: Console,
) -> Result:
    def record(commit: str, outcome: Outcome) -> None:
        if observations_path is not None:
            append_observation(observations_path, commit, outcome)

    with _sigterm_as_interrupt(), _progress_display(err) as show:
        return bisect_run(
            repo, search, command, jobs=jobs, earlier=earlier, record=record, progress=show
        )


@contextmanager
def _progress_display(err: Console) -> Iterator[Any]:
    """A live status line on a terminal; one plain line per finished run otherwise."""
    if not err.is_terminal:

        def plain(progress: Progress) -> None:
            if progress.last is not None:
                commit, outcome, status = progress.last
                err.print(f"run {progress.executions}: {commit[:12]} {outcome} (exit {status})")

        yield plain
        return
    with Live(Text("starting"), console=err, transient=True, refresh_per_second=8) as live:

        def show(progress: Progress) -> None:
            if progress.last is not None:
                commit, outcome, status = progress.last
                colour = {"good": "green", "bad": "red", "skip": "yellow"}[outcome]
                live.console.print(
                    Text.assemble("  ", (f"{outcome:4}", colour), f" {commit[:12]} (exit {status})")
                )
            live.update(_status_line(progress))

        yield show


def _status_line(progress: Progress) -> Text:
    decision = progress.decision
    line = Text(f"round {progress.round} · {progress.executions} runs done")
    if progress.running:
        line.append(f" · {len(progress.running)} running")
    line.append(f" · {_candidates_left(decision)} candidates")
    if decision.candidates:
        leader, probability = decision.candidates[0]
        line.append(f" · leading {leader.commit[:10]} p={probability:.3f}", style="bold")
    return line


def _candidates_left(decision: Decision) -> str:
    """The engine lists its top candidates only: a full list means at least that many."""
    likely = sum(1 for _, probability in decision.candidates if probability >= 0.001)
    return f"≥{likely}" if likely == TOP_CANDIDATES else str(likely)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so worktrees are removed when the search is killed politely."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report(repo: Path, result: Result, json_path: str | None, err: Console) -> None:
    decision = result.decision
    out = err if json_path == "-" else Console(highlight=False, soft_wrap=True, markup=False)
    total = len(result.observations)
    if decision.kind == "culprit" and decision.culprit is not None:
        info = commit_info(repo, decision.culprit.commit)
        out.print(
            f"{info.sha} is the first bad commit "
            f"(confidence {decision.confidence:.3f} after {total} runs)",
            style="bold",
        )
        out.print(f"Author: {info.author}\nDate:   {info.date}\n\n    {info.subject}")
    else:
        out.print(f"no culprit after {total} runs: {decision.reason or 'undecided'}")
        for culprit, probability in decision.candidates[:TOP_CANDIDATES]:
            out.print(f"  {culprit.commit}  {probability:.3f}")
    if result.resumed:
        out.print(f"({result.resumed} of the runs came from the observations file)", style="dim")
    if json_path is not None:
        _write_json(json_path, result)


def _write_json(json_path: str, result: Result) -> None:
    decision = result.decision
    document = {
        "culprit": decision.culprit.commit if decision.culprit is not None else None,
        "confidence": decision.confidence,
        "executions": result.executions,
        "rounds": result.rounds,
        "candidates": [
            [culprit.commit, probability]
            for culprit, probability in decision.candidates[:TOP_CANDIDATES]
        ],
        "observations": [
            {"commit": commit, "outcome": outcome} for commit, outcome in result.observations
        ],
        "reason": decision.reason,
    }
    text = json.dumps(document, indent=2) + "\n"
    if json_path == "-":
        sys.stdout.write(text)
    else:
        Path(json_path).write_text(text, encoding="utf-8")
