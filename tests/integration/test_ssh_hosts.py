"""Flights on real SSH hosts: OpenSSH servers started by the tests (see sshd.py).

- steps run over SSH, their output in the step logs; the work dir with its trees and dependency
  artifacts is on the host; the job's artifacts come back; only LABGATE_* variables go over;
- an unknown host key is refused: the job is broken, the host quarantined with the reason;
- a timeout kills the step's whole process group on the host, background children included;
- Ctrl-C (cancellation) kills it too;
- a host that vanishes from the network mid-step (its veth link cut, in a network namespace):
  the step is ``broken``, never ``fail``, the job runs again on another host, the lost attempt
  stays in the host's history.

Synchronisation is on FIFOs the steps write to (the hosts share the test's file system), never
on sleeps.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.conftest import SshdFactory, ssh_host_toml
from integration.sshd import Netns, make_netns
from labgate.config import Lab, load_lab
from labgate.flight import plan_flight
from labgate.flights import Flights
from labgate.model import FlightResult, Outcome
from labgate.store import Store
from labgate.store.hosts import HostRegistry
from labs import job, step, write_lab
from procs import gone_within, pids_with

BUILD = 'echo "building on $LABGATE_HOST"; mkdir -p "$LABGATE_ARTIFACTS/dist" && cp xen/VERSION "$LABGATE_ARTIFACTS/dist/xen.img"'  # noqa: E501
WAIT_S = 20.0


def run(lab: Lab, **kwargs: object) -> FlightResult:
    with Store.open(lab.database_url) as store:
        fid = plan_flight(lab, store, "main", **kwargs)  # type: ignore[arg-type]
        return asyncio.run(Flights(lab, store).run(fid))


def make(
    tmp_path: Path, hosts: str, jobs: str, *, database: str | None = None, version: str = "1\n"
) -> Lab:
    lab_dir = write_lab(
        tmp_path / "lab",
        trees={"xen": {"VERSION": version}},
        jobs=jobs,
        hosts=hosts,
        database=database,
    )
    return load_lab(lab_dir.path)


def read_line(fifo: Path) -> str:
    """The first line written into the FIFO (blocks; the caller bounds it)."""
    with open(fifo) as f:
        return f.readline().strip()


def test_flight_on_two_ssh_hosts_with_artifacts_logs_and_env(
    tmp_path: Path, sshd_factory: SshdFactory, ssh_user_key: Path, database_url: str
) -> None:
    a, b = sshd_factory("a"), sshd_factory("b")
    hosts = ssh_host_toml(a, "ssh-a", ssh_user_key, flags=["build"]) + ssh_host_toml(
        b, "ssh-b", ssh_user_key, flags=["test"]
    )
    jobs = job("build", step("build", BUILD)) + job(
        "test",
        step(
            "check",
            "cat artifacts/build/dist/xen.img; test ! -d xen/.git; "
            'env | grep -c "^LABGATE_" > "$LABGATE_ARTIFACTS/n-labgate"; '
            'env | grep -c "^PYTEST_" > "$LABGATE_ARTIFACTS/n-pytest" || true; '
            'echo "ran in $PWD" > "$LABGATE_ARTIFACTS/where"',
        ),
        depends=["build"],
    )
    jobs = jobs.replace('name = "build"\n', 'name = "build"\nrequires = ["build"]\n', 1)
    jobs = jobs.replace('name = "test"\n', 'name = "test"\nrequires = ["test"]\n', 1)
    lab = make(tmp_path, hosts, jobs, database=database_url, version="4.19\n")
    flight = run(lab)
    assert flight.outcome is Outcome.PASS, flight.to_json()
    assert (flight.job("build").host, flight.job("test").host) == ("ssh-a", "ssh-b")
    logs = lab.log_dir
    assert (logs / flight.job("build").steps[0].log).read_text() == "building on ssh-a\n"  # type: ignore[operator]
    assert (logs / flight.job("test").steps[0].log).read_text() == "4.19\n"  # type: ignore[operator]
    art = lab.artifacts_dir / str(flight.id)
    assert (art / "build" / "dist" / "xen.img").read_text() == "4.19\n"
    assert int((art / "test" / "n-labgate").read_text()) >= 8
    assert (art / "test" / "n-pytest").read_text().strip() == "0"  # nothing else goes over
    assert str(b.root / "work") in (art / "test" / "where").read_text()
    # the job's dir on the host is removed at the end
    assert list((b.root / "work").rglob("VERSION")) == []


def test_unknown_host_key_is_refused_and_the_host_quarantined(
    tmp_path: Path, sshd_factory: SshdFactory, ssh_user_key: Path
) -> None:
    server = sshd_factory("a")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    lab = make(
        tmp_path,
        ssh_host_toml(server, "ssh-a", ssh_user_key, known_hosts=empty),
        job("build", step("build", "true")),
    )
    flight = run(lab)
    build = flight.job("build")
    assert build.outcome is Outcome.BROKEN
    assert "quarantined" in (build.reason or "") and "host key not accepted" in (build.reason or "")
    with Store.open(lab.database_url) as store:
        status = HostRegistry(store.engine).statuses(["ssh-a"])["ssh-a"]
    assert status.quarantined is not None and "host key not accepted" in status.quarantined


def test_a_remote_child_in_a_session_of_its_own_does_not_outlive_its_step(
    tmp_path: Path, sshd_factory: SshdFactory, ssh_user_key: Path
) -> None:
    server = sshd_factory("a")
    pidfile = tmp_path / "daemon.pid"  # the "host" is this machine: its pid can be watched
    lab = make(
        tmp_path,
        ssh_host_toml(server, "ssh-a", ssh_user_key),
        job("t", step("daemon", f"setsid sleep 300 >/dev/null 2>&1 & echo $! > {pidfile}")),
    )
    flight = run(lab)
    assert flight.job("t").outcome is Outcome.PASS
    assert gone_within(int(pidfile.read_text())), "the step's own-session child survived it"


def test_timeout_kills_the_remote_process_group(
    tmp_path: Path, sshd_factory: SshdFactory, ssh_user_key: Path
) -> None:
    server = sshd_factory("a")
    token = uuid.uuid4().hex
    lab = make(
        tmp_path,
        ssh_host_toml(server, "ssh-a", ssh_user_key),
        job("t", step("hang", f"sleep 300 & : {token}; sleep 301", timeout=1)),
    )
    flight = run(lab)
    hang = flight.job("t").steps[0]
    assert (hang.outcome, hang.reason) == (Outcome.FAIL, "timed out after 1s")
    assert "timed out after 1s, killed" in (lab.log_dir / hang.log).read_text()  # type: ignore[operator]
    for pid in pids_with(token):
        assert gone_within(pid), f"process {pid} of the step survived its timeout"


def test_cancellation_kills_the_remote_process_group(
    tmp_path: Path, sshd_factory: SshdFactory, ssh_user_key: Path
) -> None:
    server = sshd_factory("a")
    token = uuid.uuid4().hex
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    lab = make(
        tmp_path,
        ssh_host_toml(server, "ssh-a", ssh_user_key),
        job("t", step("hang", f"sleep 300 & : {token}; echo up > {fifo}; sleep 301")),
    )

    async def go(store: Store) -> None:
        fid = plan_flight(lab, store, "main")
        task = asyncio.create_task(Flights(lab, store).run(fid))
        assert await asyncio.wait_for(asyncio.to_thread(read_line, fifo), WAIT_S) == "up"
        assert pids_with(token)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        flight = store.get_flight(fid)
        assert flight.job("t").outcome is Outcome.CANCELLED

    with Store.open(lab.database_url) as store:
        asyncio.run(go(store))
    for pid in pids_with(token):
        assert gone_within(pid), f"process {pid} of the step survived the cancellation"


@pytest.fixture
def netns() -> Iterator[Netns]:
    name = f"lgtest-{uuid.uuid4().hex[:8]}"
    index = 100 + os.getpid() % 100
    try:
        ns = make_netns(name, index)
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        pytest.skip(f"network namespaces not permitted here: {error}")
    try:
        yield ns
    finally:
        ns.delete()


def test_host_vanishing_mid_step_is_broken_and_the_job_runs_on_another_host(
    tmp_path: Path, sshd_factory: SshdFactory, ssh_user_key: Path, netns: Netns
) -> None:
    far = sshd_factory("far", address=netns.inner_addr, netns=netns.name)
    near = sshd_factory("near")
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    keepalive = "keepalive_interval = 0.3\nkeepalive_count = 2\n"
    # ssh-far sorts first, so the first attempt goes there
    hosts = ssh_host_toml(far, "ssh-far", ssh_user_key, extra=keepalive) + ssh_host_toml(
        near, "ssh-near", ssh_user_key, extra=keepalive
    )
    command = (
        'echo "attempt $LABGATE_ATTEMPT on $LABGATE_HOST"; '
        f'if [ "$LABGATE_HOST" = ssh-far ]; then echo up > {fifo}; sleep 120; fi'
    )
    lab = make(tmp_path, hosts, job("t", step("work", command)))

    async def go(store: Store) -> FlightResult:
        fid = plan_flight(lab, store, "main")
        task = asyncio.create_task(Flights(lab, store).run(fid))
        assert await asyncio.wait_for(asyncio.to_thread(read_line, fifo), WAIT_S) == "up"
        # the step's first line has come back over SSH into its log before the host goes away
        log = lab.log_dir / f"{fid}" / "t" / "work.log"
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not (log.exists() and log.read_text().startswith("attempt 1 on ssh-far\n")):
            assert asyncio.get_running_loop().time() < deadline, "the step's output never came"
            await asyncio.sleep(0.02)
        netns.cut()
        return await asyncio.wait_for(task, WAIT_S)

    with Store.open(lab.database_url) as store:
        flight = asyncio.run(go(store))
        history = HostRegistry(store.engine).history("ssh-far")
    t = flight.job("t")
    assert (t.outcome, t.host) == (Outcome.PASS, "ssh-near"), flight.to_json()
    assert (lab.log_dir / t.steps[0].log).read_text() == "attempt 2 on ssh-near\n"  # type: ignore[operator]
    # the lost attempt: broken (never fail), its step and log kept in the host's history
    lost = [e for e in history if e.kind == "job"]
    assert [(e.outcome, e.attempt) for e in lost] == [("broken", 1)]
    assert "connection lost" in (lost[0].reason or "")
    [lost_step] = lost[0].data["steps"]
    assert lost_step["outcome"] == "broken" and "host lost" in lost_step["reason"]
    assert (lab.log_dir / lost_step["log"]).read_text().startswith("attempt 1 on ssh-far\n")
    assert lost[0].data["queued_again"] is True


JUNIT = (
    '<testsuite name="s"><testcase classname="boot" name="ok"/>'
    '<testcase classname="boot" name="bad"><failure message="no console"/></testcase></testsuite>'
)


def test_output_streams_into_the_log_and_results_come_back(
    tmp_path: Path, sshd_factory: SshdFactory, ssh_user_key: Path
) -> None:
    server = sshd_factory("a")
    go = tmp_path / "go"
    os.mkfifo(go)
    command = (
        f"echo first; cat {go}; mkdir -p out && printf '%s' '{JUNIT}' > out/results.xml; "
        "echo second"
    )
    jobs = job("t", step("s", command)) + 'results = "junit:out/*.xml"\n'
    lab = make(tmp_path, ssh_host_toml(server, "ssh-a", ssh_user_key), jobs)

    async def go_on_when_first_is_logged(store: Store) -> FlightResult:
        fid = plan_flight(lab, store, "main")
        task = asyncio.create_task(Flights(lab, store).run(fid))
        log = lab.log_dir / str(fid) / "t" / "s.log"
        deadline = asyncio.get_running_loop().time() + WAIT_S
        # the step is blocked on the FIFO: its first line can only be in the log if it streamed
        while not (log.exists() and log.read_text() == "first\n"):
            assert asyncio.get_running_loop().time() < deadline, "the output did not stream"
            await asyncio.sleep(0.02)
        await asyncio.to_thread(go.write_text, "go\n")
        return await asyncio.wait_for(task, WAIT_S)

    with Store.open(lab.database_url) as store:
        flight = asyncio.run(go_on_when_first_is_logged(store))
    [s] = flight.job("t").steps
    assert (lab.log_dir / s.log).read_text() == "first\ngo\nsecond\n"  # type: ignore[operator]
    assert [(c.name, c.outcome) for c in s.testcases] == [
        ("boot.ok", Outcome.PASS),
        ("boot.bad", Outcome.FAIL),
    ]
