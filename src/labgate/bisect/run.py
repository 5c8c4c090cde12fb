"""Running a bisection for real: the user's command in git worktrees of the repository, K at once.

The search itself is the engine's (pure, no I/O) and the loop is :func:`labgate.bisect.loop.drive`.
This module only executes what it asks for: one worktree per job slot, moved from commit to commit
by an in-place checkout so that untracked build outputs survive between runs as under git bisect
(``fresh``: a new worktree per run instead), the user's command started in the worktree's root in
a new session (its own process group, so it can be killed as a whole), stopped after ``timeout``
seconds, its exit status mapped to an outcome as ``git bisect run`` does, its output kept in a log
file per run, and every result appended to an observations file so an interrupted search resumes
without repeating work. The user's checkout, HEAD and index are never touched; worktrees and
commands are cleaned up even on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Literal

from labgate.bisect.engine import Answer, BisectError, Decision, Observation, Search
from labgate.bisect.loop import LoopState, drive
from labgate.git import git, run_git

TREE = ""  # the tree name of the single repository ``labgate bisect run`` works on
SKIP_STATUS = 125
ABORT_STATUS = 128
OUTPUT_TAIL_LINES = 20
KILL_GRACE_S = 2.0
CLEANUP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOG_DIR_NAME = "labgate-bisect"  # under the repository's git directory


def outcome_of_status(status: int) -> Answer | None:
    """Map a test command's exit status to an outcome as ``git bisect run`` does: 0 good,
    125 skip, 1-127 bad; None (abort the search) for 128 or more and for death by a signal."""
    if status == 0:
        return "good"
    if status == SKIP_STATUS:
        return "skip"
    if 0 < status < ABORT_STATUS:
        return "bad"
    return None


class SearchAborted(Exception):
    """The test command asked to stop the search (exit status >= 128, or killed by a signal)."""

    def __init__(self, commit: str, status: int, output_tail: str, log: Path | None = None):
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        super().__init__(f"the command {how} at {commit[:12]}: search aborted")
        self.commit = commit
        self.status = status
        self.output_tail = output_tail
        self.log = log
        self.result: Result | None = None  # the search up to the abort, set by bisect_run


class CommandNotStarted(BisectError):
    """The test command could not be started at all (not found, not executable)."""


# --- the observations file ------------------------------------------------------------------
def load_observations(path: Path) -> list[tuple[str, Answer]]:
    """Read ``(commit, outcome)`` pairs from a JSON-lines file; a missing file is empty."""
    if not path.exists():
        return []
    pairs: list[tuple[str, Answer]] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                commit, outcome = record["commit"], record["outcome"]
            except (ValueError, KeyError, TypeError) as error:
                raise BisectError(
                    f"{path}:{number}: not an observation (want "
                    f'{{"commit": SHA, "outcome": "good"|"bad"|"skip"}}): {error}'
                ) from error
            if outcome not in ("good", "bad", "skip") or not isinstance(commit, str):
                raise BisectError(f"{path}:{number}: outcome must be good, bad or skip")
            pairs.append((commit, outcome))
    return pairs


def append_observation(path: Path, commit: str, outcome: Answer) -> None:
    """Append one observation as a JSON line, flushed to disk before returning."""
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"commit": commit, "outcome": outcome}) + "\n")
        out.flush()
        os.fsync(out.fileno())


# --- executing one test ---------------------------------------------------------------------


def default_log_dir(repo: Path) -> Path:
    """Where a search keeps its runs' output unless told: a new directory per search under the
    repository's git directory (never in the work tree, so ``git status`` stays clean)."""
    common = Path(git(["rev-parse", "--git-common-dir"], cwd=repo))
    base = (common if common.is_absolute() else repo / common) / LOG_DIR_NAME
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return base / f"{stamp}-{os.getpid()}"


@dataclass(frozen=True)
class Execution:
    """One finished run of the test command: its exit status (negative: killed by that signal),
    whether it ran out of time, its duration, the last lines of its output and its log file."""

    commit: str
    status: int
    seconds: float
    output_tail: str
    log: Path
    timed_out: bool = False
    outcome: Answer | None = None  # what the run said, once mapped (None: it aborted)


class Workspace:
    """The worktrees of ``repo`` the runs happen in, the commands running there and their logs.

    One worktree per job slot, created at the slot's first run and moved with ``git checkout
    --force`` (tracked files follow the commit, untracked ones stay, as under git bisect);
    ``fresh``: a new worktree per run, removed after it. Thread-safe: runs happen on worker
    threads, ``cancel`` and ``close`` on the main thread. After ``cancel`` no command starts;
    ``close`` removes every worktree and the temp dir (the logs stay).
    """

    def __init__(
        self,
        repo: Path,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        log_dir: Path,
        jobs: int = 1,
        fresh: bool = False,
        timeout: float | None = None,
        stream: Callable[[str, bytes], None] | None = None,
    ):
        self.repo = repo
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.fresh = fresh
        self.timeout = timeout
        self.stream = stream
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        # a log directory given again keeps its earlier logs: numbering goes on after them
        self._logs = len(list(log_dir.glob("run-*.log")))
        self.root = Path(tempfile.mkdtemp(prefix="labgate-bisect-"))
        self._lock = threading.Lock()
        # git's worktree bookkeeping is not safe against concurrent add/remove/prune.
        self._git_lock = threading.Lock()
        self._cancelled = False
        self._serial = 0
        self._free_slots = list(range(jobs, 0, -1))
        self.started = 0  # commands started, including any killed when the search ended
        self._worktrees: set[Path] = set()
        self._running: set[subprocess.Popen[bytes]] = set()

    def execute(self, commit: str) -> Execution:
        """Move a free slot's worktree (or a fresh one) to ``commit`` and run the command there."""
        with self._lock:
            self._check_cancelled()
            self._serial += 1
            self._logs += 1
            log = self.log_dir / f"run-{self._logs:04d}-{commit[:12]}.log"
            slot = self._free_slots.pop()
            path = self.root / (f"{commit[:12]}-{self._serial}" if self.fresh else f"slot-{slot}")
            new = path not in self._worktrees
            self._worktrees.add(path)
        try:
            if new:
                with self._git_lock:
                    git(
                        ["worktree", "add", "--detach", "--quiet", str(path), commit], cwd=self.repo
                    )
            else:
                git(["checkout", "--detach", "--force", "--quiet", commit], cwd=path)
            started = time.monotonic()
            with log.open("wb") as output:
                status, timed_out = self._run_command(path, commit, output)
            seconds = time.monotonic() - started
            return Execution(commit, status, seconds, _tail(log), log, timed_out)
        finally:
            if self.fresh:
                self._remove(path)
            with self._lock:
                self._free_slots.append(slot)

    def cancel(self) -> None:
        """Start no new command and kill the running ones (their whole process groups)."""
        with self._lock:
            self._cancelled = True
            running = list(self._running)
        _stop(running)

    def close(self) -> None:
        """Remove every worktree still there, prune git's records of them, delete the temp dir."""
        with self._lock:
            left = list(self._worktrees)
        for path in left:
            self._remove(path)
        with self._git_lock:
            run_git(["worktree", "prune"], cwd=self.repo)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run_command(self, path: Path, commit: str, output: IO[bytes]) -> tuple[int, bool]:
        env = {**self.env, "LABGATE_BISECT_COMMIT": commit}
        with self._lock:
            self._check_cancelled()
            try:
                process = subprocess.Popen(
                    self.command,
                    cwd=path,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output if self.stream is None else subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as error:
                raise CommandNotStarted(
                    f"cannot run {self.command[0]!r} in the worktree of {commit[:12]}: "
                    f"{error.strerror or error}"
                ) from error
            self._running.add(process)
            self.started += 1
        copier = None
        if self.stream is not None and process.stdout is not None:
            copier = threading.Thread(
                target=_copy, args=(process.stdout, output, commit, self.stream), daemon=True
            )
            copier.start()
        timed_out = False
        try:
            try:
                status = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _stop([process])
                status = process.wait()
            return status, timed_out
        finally:
            # Whatever the command left behind in its session would outlive its run.
            _signal_group(process, signal.SIGKILL)
            if copier is not None:
                copier.join()
            with self._lock:
                self._running.discard(process)

    def _remove(self, path: Path) -> None:
        with self._git_lock:
            run_git(["worktree", "remove", "--force", "--force", str(path)], cwd=self.repo)
        shutil.rmtree(path, ignore_errors=True)
        with self._lock:
            self._worktrees.discard(path)

    def _check_cancelled(self) -> None:
        if self._cancelled:
            raise _Cancelled


class _Cancelled(Exception):
    """A run that was asked for after the search stopped; never escapes this module."""


def _copy(
    source: IO[bytes], log: IO[bytes], commit: str, stream: Callable[[str, bytes], None]
) -> None:
    """Copy a command's output line by line into its log and to ``stream`` (``-v``)."""
    for line in source:
        log.write(line)
        log.flush()
        stream(commit, line)


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, SIGKILL what is left after the grace period."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-OUTPUT_TAIL_LINES:])


# --- the search -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What a person watching the search wants to see, after each event: the round reached,
    the runs finished, the commits running, the engine's latest decision, and the run just
    finished with the outcome it gave (None when runs just started)."""

    round: int
    runs: int
    running: tuple[str, ...]
    decision: Decision
    last: tuple[Execution, Answer] | None


@dataclass(frozen=True)
class Result:
    """The end of a search: the last decision and everything observed to reach it.

    ``observations`` are every run's (commit, outcome), the ``resumed`` earlier ones first;
    ``executions`` the runs made by this search (with their logs); ``cancelled`` the runs killed
    unfinished when the culprit was named (not among the observations).
    """

    decision: Decision
    observations: tuple[tuple[str, Answer], ...]
    executions: tuple[Execution, ...]
    rounds: int
    resumed: int
    cancelled: int
    log_dir: Path

    @property
    def runs(self) -> int:
        """The runs the answer rests on: every observation, resumed ones included."""
        return len(self.observations)


def bisect_run(
    repo: Path,
    search: Search,
    command: Sequence[str],
    *,
    jobs: int = 1,
    earlier: Sequence[tuple[str, Answer]] = (),
    record: Callable[[str, Answer], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    fresh: bool = False,
    timeout: float | None = None,
    timeout_means: Literal["skip", "bad"] = "skip",
    stream: Callable[[str, bytes], None] | None = None,
) -> Result:
    """Run the search to its end with :func:`labgate.bisect.loop.drive`, ``jobs`` runs at once.

    ``earlier`` observations are fed in first; ``record`` is called with every new one. Each
    run's output goes to a log in ``log_dir`` (default: :func:`default_log_dir`), and to
    ``stream(commit, line)`` as it comes when given. A run still going after ``timeout`` seconds
    is killed and counts as ``timeout_means``. Runs still going when a culprit is named are
    killed. Raises SearchAborted (with the search so far as its ``result``) when the command
    exits with 128 or more; KeyboardInterrupt propagates after the running commands are killed
    and every worktree is removed.
    """
    logs = default_log_dir(repo) if log_dir is None else log_dir
    workspace = Workspace(
        repo, command, env, log_dir=logs, jobs=jobs, fresh=fresh, timeout=timeout, stream=stream
    )
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="labgate-bisect")
    executions: list[Execution] = []
    finished: list[tuple[Execution, Answer]] = []
    state: list[LoopState] = []

    async def test(point: Mapping[str, str]) -> Answer:
        commit = point[TREE]
        loop = asyncio.get_running_loop()
        execution = await loop.run_in_executor(pool, workspace.execute, commit)
        found = timeout_means if execution.timed_out else outcome_of_status(execution.status)
        execution = replace(execution, outcome=found)
        executions.append(execution)
        if found is None:
            raise SearchAborted(commit, execution.status, execution.output_tail, execution.log)
        finished.append((execution, found))
        return found

    def on_round(now: LoopState) -> None:
        state[:] = [now]
        for commit, outcome in _pairs(now.added):
            if record is not None:
                record(commit, outcome)
        if progress is None:
            return
        running = tuple(point[TREE] for point in now.running)
        current = now.rounds + (1 if running else 0)
        done = len(now.observations) - len(earlier)
        if not finished:
            progress(Progress(current, done, running, now.decision, None))
        while finished:
            progress(Progress(current, done, running, now.decision, finished.pop(0)))

    aborted: SearchAborted | None = None
    start = [Observation({TREE: commit}, outcome) for commit, outcome in earlier]
    try:
        ended = asyncio.run(drive(search, start, test, k=jobs, on_round=on_round))
        decision, observed, rounds, cancelled = (
            ended.decision,
            ended.observations,
            ended.rounds,
            ended.cancelled,
        )
    except SearchAborted as error:
        aborted = error
        now = state[0] if state else None
        observed = now.observations if now is not None else tuple(start)
        rounds, cancelled = (now.rounds if now is not None else 0), 0
        decision = _undecided(now.decision if now is not None else None, str(error))
    finally:
        with _signals_deferred():
            workspace.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            workspace.close()
    result = Result(
        decision,
        tuple(_pairs(observed)),
        tuple(executions),
        rounds,
        len(earlier),
        cancelled,
        logs,
    )
    if aborted is not None:
        aborted.result = result
        raise aborted
    return result


def _pairs(observations: Sequence[Observation]) -> list[tuple[str, Answer]]:
    return [(o.point[TREE], o.outcome) for o in observations]


def _undecided(decision: Decision | None, reason: str) -> Decision:
    base = decision if decision is not None else Decision("undecided")
    return replace(base, kind="undecided", tests=(), culprit=None, reason=reason)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while cleaning up, so a second one cannot leave worktrees."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in CLEANUP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
