"""Running a bisection for real: each test in its own temporary git worktree, K at once.

The search itself is the engine's (pure, no I/O). This module only executes what it asks for:
``git worktree add --detach`` per run, the user's command started in the worktree's root in a new
session (its own process group, so it can be killed as a whole), the exit status mapped to an
outcome as ``git bisect run`` does, and every result appended to an observations file so an
interrupted search resumes without repeating work. The user's checkout, HEAD and index are never
touched; worktrees and commands are cleaned up even on Ctrl-C.
"""

from __future__ import annotations

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
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from labgate.bisect.engine import BisectError, Decision, Observation, Outcome, Search
from labgate.git import git, run_git

TREE = ""  # the tree name of the single repository ``labgate bisect run`` works on
SKIP_STATUS = 125
ABORT_STATUS = 128
OUTPUT_TAIL_LINES = 20
KILL_GRACE_S = 2.0
CLEANUP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def outcome_of_status(status: int) -> Outcome | None:
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

    def __init__(self, commit: str, status: int, output_tail: str) -> None:
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        super().__init__(f"the command {how} at {commit[:12]}: search aborted")
        self.commit = commit
        self.status = status
        self.output_tail = output_tail
        self.result: Result | None = None  # the search up to the abort, set by bisect_run


class CommandNotStarted(BisectError):
    """The test command could not be started at all (not found, not executable)."""


# --- the observations file ------------------------------------------------------------------


def load_observations(path: Path) -> list[tuple[str, Outcome]]:
    """Read ``(commit, outcome)`` pairs from a JSON-lines file; a missing file is empty."""
    if not path.exists():
        return []
    pairs: list[tuple[str, Outcome]] = []
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


def append_observation(path: Path, commit: str, outcome: Outcome) -> None:
    """Append one observation as a JSON line, flushed to disk before returning."""
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"commit": commit, "outcome": outcome}) + "\n")
        out.flush()
        os.fsync(out.fileno())


# --- executing one test ---------------------------------------------------------------------


@dataclass(frozen=True)
class Execution:
    """One finished run of the test command."""

    commit: str
    status: int
    seconds: float
    output_tail: str


class Workspace:
    """Temporary worktrees of ``repo`` and the commands running in them.

    Thread-safe: runs happen on worker threads, ``cancel`` and ``close`` on the main thread.
    After ``cancel`` no command starts; ``close`` removes every worktree left and the temp dir.
    """

    def __init__(self, repo: Path, command: Sequence[str], env: Mapping[str, str] | None = None):
        self.repo = repo
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.root = Path(tempfile.mkdtemp(prefix="labgate-bisect-"))
        self._lock = threading.Lock()
        # git's worktree bookkeeping is not safe against concurrent add/remove/prune.
        self._git_lock = threading.Lock()
        self._cancelled = False
        self._serial = 0
        self.started = 0  # commands started, including any killed when the search ended
        self._worktrees: set[Path] = set()
        self._running: set[subprocess.Popen[bytes]] = set()

    def execute(self, commit: str) -> Execution:
        """Check ``commit`` out in a fresh worktree, run the command in it, remove the worktree."""
        with self._lock:
            self._check_cancelled()
            self._serial += 1
            path = self.root / f"{commit[:12]}-{self._serial}"
            self._worktrees.add(path)
        log = path.with_suffix(".log")
        try:
            with self._git_lock:
                git(["worktree", "add", "--detach", "--quiet", str(path), commit], cwd=self.repo)
            started = time.monotonic()
            with log.open("wb") as output:
                status = self._run_command(path, commit, output)
            return Execution(commit, status, time.monotonic() - started, _tail(log))
        finally:
            self._remove(path)
            log.unlink(missing_ok=True)

    def cancel(self) -> None:
        """Start no new command and kill the running ones (their whole process groups)."""
        with self._lock:
            self._cancelled = True
            running = list(self._running)
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            _signal_group(process, signal.SIGKILL)

    def close(self) -> None:
        """Remove every worktree still there, prune git's records of them, delete the temp dir."""
        with self._lock:
            left = list(self._worktrees)
        for path in left:
            self._remove(path)
        with self._git_lock:
            run_git(["worktree", "prune"], cwd=self.repo)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run_command(self, path: Path, commit: str, output: BinaryIO) -> int:
        env = {**self.env, "LABGATE_BISECT_COMMIT": commit}
        with self._lock:
            self._check_cancelled()
            try:
                process = subprocess.Popen(
                    self.command,
                    cwd=path,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
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
        try:
            return process.wait()
        finally:
            # Whatever the command left behind in its session would outlive its worktree.
            _signal_group(process, signal.SIGKILL)
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


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-OUTPUT_TAIL_LINES:])


# --- the search loop ------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What a person watching the search wants to see, after each event."""

    round: int
    executions: int
    running: tuple[str, ...]
    decision: Decision
    last: tuple[str, Outcome, int] | None  # commit, outcome, exit status of the run just done


@dataclass(frozen=True)
class Result:
    """The end of a search: the last decision and everything observed to reach it."""

    decision: Decision
    observations: tuple[tuple[str, Outcome], ...]
    executions: int
    rounds: int
    resumed: int


def bisect_run(
    repo: Path,
    search: Search,
    command: Sequence[str],
    *,
    jobs: int = 1,
    earlier: Sequence[tuple[str, Outcome]] = (),
    record: Callable[[str, Outcome], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> Result:
    """Run the search to its end: ask the engine for test points, run up to ``jobs`` at once (as
    soon as one finishes, ask again with the others as pending), stop at a culprit or undecided.

    ``earlier`` observations are fed in first; ``record`` is called with every new one. Runs still
    going when a culprit is named are killed (and counted in ``executions``). Raises SearchAborted
    (with the search so far as its ``result``) when the command exits with 128 or more;
    KeyboardInterrupt propagates after the running commands are killed and every worktree is
    removed.
    """
    loop = _Loop(search, Workspace(repo, command, env), jobs, list(earlier), record, progress)
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="labgate-bisect")
    aborted: SearchAborted | None = None
    try:
        decision = loop.run(pool)
    except SearchAborted as error:
        aborted = error
        assert loop.last is not None  # a run was started, so the engine was asked first
        decision = _undecided(loop.last, str(error))
    finally:
        with _signals_deferred():
            loop.workspace.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            loop.workspace.close()
    result = Result(
        decision, tuple(loop.observed), loop.workspace.started, loop.rounds, len(earlier)
    )
    if aborted is not None:
        aborted.result = result
        raise aborted
    return result


@dataclass
class _Loop:
    """The state of one search while it runs.

    ``rounds`` is the length of the longest chain of runs each started after the previous one's
    result: a run started when the latest result came from round r is in round r + 1.
    """

    search: Search
    workspace: Workspace
    jobs: int
    observed: list[tuple[str, Outcome]]
    record: Callable[[str, Outcome], None] | None
    progress: Callable[[Progress], None] | None
    rounds: int = 0
    done: int = 0
    running: dict[Future[Execution], tuple[str, int]] = field(default_factory=dict)
    last: Decision | None = None

    def run(self, pool: ThreadPoolExecutor) -> Decision:
        while True:
            decision = self.last = self.search.decide(
                _observations(self.observed),
                k=max(1, self.jobs - len(self.running)),
                pending=[{TREE: commit} for commit, _ in self.running.values()],
            )
            # An undecided engine may only be waiting for the pending runs: wait for them.
            if decision.kind == "culprit" or (decision.kind != "test" and not self.running):
                return decision
            for point in decision.tests[: self.jobs - len(self.running)]:
                commit = point[TREE]
                future = pool.submit(self.workspace.execute, commit)
                self.running[future] = (commit, self.rounds + 1)
            if not self.running:
                return _undecided(decision, "the engine proposed nothing new to test")
            self._report(decision, None)
            finished, _ = wait(self.running, return_when=FIRST_COMPLETED)
            for future in finished:
                self._observe(future, decision)

    def _observe(self, future: Future[Execution], decision: Decision) -> None:
        commit, run_round = self.running.pop(future)
        execution = future.result()
        outcome = outcome_of_status(execution.status)
        if outcome is None:
            raise SearchAborted(commit, execution.status, execution.output_tail)
        self.done += 1
        self.rounds = max(self.rounds, run_round)
        self.observed.append((commit, outcome))
        if self.record is not None:
            self.record(commit, outcome)
        self._report(decision, (commit, outcome, execution.status))

    def _report(self, decision: Decision, last: tuple[str, Outcome, int] | None) -> None:
        if self.progress is not None:
            commits = tuple(commit for commit, _ in self.running.values())
            current = self.rounds + (1 if commits else 0)
            self.progress(Progress(current, self.done, commits, decision, last))


def _observations(observed: Sequence[tuple[str, Outcome]]) -> list[Observation]:
    return [Observation(point={TREE: commit}, outcome=outcome) for commit, outcome in observed]


def _undecided(decision: Decision, reason: str) -> Decision:
    return Decision(
        kind="undecided",
        tests=(),
        culprit=None,
        confidence=decision.confidence,
        candidates=decision.candidates,
        reason=reason,
    )


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
