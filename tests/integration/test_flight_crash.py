"""The controller dies or is stopped mid-flight; real `labgate` processes, on both stores.

- kill -9 of the controller, then `labgate flight resume`: finished jobs keep their results and
  are not rerun, interrupted jobs run again (attempt 2), no job or step row is lost or duplicated.
- Ctrl-C (SIGINT): the running steps' process groups are killed, background children included;
  the flight is `cancelled`, the CLI exits 130, and `labgate flight resume` completes it.
- A cancel that lands while a step is still being started (after the fork, before asyncio has
  made its transport) kills the step's whole group too (made deterministic in process).
- A step timeout: the step fails "timed out after ...", its whole process group is gone, also
  when the step ignores SIGTERM (SIGKILL after the grace period).

Synchronisation is on events, never on sleeps: steps write a line into a FIFO the test blocks on
(`select` with a deadline, and on a pidfd of the controller so its early death is seen at once).
Every process a flight starts inherits a unique token in its environment, so a scan of /proc finds
each one, whatever its command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shlex
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from labgate.executor import KILL_GRACE_S, LocalExecutor, StepRun
from labgate.model import FlightResult, FlightState, Outcome
from labgate.store import Store, StoredJob
from labs import LabDir, job, labgate, local_host, step, write_lab
from procs import wait_for

TOKEN_VAR = "LABGATE_TEST_TOKEN"
WAIT_S = 20.0

RECORD_SH = """\
#!/bin/sh
# record.sh RUNS: one line per execution of a step, appended (atomically: one short write)
echo "$LABGATE_JOB $LABGATE_STEP $LABGATE_ATTEMPT" >> "$1"
"""


# --- processes -------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def processes_with(token: str) -> list[int]:
    """Live processes whose environment or command line carries `token`."""
    needle = token.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            carries = needle in (entry / "environ").read_bytes()
            carries = carries or needle in (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if carries and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def step_of(pid: int) -> tuple[str, str]:
    """The (job, step) a step process runs, from the environment labgate gave it."""
    pairs = (v.partition(b"=") for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    env = {k.decode(): v.decode() for k, _, v in pairs}
    return env.get("LABGATE_JOB", "?"), env.get("LABGATE_STEP", "?")


def describe(pids: list[int]) -> str:
    """What the processes are, for a failure message."""
    lines = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:3]
            lines.append(f"{pid} {step_of(pid)} state/ppid/pgid={state}: {cmdline[:200]}")
        except OSError as error:
            lines.append(f"{pid}: {error}")
    return "\n".join(lines)


def kill_groups(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)


@dataclass
class Controller:
    """One `labgate` command in its own session, its output in files, its exit watched by pidfd."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    pidfd: int = field(init=False)

    def __post_init__(self) -> None:
        self.pidfd = os.pidfd_open(self.proc.pid)

    @classmethod
    def start(cls, command: list[str], env: dict[str, str], out_dir: Path) -> Controller:
        out, err = out_dir / "controller.out", out_dir / "controller.err"
        with open(out, "ab") as stdout, open(err, "ab") as stderr:
            proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        return cls(proc, out, err)

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the controller did not exit:\n{self.output()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.pidfd)


class Events:
    """Lines the steps write into a FIFO. The test holds both ends (O_RDWR), so a step's write
    never blocks and a read never sees end-of-file between writers."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.lines: list[str] = []
        self._partial = b""

    def wait_for(
        self, count: int, controller: Controller | None = None, timeout: float = WAIT_S
    ) -> list[str]:
        """Block until `count` lines have come (or the controller exits, or time runs out)."""
        deadline = time.monotonic() + timeout
        watched = [self.fd] if controller is None else [self.fd, controller.pidfd]
        output = "" if controller is None else controller.output()
        while len(self.lines) < count:
            left = deadline - time.monotonic()
            ready, _, _ = select.select(watched, [], [], max(left, 0))
            if self.fd in ready:
                self._partial += os.read(self.fd, 65536)
                *complete, self._partial = self._partial.split(b"\n")
                self.lines += [line.decode() for line in complete]
            elif controller is not None and controller.pidfd in ready:
                raise AssertionError(
                    f"the controller exited ({controller.proc.wait()}) before {count} events "
                    f"(got {self.lines}):\n{controller.output()}"
                )
            elif left <= 0:
                raise AssertionError(
                    f"{count} events expected within {timeout}s, got {self.lines}:\n{output}"
                )
        return self.lines[:count]

    def close(self) -> None:
        os.close(self.fd)


# --- the lab ---------------------------------------------------------------------------------


@dataclass
class Rig:
    """A test's lab: its steps record every execution in `runs` (with `record()`) and report
    events through `events` (with `event()`); write the lab with `write()` once the jobs are
    known, then `start()` controllers."""

    dir: Path
    database: str
    token: str
    events: Events
    lab: LabDir | None = None
    controllers: list[Controller] = field(default_factory=list)

    @property
    def runs(self) -> Path:
        return self.dir / "runs"

    def record(self) -> str:
        """A step command appending "job step attempt" to `runs`."""
        return f"sh t/record.sh {shlex.quote(str(self.runs))}"

    def event(self, text: str) -> str:
        """A shell command writing one event line (expanded by the step's shell)."""
        return f'echo "{text}" > {shlex.quote(str(self.events.path))}'

    def write(self, hosts: str, jobs: str) -> LabDir:
        self.lab = write_lab(
            self.dir / "lab",
            trees={"t": {"record.sh": RECORD_SH}},
            hosts=hosts,
            jobs=jobs,
            database=self.database,
            lab_keys=f'pass_env = ["{TOKEN_VAR}"]',  # steps get a clean environment
        )
        return self.lab

    def start(self, *args: str) -> Controller:
        assert self.lab is not None, "write() the lab first"
        env = {**os.environ, TOKEN_VAR: self.token}
        controller = Controller.start(labgate(self.lab.path, *args), env, self.dir)
        self.controllers.append(controller)
        return controller

    def executions(self) -> list[tuple[str, str, int]]:
        """(job, step, attempt) of every step execution, in the order they ran."""
        lines = self.runs.read_text().splitlines() if self.runs.exists() else []
        return [(j, s, int(a)) for j, s, a in (line.split() for line in lines)]

    def flight(self) -> tuple[FlightResult, list[StoredJob]]:
        """The lab's latest flight, and its jobs as the runner sees them (with attempts)."""
        with Store.open(self.database) as store:
            (latest,) = store.list_flights(limit=1)
            return store.get_flight(latest.id), store.flight_jobs(latest.id)


@contextlib.contextmanager
def open_rig(tmp_path: Path, database: str) -> Iterator[Rig]:
    """A Rig in tmp_path; afterwards every controller it started and every process carrying its
    token are killed, whatever the test did."""
    made = Rig(tmp_path, database, f"labgate-test-{uuid.uuid4().hex}", Events(tmp_path / "events"))
    try:
        yield made
    finally:
        for controller in made.controllers:
            controller.close()
        kill_groups(processes_with(made.token))
        made.events.close()


@pytest.fixture
def rig(tmp_path: Path, database_url: str) -> Iterator[Rig]:
    """A Rig on each store in turn."""
    with open_rig(tmp_path, database_url) as made:
        yield made


@pytest.fixture
def sqlite_rig(tmp_path: Path) -> Iterator[Rig]:
    """A Rig on SQLite alone, for behaviour that does not depend on the store."""
    with open_rig(tmp_path, f"sqlite:///{tmp_path}/labgate.db") as made:
        yield made


def outcomes(flight: FlightResult) -> dict[str, tuple[Outcome, tuple[Outcome, ...]]]:
    return {j.name: (j.outcome, tuple(s.outcome for s in j.steps)) for j in flight.jobs}


def step_ids(jobs: list[StoredJob]) -> dict[str, tuple[int, ...]]:
    return {j.spec.name: j.step_ids for j in jobs}


# --- kill -9 ---------------------------------------------------------------------------------


def test_kill_9_then_resume_keeps_finished_jobs_and_reruns_interrupted(
    rig: Rig,
) -> None:
    # "early" passes first; "held-a"/"held-b" then pass "prep" and block in "hold" (attempt 1
    # only) until killed; "after" waits on held-a, so it is still queued when the controller dies.
    r = rig
    hold = (
        f'{r.record()} && if [ "$LABGATE_ATTEMPT" = 1 ]; then '
        f"{r.event('holding $LABGATE_JOB')}; read _ < {shlex.quote(str(r.dir / 'go'))}; fi"
    )
    os.mkfifo(r.dir / "go")  # never written: a reader blocks in open() until it is killed
    jobs = (
        job("early", step("only", r.record()))
        + job("held-a", step("prep", r.record()), step("hold", hold), depends=["early"])
        + job("held-b", step("prep", r.record()), step("hold", hold), depends=["early"])
        + job("after", step("only", r.record()), depends=["held-a"])
    )
    lab = r.write(local_host("h0", slots=3), jobs)

    controller = r.start("flight", "run", lab.branch)
    assert sorted(r.events.wait_for(2, controller)) == ["holding held-a", "holding held-b"]
    controller.proc.send_signal(signal.SIGKILL)
    assert controller.wait() == -signal.SIGKILL

    killed, planned = r.flight()
    assert killed.state is FlightState.RUNNING  # nobody lived to say otherwise
    assert outcomes(killed) == {
        "early": (Outcome.PASS, (Outcome.PASS,)),
        "held-a": (Outcome.RUNNING, (Outcome.PASS, Outcome.RUNNING)),
        "held-b": (Outcome.RUNNING, (Outcome.PASS, Outcome.RUNNING)),
        "after": (Outcome.QUEUED, (Outcome.QUEUED,)),
    }

    # The steps were in their own process groups: a kill -9 of the controller leaves them
    # running, orphaned: exactly the two "hold" shells, each still leading its own group.
    orphans = processes_with(r.token)
    assert sorted(step_of(pid) for pid in orphans) == [("held-a", "hold"), ("held-b", "hold")]
    assert all(os.getpgid(pid) == pid for pid in orphans)

    # resume kills them first (they would never end: they wait on a FIFO nobody writes), then
    # runs the interrupted jobs again
    resumed = r.start("flight", "resume", str(killed.id))
    assert resumed.wait() == 0, resumed.output()
    wait_for("the orphaned steps to be killed", lambda: not processes_with(r.token), 5)

    final, stored = r.flight()
    assert (final.id, final.state, final.outcome) == (killed.id, FlightState.FINISHED, Outcome.PASS)
    assert all(
        j == Outcome.PASS and set(steps) == {Outcome.PASS} for j, steps in outcomes(final).values()
    )
    # the finished job is untouched: same outcome, steps, log, timestamps
    assert final.job("early") == killed.job("early")
    # one row per planned job and step, the same rows as before the crash
    assert step_ids(stored) == step_ids(planned)
    assert [j.spec.name for j in stored] == ["early", "held-a", "held-b", "after"]
    assert {j.spec.name: j.attempt for j in stored} == {
        "early": 1, "held-a": 2, "held-b": 2, "after": 1,
    }  # fmt: skip
    assert sorted(r.executions()) == sorted(
        [("early", "only", 1), ("after", "only", 1)]
        + [(j, s, a) for j in ("held-a", "held-b") for s in ("prep", "hold") for a in (1, 2)]
    )
    hold_log = final.job("held-a").steps[1].log
    assert hold_log is not None and hold_log.endswith("hold.2.log")
    assert (lab.path / "logs" / hold_log).exists()


# --- Ctrl-C ----------------------------------------------------------------------------------


def test_ctrl_c_kills_running_steps_and_resume_completes(rig: Rig) -> None:
    # "busy-a"/"busy-b" start a background child in "spin" (attempt 1 only) and wait for it;
    # "late" waits on busy-a, so it has not started when Ctrl-C comes.
    r = rig
    spin = (
        f'{r.record()} && if [ "$LABGATE_ATTEMPT" = 1 ]; then '
        f"sleep 1000 & {r.event('spinning $LABGATE_JOB $!')}; wait; fi"
    )
    jobs = (
        job("first", step("only", r.record()))
        + job("busy-a", step("spin", spin), step("tail", r.record()), depends=["first"])
        + job("busy-b", step("spin", spin), step("tail", r.record()), depends=["first"])
        + job("late", step("only", r.record()), depends=["busy-a"])
    )
    lab = r.write(local_host("h0", slots=2), jobs)

    controller = r.start("flight", "run", lab.branch)
    spinning = r.events.wait_for(2, controller)
    children = [int(line.split()[2]) for line in spinning]
    assert all(alive(pid) for pid in children)
    controller.proc.send_signal(signal.SIGINT)  # to the controller alone: it has its own session
    assert controller.wait() == 130, controller.output()
    flight_id = r.flight()[0].id
    assert (
        f"flight {flight_id} cancelled; running steps were killed. "
        f"`labgate flight resume {flight_id}` runs what did not finish."
    ) in " ".join(controller.output().split())

    # killed before the controller exited; the kernel may take a moment to finish them off
    wait_for(
        "no process of the flight to remain",
        lambda: not processes_with(r.token),
        5,
        lambda: f":\n{describe(processes_with(r.token))}\n{controller.output()}",
    )
    cancelled, planned = r.flight()
    assert (cancelled.state, cancelled.outcome) == (FlightState.CANCELLED, Outcome.CANCELLED)
    assert outcomes(cancelled) == {
        "first": (Outcome.PASS, (Outcome.PASS,)),
        "busy-a": (Outcome.CANCELLED, (Outcome.CANCELLED, Outcome.CANCELLED)),
        "busy-b": (Outcome.CANCELLED, (Outcome.CANCELLED, Outcome.CANCELLED)),
        "late": (Outcome.QUEUED, (Outcome.QUEUED,)),
    }
    assert cancelled.job("busy-a").steps[0].reason == "cancelled"

    resumed = r.start("flight", "resume", str(flight_id))
    assert resumed.wait() == 0, resumed.output()
    final, stored = r.flight()
    assert (final.state, final.outcome) == (FlightState.FINISHED, Outcome.PASS)
    assert final.job("first") == cancelled.job("first")
    assert step_ids(stored) == step_ids(planned)
    assert {j.spec.name: j.attempt for j in stored} == {
        "first": 1, "busy-a": 2, "busy-b": 2, "late": 1,
    }  # fmt: skip
    assert sorted(r.executions()) == sorted(
        [("first", "only", 1), ("late", "only", 1)]
        + [(j, "spin", a) for j in ("busy-a", "busy-b") for a in (1, 2)]
        + [("busy-a", "tail", 2), ("busy-b", "tail", 2)]
    )


def test_cancel_while_a_step_starts_kills_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind Ctrl-C at the wrong moment, made deterministic: the step's task is
    cancelled (as Ctrl-C cancels every job) after the fork, once the step has started a
    background child, but before asyncio has finished making the process's transport, i.e. while
    the executor is still inside `create_subprocess_exec`. asyncio alone would then kill the shell
    and leave its child running; the executor must kill the whole group."""
    events = Events(tmp_path / "events")
    token = f"labgate-test-{uuid.uuid4().hex}"
    env = {**os.environ, TOKEN_VAR: token, "LABGATE_BROKEN_FILE": str(tmp_path / "broken")}
    command = f'sleep 1000 & echo "child $!" > {shlex.quote(str(events.path))}; wait'
    step_task: list[asyncio.Task[StepRun]] = []
    transport = asyncio.unix_events._UnixSubprocessTransport  # type: ignore[attr-defined]
    fork = transport._start

    def fork_then_cancel(self: Any, *args: Any, **kwargs: Any) -> None:
        fork(self, *args, **kwargs)  # Popen: the step runs from here on
        events.wait_for(1)  # the loop stands still while the step starts its child
        asyncio.get_running_loop().call_soon(step_task[0].cancel)  # before the transport is made

    monkeypatch.setattr(transport, "_start", fork_then_cancel)

    async def cancel_while_starting() -> None:
        run = LocalExecutor().run_step(
            command, cwd=tmp_path, env=env, log=tmp_path / "step.log", timeout=None
        )
        step_task.append(asyncio.create_task(run))
        with contextlib.suppress(asyncio.CancelledError):
            await step_task[0]

    try:
        asyncio.run(cancel_while_starting())
        assert step_task[0].cancelled()
        wait_for(
            "the step's group to be killed",
            lambda: not processes_with(token),
            5,
            lambda: f":\n{describe(processes_with(token))}",
        )
    finally:
        kill_groups(processes_with(token))
        events.close()


# --- step timeout ----------------------------------------------------------------------------


def test_step_timeout_fails_the_step_and_kills_its_group(rig: Rig) -> None:
    check_timeout(rig, "")


def test_step_timeout_kills_a_group_that_ignores_sigterm(sqlite_rig: Rig) -> None:
    # SIGTERM is ignored by the step and (inherited) by its child: SIGKILL after the grace period.
    # SQLite alone: the grace period is the executor's, not the store's, and it costs 5 s a run.
    check_timeout(sqlite_rig, "trap '' TERM; ")


def check_timeout(r: Rig, trap: str) -> None:
    hang = f"{trap}sleep 1000 & {r.event('child $!')}; wait"
    jobs = job("slow", step("hang", hang, timeout=0.5), step("never", r.record()))
    lab = r.write(local_host("h0"), jobs)

    controller = r.start("flight", "run", lab.branch)
    (child,) = r.events.wait_for(1, controller)
    assert controller.wait() == 1, controller.output()

    assert not processes_with(r.token)
    assert not alive(int(child.split()[1]))
    flight, _ = r.flight()
    assert (flight.state, flight.outcome) == (FlightState.FINISHED, Outcome.FAIL)
    slow = flight.job("slow")
    assert (slow.outcome, slow.reason) == (Outcome.FAIL, "step hang: timed out after 0.5s")
    hung, never = slow.steps
    assert (hung.outcome, hung.reason, hung.exit_status) == (
        Outcome.FAIL, "timed out after 0.5s", None,
    )  # fmt: skip
    assert hung.duration_s is not None and hung.duration_s >= 0.5
    if trap:  # it took the SIGKILL at the end of the grace period to end it
        assert hung.duration_s >= 0.5 + KILL_GRACE_S
    assert never.outcome is Outcome.BLOCKED
    assert r.executions() == []
    assert hung.log is not None
    log = (lab.path / "logs" / hung.log).read_text()
    assert log.endswith("--- labgate: timed out after 0.5s, killed\n")


# --- resume of a flight that is still running -------------------------------------------------


def test_resume_of_a_running_flight_names_its_controller_and_leaves_it_alone(
    sqlite_rig: Rig,
) -> None:
    r = sqlite_rig
    release = r.dir / "release"
    os.mkfifo(release)
    hold = f"{r.record()} && {r.event('holding $PPID')} && cat {shlex.quote(str(release))}"
    lab = r.write(local_host("h0"), job("held", step("hold", hold)))
    controller = r.start("flight", "run", lab.branch)
    r.events.wait_for(1, controller)
    flight_id = r.flight()[0].id

    resumer = r.start("flight", "resume", str(flight_id))
    assert resumer.wait() == 2, resumer.output()
    said = " ".join(resumer.output().split())
    assert f"labgate: flight {flight_id} is being run by {socket.gethostname()}:" in said
    assert processes_with(r.token), "the running step was killed"

    with open(release, "w") as fifo:  # let the step end: the first controller finishes it
        fifo.write("go\n")
    assert controller.wait() == 0, controller.output()
    final, _ = r.flight()
    assert (final.state, final.outcome) == (FlightState.FINISHED, Outcome.PASS)
    assert r.executions() == [("held", "hold", 1)]
