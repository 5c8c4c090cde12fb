"""The local executor: exit statuses to outcomes, logs, timeouts, lab failures."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from labgate.executor import LocalExecutor, StepRun, cgroup_base
from labgate.model import Outcome, step_outcome
from procs import gone_within, running


def run(tmp_path: Path, command: str, timeout: float | None = 10) -> tuple[StepRun, str]:
    log = tmp_path / "logs" / "step.log"
    env = {**os.environ, "LABGATE_BROKEN_FILE": str(tmp_path / "broken")}
    result = asyncio.run(
        LocalExecutor().run_step(command, cwd=tmp_path, env=env, log=log, timeout=timeout)
    )
    return result, log.read_text()


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(0, Outcome.PASS), (1, Outcome.FAIL), (125, Outcome.SKIP), (127, Outcome.FAIL)],
)
def test_exit_status_gives_the_outcome_as_git_bisect_run(
    tmp_path: Path, status: int, outcome: Outcome
) -> None:
    result, _ = run(tmp_path, f"exit {status}")
    assert result.outcome is outcome
    assert result.exit_status == status
    assert step_outcome(status) is outcome


def test_output_and_errors_go_to_the_log(tmp_path: Path) -> None:
    result, log = run(tmp_path, "echo out; echo err >&2; pwd")
    assert result.outcome is Outcome.PASS
    assert log.splitlines() == ["out", "err", str(tmp_path)]


def test_a_step_reports_a_lab_failure_through_the_broken_file(tmp_path: Path) -> None:
    result, _ = run(tmp_path, 'echo "PDU did not answer" > "$LABGATE_BROKEN_FILE"; exit 1')
    assert result.outcome is Outcome.BROKEN
    assert result.reason == "PDU did not answer"


def test_timeout_fails_the_step_and_kills_its_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    result, log = run(tmp_path, f"sleep 300 & echo $! > {pidfile}; wait", timeout=0.5)
    assert result.outcome is Outcome.FAIL
    assert result.reason == "timed out after 0.5s"
    assert "timed out" in log
    assert gone_within(int(pidfile.read_text()))


def test_background_children_do_not_outlive_their_step(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    result, _ = run(tmp_path, f"sleep 300 & echo $! > {pidfile}; exit 0")
    assert result.outcome is Outcome.PASS
    assert gone_within(int(pidfile.read_text()))


def test_children_in_a_session_of_their_own_do_not_outlive_their_step(tmp_path: Path) -> None:
    one, two = tmp_path / "one.pid", tmp_path / "two.pid"
    # a daemon of its own session, and one that forks again from there
    daemons = f"setsid sleep 300 & echo $! > {one}; setsid sh -c 'sleep 300 & echo $! > {two}' &"
    result, _ = run(tmp_path, f"{daemons} wait $!; exit 0")  # the second wrote its pid
    assert result.outcome is Outcome.PASS
    assert gone_within(int(one.read_text())) and gone_within(int(two.read_text()))


@pytest.mark.skipif(cgroup_base() is None, reason="no cgroup v2 this process may use")
def test_in_its_cgroup_a_child_that_clears_its_environment_does_not_outlive_its_step(
    tmp_path: Path,
) -> None:
    # no environment to be found by: only the step's cgroup knows it
    base = cgroup_base()
    assert base is not None

    def cgroups() -> set[str]:  # other controllers' steps may have theirs there too
        return {p.name for p in base.iterdir() if p.is_dir()}

    before = cgroups()
    pidfile = tmp_path / "child.pid"
    result, _ = run(tmp_path, f"setsid env -i sleep 300 & echo $! > {pidfile}; exit 0")
    assert result.outcome is Outcome.PASS
    assert gone_within(int(pidfile.read_text()))
    # the step's own cgroup is gone with it, or kept empty for the next step
    for name in cgroups() - before:
        assert name.startswith(f"{os.getpid()}-")
        assert (base / name / "cgroup.procs").read_text() == ""


@pytest.mark.skipif(cgroup_base() is None, reason="no cgroup v2 this process may use")
def test_a_cgroup_a_step_left_empty_is_the_next_steps_and_one_left_busy_is_not(
    tmp_path: Path,
) -> None:
    def cgroup_of_step(command: str) -> str:
        result, log = run(tmp_path, f"cat /proc/self/cgroup; {command}")
        assert result.outcome is Outcome.PASS
        return log.splitlines()[-1].rpartition("/")[2]

    first = cgroup_of_step("true")
    assert first.startswith(f"{os.getpid()}-")  # this controller's own
    assert cgroup_of_step("true") == first  # kept empty, reused
    pidfile = tmp_path / "left.pid"
    # the child writes its pid once in its own session: out of the step's group when it ends
    left = (
        f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 300' & while [ ! -s {pidfile} ]; do :; done"
    )
    busy = cgroup_of_step(left)
    assert busy == first and gone_within(int(pidfile.read_text()))
    assert cgroup_of_step("true") != first  # the killed one's cgroup was removed, not kept
    base = cgroup_base()
    assert base is not None and not (base / first).exists()


def test_a_timed_out_steps_session_children_are_ended(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    result, _ = run(tmp_path, f"setsid sleep 300 & echo $! > {pidfile}; sleep 300", timeout=0.5)
    assert result.reason == "timed out after 0.5s"
    assert gone_within(int(pidfile.read_text()))


def test_another_steps_processes_are_left_alone(tmp_path: Path) -> None:
    other = {**os.environ, "LABGATE_BROKEN_FILE": str(tmp_path / "other" / "broken")}
    with subprocess.Popen(["sleep", "300"], env=other, start_new_session=True) as bystander:
        try:
            result, _ = run(tmp_path, "setsid sleep 300 & exit 0")
            assert result.outcome is Outcome.PASS
            assert bystander.poll() is None and running(bystander.pid)
        finally:
            bystander.kill()


def test_killed_by_a_signal_is_a_fail_with_the_reason(tmp_path: Path) -> None:
    result, _ = run(tmp_path, "kill -SEGV $$")
    assert result.outcome is Outcome.FAIL
    assert result.reason == "killed by signal 11"


def test_cancel_kills_the_running_step(tmp_path: Path) -> None:
    pidfile = tmp_path / "step.pid"
    started = tmp_path / "started"
    env = {**os.environ, "LABGATE_BROKEN_FILE": str(tmp_path / "broken")}

    async def scenario() -> None:
        task = asyncio.create_task(
            LocalExecutor().run_step(
                f"echo $$ > {pidfile}; mkfifo {started}; echo > {started}; sleep 300",
                cwd=tmp_path,
                env=env,
                log=tmp_path / "log",
                timeout=None,
            )
        )
        # opening the FIFO blocks until the step has written its pid and opened it too
        await asyncio.to_thread(_wait_fifo, started)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert gone_within(int(pidfile.read_text()))


def _wait_fifo(path: Path) -> None:
    for _ in range(10_000):
        if path.exists():
            break
        os.sched_yield()
    with open(path) as fifo:
        fifo.read()
