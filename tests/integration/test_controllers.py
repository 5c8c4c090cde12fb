"""Several controllers (real `labgate host worker` processes) share one store and one set of
hosts: no slot is ever given twice; one killed with SIGKILL loses its lease once it expires and
its job runs again on another controller.

Each step takes its host's lock (`mkdir`, atomic) for its whole run and records a double use if
the host is already held; the allocation rows are checked for overlaps per host too. The killed
controller is found through a FIFO its step writes its parent's pid (the controller) into.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import threading
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from labgate.config import load_lab
from labgate.flight import plan_flight
from labgate.model import FlightState, Outcome
from labgate.store import Store
from labgate.store import schema as t
from labgate.store.hosts import HostRegistry
from labs import job, labgate, local_host, step, write_lab
from procs import gone_within, pids_with

WAIT_S = 60.0


def read_line(fifo: Path, timeout: float) -> str:
    """The first line written into the FIFO, or a failure after ``timeout``."""
    got: list[str] = []

    def read() -> None:
        with open(fifo) as f:
            got.append(f.readline().strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not got:
        pytest.fail(f"nothing written into {fifo} in {timeout}s")
    return got[0]


def test_controllers_race_for_hosts_and_a_killed_one_loses_its_lease(
    tmp_path: Path, database_url: str
) -> None:
    token = uuid.uuid4().hex
    locks, runs, double = tmp_path / "locks", tmp_path / "runs", tmp_path / "double"
    locks.mkdir()
    fifo = tmp_path / "victim"
    os.mkfifo(fifo)
    use_host = (
        f'mkdir {locks}/"$LABGATE_HOST" || {{{{ echo "$LABGATE_HOST $LABGATE_JOB" >> {double}; '
        f'exit 1; }}}}; echo "$LABGATE_JOB $LABGATE_HOST $LABGATE_ATTEMPT" >> {runs}; '
        f'sleep 0.05; rmdir {locks}/"$LABGATE_HOST"'
    )
    # the first attempt stops for good (its controller is killed); the rerun takes the host
    victim = (
        f': {token}; if [ "$LABGATE_ATTEMPT" = 1 ]; then echo "$PPID" > {fifo}; sleep 300; '
        f"exit 1; fi; {use_host}"
    )
    jobs = job("victim", step("s", victim)) + "".join(
        job(f"j{i:02}", step("s", use_host)) for i in range(12)
    )
    hosts = "".join(local_host(f"h{i}") for i in range(3))
    lab_dir = write_lab(
        tmp_path / "lab",
        trees={"xen": {"V": "1\n"}},
        jobs=jobs,
        hosts=hosts,
        database=database_url,
    )
    lab = load_lab(lab_dir.path)
    with Store.open(lab.database_url) as store:
        flight_id = plan_flight(lab, store, "main")
        store.submit_flight(flight_id)

    def worker(name: str) -> subprocess.Popen[str]:
        argv = labgate(
            lab.dir,
            "host",
            "worker",
            "--owner",
            name,
            "--lease",
            "2",
            "--poll",
            "0.1",
            "--until-idle",
        )
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    workers = {name: worker(name) for name in ("c0", "c1", "c2")}
    try:
        killed_pid = int(read_line(fifo, WAIT_S))
        [killed] = [n for n, p in workers.items() if p.pid == killed_pid]
        os.kill(killed_pid, signal.SIGKILL)
        for name, proc in workers.items():
            out, _ = proc.communicate(timeout=WAIT_S)
            if name != killed:
                assert proc.returncode == 0, out
    finally:
        for proc in workers.values():
            proc.kill()
            proc.wait()
        for pid in pids_with(token):  # the killed controller's step, and its sleep
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            gone_within(pid)

    assert not double.exists(), double.read_text()
    with Store.open(lab.database_url) as store:
        flight = store.get_flight(flight_id)
        history = [e for h in ("h0", "h1", "h2") for e in HostRegistry(store.engine).history(h)]
        with store.engine.connect() as conn:
            allocations = conn.execute(
                sa.select(t.allocation).order_by(t.allocation.c.host, t.allocation.c.started)
            ).all()
    assert flight.state is FlightState.FINISHED and flight.outcome is Outcome.PASS, flight.to_json()
    lines = runs.read_text().split()
    ran = list(zip(lines[::3], map(int, lines[2::3]), strict=True))
    assert len(ran) == len(set(ran)), "an attempt of a job ran twice"
    assert {name for name, _ in ran} == {j.name for j in flight.jobs}
    # the killed controller's jobs (the victim at least) ran again after its lease expired
    expired = [e for e in history if e.kind == "lease-expired"]
    assert all(f"controller {killed} stopped renewing" in (e.reason or "") for e in expired)
    expired_jobs = {e.job_id for e in expired}
    again = {name for name, attempt in ran if attempt > 1}
    assert "victim" in again
    assert again <= {j.name for j in flight.jobs if j.id in expired_jobs}
    # no two allocations of one host (one slot) overlap in time
    for before, after in itertools.pairwise(allocations):
        if before.host == after.host:
            released: datetime = before.released
            assert released is not None and released <= after.started, (before, after)
