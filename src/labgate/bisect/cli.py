"""``labgate bisect``: a better ``git bisect run`` for any git repository.

One word for a test execution everywhere in the text and the JSON: a *run*; runs started together
(or each started after the result before) make a *round*.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Literal, NoReturn

import click
from rich.console import Console
from rich.live import Live
from rich.text import Text

from labgate.bisect.engine import Answer, BisectError, Decision, Knowledge, Search
from labgate.bisect.gitgraph import GitError, commit_info, read_range, toplevel
from labgate.bisect.run import (
    TREE,
    Execution,
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
FAILING_TAIL_LINES = 5  # lines of a failing run's output shown as it ends
KNOWLEDGE = click.Choice(["no", "yes", "auto"])
SUSPECT_ENDS = ("bad-end-passes", "good-end-fails", "test-random")


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
@click.option(
    "--flaky",
    type=KNOWLEDGE,
    default="auto",
    show_default=True,
    help="Can a good commit fail? no: never; yes: it does; auto: learn it from the runs.",
)
@click.option(
    "--intermittent",
    type=KNOWLEDGE,
    default="auto",
    show_default=True,
    help="Can a bad commit pass? no / yes / auto, as for --flaky. "
    "--flaky no --intermittent no costs git bisect's runs.",
)
@click.option("--first-parent", is_flag=True, help="Follow only the first parent of merges.")
@click.option(
    "--max-runs",
    "--max-executions",
    "max_runs",
    type=click.IntRange(min=1),
    metavar="N",
    help="Give up (undecided) after N runs, earlier observations included.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.0, min_open=True),
    metavar="SECONDS",
    help="Kill a run still going after SECONDS; it counts as skip (see --timeout-means).",
)
@click.option(
    "--timeout-means",
    type=click.Choice(["skip", "bad"]),
    default="skip",
    show_default=True,
    help="What a timed-out run says about its commit.",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="A clean worktree for every run (default: one worktree per job, moved from commit to"
    " commit, so untracked build outputs survive as under git bisect).",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Keep each run's output in DIR (default: a new directory under .git/labgate-bisect/).",
)
@click.option("--verbose", "-v", is_flag=True, help="Show every run's output as it comes.")
@click.option(
    "--seed",
    default=0,
    type=int,
    hidden=True,
    help="Ignored: the search is deterministic (kept for scripts that pass it).",
)
@click.option(
    "--observations",
    "observations_path",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON lines of earlier results to reuse; every new result is appended.",
)
@click.option(
    "--json",
    "json_path",
    metavar="[PATH]",
    is_flag=False,
    flag_value="-",
    help="Print the result as JSON on stdout, or write it to PATH ('-': stdout).",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def bisect_run_command(
    good: tuple[str, ...],
    bad: str | None,
    jobs: int,
    confidence: float,
    flaky: Knowledge,
    intermittent: Knowledge,
    first_parent: bool,
    max_runs: int | None,
    timeout: float | None,
    timeout_means: Literal["skip", "bad"],
    fresh: bool,
    log_dir: Path | None,
    verbose: bool,
    seed: int,
    observations_path: Path | None,
    json_path: str | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND on commits between --good and --bad until the first bad commit is known.

    Runs happen in worktrees of their own (one per job, moved from commit to commit; --fresh for
    a new one per run), with COMMAND started in the worktree's root; your checkout, HEAD and
    index are never touched. COMMAND's exit status means what it means to git bisect run: 0 good,
    125 skip, 1-127 bad, 128 or more aborts the search. Each run's output is kept in a log file
    (--log-dir); the last lines of each failing run are shown as it ends, everything with -v.

    A test that never fails at --bad, or already fails at --good, names no culprit: the search
    ends undecided and says which end to check.

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
        if json_path is not None and json_path != "-":
            _check_writable(Path(json_path))
        repo = toplevel(Path.cwd())
        tree_range = read_range(repo, good, bad, tree=TREE)
        earlier = _load_earlier(observations_path, tree_range.parents, err)
        search = Search(
            [tree_range],
            first_parent=first_parent,
            confidence=confidence,
            max_executions=max_runs,
            seed=seed,
            flaky=flaky,
            intermittent=intermittent,
        )
        options = dict(log_dir=log_dir, fresh=fresh, timeout=timeout, timeout_means=timeout_means)
        result = _run(
            repo, search, command, jobs, earlier, observations_path, err, verbose, options
        )
    except (BisectError, GitError, OSError) as error:
        _usage(err, str(error))
    except SearchAborted as aborted:
        if aborted.output_tail:
            err.print(Text(aborted.output_tail), style="dim")
        where = f" (its output: {aborted.log})" if aborted.log else ""
        err.print(f"labgate bisect run: {aborted}{where}")
        if json_path is not None and aborted.result is not None:
            _write_json(json_path, aborted.result, str(aborted), "aborted")
        sys.exit(EXIT_UNDECIDED)
    except KeyboardInterrupt:
        saved = f"; results so far are in {observations_path}" if observations_path else ""
        err.print(f"labgate bisect run: interrupted, every worktree removed{saved}")
        sys.exit(EXIT_INTERRUPTED)
    try:
        _report(repo, result, json_path, err, bad, good)
    except (GitError, OSError) as error:
        _usage(err, str(error))
    sys.exit(EXIT_CULPRIT if result.decision.kind == "culprit" else EXIT_UNDECIDED)


def _check_writable(path: Path) -> None:
    """Fail now, not after the search, when the JSON result could not be written to ``path``."""
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        raise OSError(f"--json {path}: cannot write there: {error.strerror or error}") from error
    if not existed:
        path.unlink()


def _usage(err: Console, message: str) -> NoReturn:
    err.print(f"labgate bisect run: error: {message}")
    sys.exit(EXIT_USAGE)


def _load_earlier(
    path: Path | None, in_range: Mapping[str, object], err: Console
) -> list[tuple[str, Answer]]:
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
    earlier: Sequence[tuple[str, Answer]],
    observations_path: Path | None,
    err: Console,
    verbose: bool,
    options: Mapping[str, Any],
) -> Result:
    def record(commit: str, outcome: Answer) -> None:
        if observations_path is not None:
            append_observation(observations_path, commit, outcome)

    with _sigterm_as_interrupt(), _progress_display(err) as (show, stream):
        return bisect_run(
            repo,
            search,
            command,
            jobs=jobs,
            earlier=earlier,
            record=record,
            progress=show,
            stream=stream if verbose else None,
            **options,
        )


@contextmanager
def _progress_display(err: Console) -> Iterator[tuple[Any, Any]]:
    """A live status line on a terminal, one plain line per finished run otherwise; the last
    lines of each failing run under it. Also yields the ``-v`` printer of output lines."""
    lock = threading.Lock()

    def printer(console: Console) -> Any:
        def stream(commit: str, line: bytes) -> None:
            text = line.decode(errors="replace").rstrip("\n")
            with lock:
                console.print(Text(f"[{commit[:10]}] {text}"), style="dim")

        return stream

    if not err.is_terminal:

        def plain(progress: Progress) -> None:
            if progress.last is not None:
                with lock:
                    err.print(Text(f"run {progress.runs}: {_run_line(*progress.last)}"))
                    _print_tail(err, *progress.last)

        yield plain, printer(err)
        return
    with Live(Text("starting"), console=err, transient=True, refresh_per_second=8) as live:

        def show(progress: Progress) -> None:
            if progress.last is not None:
                outcome = progress.last[1]
                colour = {"good": "green", "bad": "red", "skip": "yellow"}[outcome]
                with lock:
                    live.console.print(
                        Text.assemble("  ", (f"{outcome:4}", colour), _run_line(*progress.last)[4:])
                    )
                    _print_tail(live.console, *progress.last)
            live.update(_status_line(progress))

        yield show, printer(live.console)


def _run_line(execution: Execution, outcome: Answer) -> str:
    how = (
        f"timed out after {execution.seconds:.0f} s"
        if execution.timed_out
        else f"exit {execution.status}"
    )
    return f"{outcome:4} {execution.commit[:12]} ({how}, {execution.seconds:.1f} s)"


def _print_tail(console: Console, execution: Execution, outcome: Answer) -> None:
    """The end of a failing (or timed-out) run's output and where the rest is."""
    if outcome != "bad" and not execution.timed_out:
        return
    for line in execution.output_tail.splitlines()[-FAILING_TAIL_LINES:]:
        console.print(Text(f"    | {line}"), style="dim")
    console.print(Text(f"    log: {execution.log}"), style="dim")


def _status_line(progress: Progress) -> Text:
    decision = progress.decision
    line = Text(f"round {progress.round} · {progress.runs} runs done")
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


def _report(
    repo: Path,
    result: Result,
    json_path: str | None,
    err: Console,
    bad: str,
    good: Sequence[str],
) -> None:
    decision = result.decision
    out = err if json_path == "-" else Console(highlight=False, soft_wrap=True, markup=False)
    counts = f"{result.runs} runs in {result.rounds} rounds"
    message = None
    if decision.kind == "culprit" and decision.culprit is not None:
        info = commit_info(repo, decision.culprit.commit)
        out.print(
            f"{info.sha} is the first bad commit (confidence {decision.confidence:.3f}"
            f" after {counts})",
            style="bold",
        )
        out.print(f"Author: {info.author}\nDate:   {info.date}\n\n    {info.subject}")
    else:
        message = _message(result, bad, good)
        out.print(Text(f"no culprit after {counts}: {message}"))
        if decision.reason_code not in SUSPECT_ENDS:
            for culprit, probability in decision.candidates[:TOP_CANDIDATES]:
                out.print(f"  {culprit.commit}  {probability:.3f}")
    if result.resumed:
        out.print(f"({result.resumed} of the runs came from the observations file)", style="dim")
    if result.executions:
        out.print(Text(f"(each run's output: {result.log_dir})"), style="dim")
    if json_path is not None:
        _write_json(json_path, result, message, decision.reason_code)


def _message(result: Result, bad: str, good: Sequence[str]) -> str:
    """One line on why no culprit was named and what to check."""
    decision = result.decision
    if decision.reason_code not in SUSPECT_ENDS:
        return decision.reason or "undecided"
    if decision.reason_code == "test-random":
        logs = [e.log for e in result.executions if e.outcome == "bad"]
        log = f" (the last failing run's output: {logs[-1]})" if logs else ""
        return f"{decision.reason}{log}"
    passing = decision.reason_code == "bad-end-passes"
    logs = [e.log for e in result.executions if e.outcome == ("good" if passing else "bad")]
    log = f" (the last such run's output: {logs[-1]})" if logs else ""
    if passing:
        return (
            f"the test never failed at the bad end {bad!r}: check that the command fails there"
            f" and sees the regression{log}"
        )
    ends = " / ".join(repr(rev) for rev in good)
    return (
        f"the test already fails at the good end {ends}: check that the command passes there{log}"
    )


def _write_json(json_path: str, result: Result, message: str | None, reason: str | None) -> None:
    decision = result.decision
    document = {
        "culprit": decision.culprit.commit if decision.culprit is not None else None,
        "confidence": decision.confidence,
        "runs": result.runs,
        "rounds": result.rounds,
        "resumed": result.resumed,
        "cancelled": result.cancelled,
        "reason": None if decision.kind == "culprit" else reason or "undecided",
        "message": message,
        "candidates": [
            [culprit.commit, probability]
            for culprit, probability in decision.candidates[:TOP_CANDIDATES]
        ],
        "good_end_fails": decision.good_end_fails,
        "bad_end_passes": decision.bad_end_passes,
        "fails_at_random": decision.fails_at_random,
        "flake_rate": decision.flake_rate,
        "detection_rate": decision.detection_rate,
        "observations": [
            {"commit": commit, "outcome": outcome} for commit, outcome in result.observations
        ],
        "log_dir": str(result.log_dir),
        "logs": [
            {
                "commit": e.commit,
                "outcome": e.outcome,
                "exit_status": e.status,
                "timed_out": e.timed_out,
                "seconds": round(e.seconds, 3),
                "log": str(e.log),
            }
            for e in result.executions
        ],
    }
    text = json.dumps(document, indent=2) + "\n"
    if json_path == "-":
        sys.stdout.write(text)
    else:
        Path(json_path).write_text(text, encoding="utf-8")
