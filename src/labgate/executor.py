"""Executors run a step's command on a host and say how it ended.

``LocalExecutor`` runs it as a local process in its own process group, its output going to the
step's log. A timeout kills the whole group and makes the step ``fail`` with the reason stated;
cancellation (Ctrl-C) kills the group too, so no step outlives its controller's decision.

How a step reports a failure of the lab itself (not of the code under test): it writes a one-line
reason into the file named by ``$LABGATE_BROKEN_FILE`` and exits non-zero; the step is then
``broken`` with that reason, whatever its exit status, and is never blamed on code.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from labgate import children
from labgate.model import HostSpec, Outcome, step_outcome

# every step is a child process: asyncio learns of its end by pidfd, not by a thread a child
children.install()

KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class StepRun:
    """How one execution of a step ended."""

    outcome: Outcome
    exit_status: int | None
    duration_s: float
    reason: str | None = None


def exited(status: int, duration_s: float) -> StepRun:
    """How a step that exited with ``status`` ended (unless it reported a lab failure)."""
    outcome = step_outcome(status)
    why = None if outcome is not Outcome.FAIL else f"exit status {status}"
    return StepRun(outcome, status, duration_s, why)


def timed_out(log: BinaryIO, timeout: float | None, duration_s: float) -> StepRun:
    """A step killed at its timeout fails; its log ends saying so."""
    log.write(f"\n--- labgate: timed out after {timeout:g}s, killed\n".encode())
    return StepRun(Outcome.FAIL, None, duration_s, f"timed out after {timeout:g}s")


BASE_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
)
"""The controller's variables every local step gets (when set): where programs are, whose home,
which language and time zone, where temporary files go. An SSH host has its own."""


def step_environment(
    base: Mapping[str, str],
    labgate_vars: Mapping[str, str],
    lab_env: Mapping[str, str],
    pass_env: Iterable[str],
    secrets: Collection[str],
) -> dict[str, str]:
    """The whole environment of a step, the one rule for every executor: of ``base`` (the
    controller's environment) only the :data:`BASE_ENV` names and those ``pass_env`` lists
    (``[lab] pass_env``), then ``lab_env`` (``[lab] env``), then labgate's own ``LABGATE_*``
    variables. A name in ``secrets`` (what lab.toml's ``*_env`` keys name) never comes from
    ``base``, whatever lists it: a step runs code from anyone who opens a pull request, and its
    log is shown to anyone who can read the dashboard."""
    wanted = [*BASE_ENV, *pass_env]
    env = {name: base[name] for name in wanted if name in base and name not in secrets}
    env.update(lab_env)
    env.update(labgate_vars)
    return env


def remote_environment(env: Mapping[str, str]) -> dict[str, str]:
    """What of a step's environment goes to a remote host: everything but the controller's
    :data:`BASE_ENV` values (the host has its own ``PATH``, ``HOME``...)."""
    return {name: value for name, value in env.items() if name not in BASE_ENV}


class Executor(Protocol):
    """Runs step commands on one kind of host."""

    async def run_step(
        self,
        command: str,
        *,
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        timeout: float | None,
    ) -> StepRun: ...


def kill_group(pid: int, sig: int) -> None:
    """Signal process group ``pid``, if it still exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited after a grace period."""
    kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
    # whatever the leader did, make sure nothing of the group survives
    kill_group(proc.pid, signal.SIGKILL)
    await proc.wait()


def broken_reason(broken_file: Path) -> str | None:
    """The reason a step gave for a lab failure, if it wrote one."""
    try:
        text = broken_file.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    return (text.splitlines() or ["the step reported a lab failure"])[0]


PGID_FILE = "step.pgid"


def _processes(mark: bytes, pgid: int | None = None) -> list[int]:
    """The running processes (in process group ``pgid``, when given) whose environment holds
    ``mark``: a pid the system reused for something else is never among them."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if pgid is not None and os.getpgid(int(entry.name)) != pgid:
                continue
            if mark in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return found


def _group_members(pgid: int, flight_id: int) -> list[int]:
    """The running processes of process group ``pgid`` started for flight ``flight_id``."""
    return _processes(f"LABGATE_FLIGHT={flight_id}\0".encode(), pgid)


CGROUP_END_S = 5.0  # how long ending a step's cgroup may wait for its processes to be gone


@functools.cache
def cgroup_base() -> Path | None:
    """Where this controller makes its steps' cgroups (a ``labgate`` directory in the cgroup v2
    hierarchy), or None when it cannot: no cgroup v2 mounted, not allowed to make one, or a
    process cannot be moved into one (checked once, with a real process)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3 or fields[2] != "cgroup2":
            continue
        base = Path(fields[1]) / "labgate"
        probe = base / f"probe-{os.getpid()}"
        try:
            base.mkdir(exist_ok=True)
            probe.mkdir()
        except OSError:
            continue
        try:
            moved = subprocess.run(
                ["/bin/sh", "-c", 'echo $$ > "$1"', "/bin/sh", str(probe / "cgroup.procs")],
                capture_output=True,
                check=False,
            )
        finally:
            with contextlib.suppress(OSError):
                probe.rmdir()
        if moved.returncode == 0:
            _remove_stale(base)
            return base
    return None


def _remove_stale(base: Path, older_than_s: float = 60.0) -> None:
    """Remove the empty cgroups a killed controller's steps left (a cgroup that still holds a
    process cannot be removed). Those of a live controller (named after its pid) are its own,
    kept for its next steps; unnamed ones only once old (a step joins its own within moments of
    making it)."""
    now = time.time()
    for path in base.iterdir():
        owner, sep, _ = path.name.partition("-")
        if sep and owner.isdigit() and Path(f"/proc/{owner}").exists():
            continue
        with contextlib.suppress(OSError):
            if path.is_dir() and (sep or now - path.stat().st_mtime > older_than_s):
                path.rmdir()


# Empty step cgroups of this process, kept for its next steps: making and removing a cgroup
# costs the kernel far more than reusing one (a few ms a step on a busy machine).
_FREE_CGROUPS: list[Path] = []
FREE_CGROUPS_MAX = 64


@atexit.register
def _remove_free_cgroups() -> None:
    while _FREE_CGROUPS:
        with contextlib.suppress(OSError):
            _FREE_CGROUPS.pop().rmdir()


@dataclass(frozen=True)
class StepCgroup:
    """A step's own cgroup: every process the step starts stays in it, whatever it does with
    sessions and process groups (``setsid daemon &``), and :meth:`end` kills them all."""

    path: Path

    @classmethod
    def make(cls) -> StepCgroup | None:
        """An empty cgroup of this process for a step (one a step left empty, or a new one);
        None where cgroups cannot be used."""
        base = cgroup_base()
        if base is None:
            return None
        while _FREE_CGROUPS:
            path = _FREE_CGROUPS.pop()
            if path.is_dir():
                return cls(path)
        path = base / f"{os.getpid()}-{uuid.uuid4().hex}"
        try:
            path.mkdir()
        except OSError:
            return None
        return cls(path)

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def ended(self) -> bool:
        """Keep the cgroup for the next step if nothing is left in it (the usual end of a step,
        quick enough for the event loop); False when processes remain (then :meth:`end`, in a
        thread)."""
        try:
            if self.procs.read_text().strip():
                return False
            if len(_FREE_CGROUPS) >= FREE_CGROUPS_MAX:
                self.path.rmdir()
                return True
        except OSError:
            return False
        _FREE_CGROUPS.append(self.path)
        return True

    def end(self) -> list[int]:
        """Kill every process left in the cgroup, wait (briefly) until it is empty, remove it;
        returns the pids that were there."""
        killed: list[int] = []
        deadline = time.monotonic() + CGROUP_END_S
        while time.monotonic() < deadline:
            try:
                pids = [int(p) for p in self.procs.read_text().split()]
            except OSError:
                break
            if not pids:
                break
            killed += [p for p in pids if p not in killed]
            try:
                (self.path / "cgroup.kill").write_text("1")
            except OSError:  # a kernel before 5.14: one by one
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.001)  # the kernel takes the killed processes out asynchronously
        with contextlib.suppress(OSError):
            self.path.rmdir()
        return killed


def end_descendants(env: Mapping[str, str], rounds: int = 10) -> list[int]:
    """Kill what a step left running outside its process group (``setsid daemon &``): every
    process whose environment still holds the step's own ``LABGATE_BROKEN_FILE`` (one per job
    and step). Scanned again after each kill, as a process may have forked meanwhile; returns
    the pids killed. A process that cleared its environment escapes the scan."""
    mark = f"LABGATE_BROKEN_FILE={env['LABGATE_BROKEN_FILE']}\0".encode()
    killed: list[int] = []
    for _ in range(rounds):
        found = [pid for pid in _processes(mark) if pid not in killed]
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed += found
    return killed


def reap_orphans(flight_dir: Path, flight_id: int) -> list[int]:
    """Kill the process groups of steps a killed controller left running in this flight's work
    dirs (each step records its group in ``.labgate/step.pgid``); returns the groups killed."""
    killed = []
    for record in flight_dir.glob(f"*/.labgate/{PGID_FILE}"):
        try:
            pgid = int(record.read_text())
        except (OSError, ValueError):
            continue
        if _group_members(pgid, flight_id):
            kill_group(pgid, signal.SIGKILL)
            killed.append(pgid)
    return killed


class LocalExecutor:
    """Runs steps as local processes (the default ``executor = "local"``)."""

    async def run_step(
        self,
        command: str,
        *,
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        timeout: float | None,
    ) -> StepRun:
        log.parent.mkdir(parents=True, exist_ok=True)
        broken_file = Path(env["LABGATE_BROKEN_FILE"])
        broken_file.unlink(missing_ok=True)
        cgroup = StepCgroup.make()
        started = time.monotonic()
        with open(log, "ab", buffering=0) as out:
            spawn = asyncio.ensure_future(
                asyncio.create_subprocess_exec(
                    # the shell joins the step's cgroup and records its process group before the
                    # command can do anything (where a resumed flight finds a step its killed
                    # controller left running), then runs the command itself (eval: no second
                    # exec, same process)
                    "/bin/sh",
                    "-c",
                    '[ -z "$3" ] || echo $$ > "$3" 2>/dev/null; echo $$ > "$1" 2>/dev/null;'
                    ' LABGATE_STEP_COMMAND=$2; set --; eval "$LABGATE_STEP_COMMAND"',
                    "/bin/sh",
                    str(broken_file.parent / PGID_FILE),
                    command,
                    str(cgroup.procs) if cgroup else "",
                    cwd=cwd,
                    env=dict(env),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
            )
            try:
                # shielded: cancelled while the process starts, asyncio would kill the shell
                # alone and its group would survive; finish starting it, then stop the group
                proc = await asyncio.shield(spawn)
            except OSError as error:
                if cgroup is not None:
                    cgroup.end()
                return StepRun(Outcome.BROKEN, None, 0.0, f"cannot start the step: {error}")
            except asyncio.CancelledError:
                with contextlib.suppress(OSError):
                    await _stop(await spawn)
                if cgroup is not None:
                    cgroup.end()
                raise
            try:
                status = await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                await _stop(proc)
                return timed_out(out, timeout, time.monotonic() - started)
            except asyncio.CancelledError:
                await asyncio.shield(_stop(proc))
                raise
            finally:
                # a step's background children must not outlive it, in its group or not: its
                # cgroup holds them all; without one, look for them by the step's environment
                kill_group(proc.pid, signal.SIGKILL)
                # in a thread: waiting for the kernel to empty a cgroup, or reading every
                # process's environment, would stall every other running step
                if cgroup is None or not cgroup.ended():
                    end = cgroup.end if cgroup else functools.partial(end_descendants, env)
                    await asyncio.shield(asyncio.to_thread(end))
        duration = time.monotonic() - started
        reason = broken_reason(broken_file)
        if reason is not None:
            return StepRun(Outcome.BROKEN, status, duration, reason)
        if status < 0:
            return StepRun(Outcome.FAIL, status, duration, f"killed by signal {-status}")
        return exited(status, duration)


class HostLost(Exception):
    """The host went away under a job (connection lost, keepalive expired, health failed): the
    lab's failure, never the code's. The runner makes the step ``broken`` and queues the job
    again for another matching host. ``quarantine``: the host is also quarantined (its key was
    rejected, its health check failed): a person must look at it."""

    quarantine: bool = False


class JobSession(Protocol):
    """One job's use of one host: the job's work dir there, its steps, its artifacts back.

    The runner prepares the work dir locally first; ``workdir`` and ``artifacts`` are the paths
    the host's steps see (``$LABGATE_ARTIFACTS``). Methods raise :class:`HostLost` when the host
    goes away."""

    @property
    def workdir(self) -> str: ...

    @property
    def artifacts(self) -> str: ...

    async def prepare(self) -> None:
        """Make the locally prepared work dir (trees, dependency artifacts) present on the host."""

    async def run_step(
        self, command: str, *, env: Mapping[str, str], log: Path, timeout: float | None
    ) -> StepRun: ...

    async def fetch_results(self, pattern: str) -> None:
        """Bring back the files of a step's ``results`` glob into the local work dir."""

    async def fetch_artifacts(self) -> None:
        """Bring the job's artifacts back into the local artifacts dir."""

    @property
    def artifacts_are_here(self) -> bool:
        """Whether the artifacts already are in the local artifacts dir (``fetch_artifacts``
        does nothing): a job's last step then ends with the job, in one write."""

    async def close(self) -> None: ...


@dataclass
class LocalSession:
    """A job on a local host: the local work dir is the host's; nothing to copy."""

    executor: Executor
    local_workdir: Path
    local_artifacts: Path

    @property
    def workdir(self) -> str:
        return str(self.local_workdir)

    @property
    def artifacts(self) -> str:
        return str(self.local_artifacts)

    async def prepare(self) -> None:
        pass

    async def run_step(
        self, command: str, *, env: Mapping[str, str], log: Path, timeout: float | None
    ) -> StepRun:
        return await self.executor.run_step(
            command, cwd=self.local_workdir, env=env, log=log, timeout=timeout
        )

    async def fetch_results(self, pattern: str) -> None:
        pass

    async def fetch_artifacts(self) -> None:
        pass

    @property
    def artifacts_are_here(self) -> bool:
        return True

    async def close(self) -> None:
        pass


SessionFactory = Callable[[HostSpec, str, Path, Path, Executor], Awaitable[JobSession]]
"""Opens a job's session on a host: (host, the job's key ``flight/job``, its local work dir, its
local artifacts dir, the local executor) → the session."""

SESSIONS: dict[str, SessionFactory] = {}
"""The session factory of each ``executor`` kind; a driver registers its own (``local`` here,
``ssh`` in :mod:`labgate.hosts.config`)."""


async def _local_session(
    host: HostSpec, key: str, workdir: Path, artifacts: Path, local: Executor
) -> JobSession:
    return LocalSession(local, workdir, artifacts)


SESSIONS["local"] = _local_session
