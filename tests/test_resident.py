"""The resident controller (labgate.resident), driven as a user drives it: the real `labgate`
script, a real resident process, real flights, signals and a terminal (a pty)."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import labgate as package
from labgate import resident
from labgate.store import Store
from labs import job, labgate, labgate_exe, local_host, step, write_lab
from procs import gone_within, wait_for


@pytest.fixture
def home(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a user whose resident controller lives in tmp_path/run (started by
    the test that needs one; stopped at the end whatever happened)."""
    env = {**os.environ, "LABGATE_RESIDENT_DIR": str(tmp_path / "run")}
    env.pop("LABGATE_RESIDENT", None)  # the default: use one that answers, start none
    yield env
    subprocess.run([labgate_exe(), "resident", "stop"], env=env, check=False)


def cli(env: dict[str, str], *args: str, **options: object) -> subprocess.CompletedProcess[str]:
    if "input" not in options:
        options["stdin"] = subprocess.DEVNULL
    return subprocess.run(
        [labgate_exe(), *args],
        env=env,
        capture_output=True,
        text=True,
        **options,  # type: ignore[call-overload]
    )


def status(env: dict[str, str]) -> dict[str, object]:
    answer = cli(env, "resident", "status", "--json")
    assert answer.returncode == 0, answer.stderr
    document: dict[str, object] = json.loads(answer.stdout)
    return document


def start(env: dict[str, str]) -> int:
    started = cli(env, "resident", "start")
    assert started.returncode == 0, started.stderr
    pid = status(env)["pid"]
    assert isinstance(pid, int)
    return pid


def make_lab(tmp_path: Path, run: str) -> Path:
    return write_lab(
        tmp_path / "lab",
        trees={"xen": {"README": "xen\n"}},
        hosts=local_host("h0"),
        jobs=job("build", step("make", run)),
    ).path


def test_a_command_in_the_resident_is_the_command_itself(
    tmp_path: Path, home: dict[str, str]
) -> None:
    broken = tmp_path / "broken"
    lab = make_lab(tmp_path, f"test ! -e {broken}")
    start(home)
    # the caller's environment and working directory: LABGATE_LAB, relative to the caller's
    ran = cli({**home, "LABGATE_LAB": "lab"}, "flight", "run", "main", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "finished: pass" in ran.stdout
    assert status(home)["commands"] == 1  # `resident ...` runs on its own: not counted
    # the command's own exit status, and its error on the caller's stderr
    broken.touch()
    failed = cli(home, "flight", "run", "main", "--lab", str(lab))
    assert failed.returncode == 1, failed.stderr
    assert "finished: fail" in failed.stdout
    usage = cli(home, "flight", "run", "nosuchbranch", "--lab", str(lab))
    assert usage.returncode == 2
    assert usage.stderr.startswith("labgate: ") and "nosuchbranch" in usage.stderr
    # the caller's standard input
    points = cli(home, "perf", "changepoints", input="[1,1,1,1,1,1,1,1,1,1,5,5,5,5,5,5,5,5,5,5]\n")
    assert (points.returncode, points.stdout) == (0, "[10]\n"), points.stderr
    assert status(home)["commands"] == 4  # each command above ran there
    with Store.open(f"sqlite:///{lab}/labgate.db") as store:
        assert [store.get_flight(i).outcome.value for i in (1, 2)] == ["pass", "fail"]


def test_ctrl_c_reaches_the_command_and_its_flight_is_cancelled(
    tmp_path: Path, home: dict[str, str]
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    lab = make_lab(tmp_path, f"echo $$ > {fifo}; sleep 600")
    start(home)
    client = subprocess.Popen(
        labgate(lab, "flight", "run", "main"),
        env=home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with fifo.open() as reports:
            step_pid = int(reports.read().split()[0])
        client.send_signal(signal.SIGINT)
        _, stderr = client.communicate(timeout=60)
    finally:
        client.kill()
    assert client.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert gone_within(step_pid)
    with Store.open(f"sqlite:///{lab}/labgate.db") as store:
        assert store.get_flight(1).state.value == "cancelled"
    assert status(home)["commands_running"] == 0


def test_a_resident_whose_code_changed_steps_aside(tmp_path: Path, home: dict[str, str]) -> None:
    pid = start(home)
    source = Path(resident.__file__).parent / "__main__.py"
    before = source.stat()
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    try:
        ran = cli(home, "--version")
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert ran.returncode == 0 and package.__version__ in ran.stdout  # run here instead
    assert gone_within(pid, 30)
    assert status(home)["running"] is False


def test_without_a_terminal_no_resident_starts_by_itself(
    tmp_path: Path, home: dict[str, str]
) -> None:
    ran = cli(home, "--version")
    assert ran.returncode == 0
    assert not (tmp_path / "run").exists()  # nothing made on disk either
    forced = cli({**home, "LABGATE_RESIDENT": "1"}, "--version")
    assert forced.returncode == 0
    wait_for("the resident started by LABGATE_RESIDENT=1", lambda: status(home)["running"])


def test_on_a_terminal_the_first_command_starts_it_and_the_next_runs_in_it(
    tmp_path: Path, home: dict[str, str]
) -> None:
    def at_terminal(*args: str) -> tuple[int, str]:
        controller, terminal = pty.openpty()
        process = subprocess.Popen(
            [labgate_exe(), *args],
            env={**home, "TERM": "xterm", "COLUMNS": "120"},
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
        )
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: every end of the terminal closed
                break
            if not chunk:
                break
            output += chunk
        os.close(controller)
        return process.wait(timeout=60), output.decode(errors="replace")

    code, output = at_terminal("--version")
    assert code == 0 and package.__version__ in output
    wait_for("the resident the terminal started", lambda: status(home)["running"])
    before = status(home)["commands"]
    code, output = at_terminal("resident", "status")
    assert code == 0 and "resident controller" in output
    code, output = at_terminal("--help")
    assert code == 0 and "Usage:" in output
    assert status(home)["commands"] == before + 1  # --help; `resident status` ran on its own


def test_a_socket_in_a_directory_others_may_enter_is_not_used(
    tmp_path: Path, home: dict[str, str]
) -> None:
    start(home)
    run_dir = tmp_path / "run"
    run_dir.chmod(0o755)
    try:
        ran = cli(home, "--version")
        assert ran.returncode == 0
        refused = cli(home, "resident", "start")
        assert refused.returncode == 2
        assert "must be a directory" in refused.stderr and "0700" in refused.stderr
    finally:
        run_dir.chmod(0o700)
    assert status(home)["commands"] == 0  # --version ran on its own


def test_services_run_in_their_own_process() -> None:
    services = [["serve"], ["gate", "--lab", "x"], ["host", "worker"], ["resident", "stop"]]
    assert all(resident._is_service(argv) for argv in services)
    commands = [["flight", "run", "main"], ["host", "list"], ["--version"], ["gate-x"]]
    assert not any(resident._is_service(argv) for argv in commands)


def test_the_directory_it_was_started_from_is_not_its_code(
    tmp_path: Path, home: dict[str, str]
) -> None:
    """Started from a directory with a json.py in it, it imports the standard library's; a file
    made there later does not make it stale (it did: sys.path's first entry changed)."""
    where = tmp_path / "start"
    where.mkdir()
    (where / "json.py").write_text("raise SystemExit('the wrong json')\n")
    started = cli(home, "resident", "start", cwd=where)
    assert started.returncode == 0, started.stderr
    (where / "out.txt").write_text("a file made after the start\n")
    ran = cli(home, "--version", cwd=where)
    assert ran.returncode == 0 and package.__version__ in ran.stdout, ran.stderr
    assert status(home)["commands"] == 1
