"""Every driver of work runs its flights through one flights service on one allocator.

- `labgate flight run`, `labgate gate --once` and two `labgate host worker`s work at once on one
  PostgreSQL store and two one-slot hosts: no host ever runs two jobs at once (each step takes
  its host's lock with an atomic `mkdir` and records a double use; the allocation rows of each
  host must not overlap in time either).
- A retest asked on the web runs to its end under `labgate serve` alone.
"""

from __future__ import annotations

import itertools
import json
import queue
import re
import subprocess
import threading
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from labgate.config import load_lab
from labgate.model import FlightResult, FlightState, Outcome
from labgate.store import Store
from labgate.store import schema as t
from labs import job, labgate, local_host, step, toml_str, write_lab
from procs import wait_for
from test_gate import Upstream, one_change

WAIT_S = 120.0


def test_flight_run_gate_and_two_workers_never_share_a_one_slot_host(
    tmp_path: Path, postgres_database: str
) -> None:
    locks, runs, double = tmp_path / "locks", tmp_path / "runs", tmp_path / "double"
    locks.mkdir()
    use_host = (
        f'mkdir {locks}/"$LABGATE_HOST" || {{{{ echo "$LABGATE_HOST $LABGATE_FLIGHT/$LABGATE_JOB" '
        f'>> {double}; exit 1; }}}}; echo "$LABGATE_FLIGHT $LABGATE_JOB $LABGATE_HOST" >> {runs}; '
        f'sleep 0.2; rmdir {locks}/"$LABGATE_HOST"'
    )
    upstream = Upstream(tmp_path)
    _, change = one_change(upstream)
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    (lab_dir / "lab.toml").write_text(
        f'[lab]\nname = "shared"\ndatabase = {toml_str(postgres_database)}\n\n'
        f'[[tree]]\nname = "xen"\nurl = {toml_str(str(upstream.bare))}\n\n'
        '[[branch]]\nname = "xen-unstable"\ntree = "xen"\n\n'
        + local_host("h0")
        + local_host("h1")
        + "".join(job(f"j{i}", step("s", use_host)) for i in range(4))
    )

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            labgate(lab_dir, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    queued = [
        int(subprocess.run(labgate(lab_dir, "host", "queue", "xen-unstable"), check=True,
                           capture_output=True, text=True).stdout)
        for _ in range(2)
    ]  # fmt: skip
    workers = [start("host", "worker", "--poll", "0.1", "--lease", "5") for _ in range(2)]
    try:
        flight_run = start("flight", "run", "xen-unstable", "--json")
        gate = start("gate", "xen-unstable", "--once", "--json")
        run_out, _ = flight_run.communicate(timeout=WAIT_S)
        gate_out, _ = gate.communicate(timeout=WAIT_S)
        assert flight_run.returncode == 0, run_out
        assert gate.returncode == 0, gate_out
        lab = load_lab(lab_dir)
        with Store.open(lab.database_url) as store:
            wait_for(
                "the pool's flights to finish",
                lambda: all(store.get_flight(f).state is FlightState.FINISHED for f in queued),
                WAIT_S,
            )
            flights = store.list_flights("xen-unstable", limit=10)
            with store.engine.connect() as conn:
                allocations = conn.execute(
                    sa.select(t.allocation).order_by(t.allocation.c.host, t.allocation.c.started)
                ).all()
    finally:
        for proc in workers:
            proc.terminate()
            proc.wait(timeout=30)

    assert not double.exists(), f"a host ran two jobs at once:\n{double.read_text()}"
    assert upstream.ref("master") == change  # the gate tested staging and pushed it
    # five flights: two queued, flight run's, the gate's baseline and staging flights
    assert len(flights) == 5
    assert all(f.outcome is Outcome.PASS for f in flights), [f.to_json() for f in flights]
    ran = [line.split() for line in runs.read_text().splitlines()]
    assert len(ran) == 5 * 4  # every job once: no job was run by two controllers
    assert {host for _, _, host in ran} == {"h0", "h1"}
    for before, after in itertools.pairwise(allocations):
        if before.host == after.host:
            released: datetime = before.released
            assert released is not None and released <= after.started, (before, after)


def read_lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def api(base: str, path: str, *, token: str | None = None) -> Any:
    request = urllib.request.Request(f"{base}{path}", method="POST" if token else "GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_a_web_retest_runs_to_its_end_under_serve_alone(tmp_path: Path) -> None:
    token = "retest-token-0123456789"
    marks = tmp_path / "marks"
    lab_dir = write_lab(
        tmp_path / "lab",
        trees={"xen": {"VERSION": "4.19\n"}},
        jobs=job("build", step("make", f'cat xen/VERSION; echo "$LABGATE_FLIGHT" >> {marks}'))
        + f'\n[web]\ntoken = "{token}"\n',
    )
    first = subprocess.run(
        labgate(lab_dir.path, "flight", "run", "main"), capture_output=True, text=True
    )
    assert first.returncode == 0, first.stdout + first.stderr
    serve = subprocess.Popen(
        labgate(lab_dir.path, "serve", "--listen", "127.0.0.1:0"),
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    try:
        assert serve.stderr is not None
        threading.Thread(target=read_lines, args=(serve.stderr, lines), daemon=True).start()
        base = None
        while base is None:
            found = re.search(r"on (http://\S+?)/?$", lines.get(timeout=60).strip())
            base = found.group(1) if found else None
        asked = api(base, "/api/flights/1/jobs/build/retest", token=token)
        retest = asked["flight"]
        assert retest != 1

        def finished() -> bool:
            return bool(api(base, f"/api/flights/{retest}")["state"] == "finished")

        wait_for(f"flight {retest} to finish under serve", finished, WAIT_S)
        shown = api(base, f"/api/flights/{retest}")
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    assert shown["outcome"] == "pass" and [j["name"] for j in shown["jobs"]] == ["build"]
    assert marks.read_text().split() == ["1", str(retest)]
    lab = load_lab(lab_dir.path)
    with Store.open(lab.database_url) as store:
        flight: FlightResult = store.get_flight(retest)
        log = lab.log_dir / (flight.job("build").steps[0].log or "")
        assert log.read_text().startswith("4.19")
