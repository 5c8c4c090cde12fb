"""Benchmark: the dashboard's pages on a big store, SQLite and PostgreSQL.

    python bench/web.py                      # 10,000 flights x 50 jobs x 5 steps, both stores
    python bench/web.py --flights 1000       # a smaller run
    python bench/web.py --stores sqlite --requests 300

For each store: a lab whose store is filled with bulk inserts (executemany on SQLite, COPY on
PostgreSQL; ids given explicitly), then ``labgate serve`` in its own process, and requests from
this process over loopback (one keep-alive connection, one request at a time, after a warm-up).
Printed per page: p50 and p95 of the wall time of a request, in milliseconds.

Pages: the flight list (first page; a filtered, deep page; the API's first page: each real
flight has a verdict, a passed one its push, each bisect flight its bisection), a flight page (a
random flight of 50 jobs x 5 steps), and a job's history (a random job of a random branch: 100
flights with steps and learned flake rates). PostgreSQL comes from $LABGATE_TEST_POSTGRES (an
admin URL; a database is created and dropped), else a throwaway cluster is started (tests/pg.py).

    python bench/web.py --stores ""          # the slow readers' case only

Slow readers (first; ``--slow-readers 0`` skips it): ten clients download one step's 200 MB
``log.txt`` at once, each reading 64 KiB at a time with a pause between reads, so every response
stays open a while; printed: the server's RSS before the downloads and its peak RSS (VmHWM),
target under 200 MB.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/bisect.py, next to this file, is named like the standard library's bisect module, which
# random and statistics import: take the script's own directory off the path before they load.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from labgate.model import Blessing, FlightState, JobSpec, Outcome, StepSpec
from labgate.store import Store
from labgate.store import schema as t

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from labs import labgate
from pg import scratch_database

BRANCHES = ("xen-unstable", "linux-linus", "qemu-upstream")
HOSTS = tuple(f"host{i:02d}" for i in range(24))
STEP_NAMES = ("host-install", "build", "guest-start", "tests", "guest-stop")
CHUNK_FLIGHTS = 250


def job_names(count: int) -> list[str]:
    archs = ("amd64", "arm64", "i386", "armhf")
    names = [f"build-{a}" for a in archs]
    i = 0
    while len(names) < count:
        names.append(f"test-{archs[i % 4]}-xl-{i:02d}")
        i += 1
    return names[:count]


def rows(flights: int, jobs: int, steps: int, seed: int = 1) -> Iterator[dict[str, list[tuple]]]:
    """The table rows, CHUNK_FLIGHTS flights at a time (tuples in each table's column order)."""
    rng = random.Random(seed)
    names = job_names(jobs)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    job_id = step_id = 0
    kinds = ("flight", "rev", "job", "runvar", "step", "verdict", "push", "bisection")
    chunk: dict[str, list[tuple]] = {k: [] for k in kinds}
    for fid in range(1, flights + 1):
        branch = BRANCHES[fid % len(BRANCHES)]
        blessing = "real" if fid % 5 else "bisect"
        t0 = start + timedelta(minutes=30 * fid)
        bad_job = rng.randrange(jobs) if rng.random() < 0.3 else None
        outcomes = []
        for seq, name in enumerate(names):
            job_id += 1
            j_out = "pass"
            if seq == bad_job:
                j_out = rng.choice(("fail", "fail", "broken"))
            elif rng.random() < 0.01:
                j_out = "fail"
            outcomes.append(j_out)
            j0 = t0 + timedelta(seconds=seq * 5)
            chunk["job"].append(
                (job_id, fid, seq, name, j_out, HOSTS[(fid + seq) % len(HOSTS)], "[]", "[]",
                 False, 1, None if j_out == "pass" else "step failed", j0,
                 j0 + timedelta(seconds=600))
            )  # fmt: skip
            chunk["runvar"].append((job_id, "kconfig", "defconfig"))
            failed_at = rng.randrange(steps) if j_out != "pass" else steps
            for s in range(steps):
                step_id += 1
                s_out = "pass" if s < failed_at else j_out if s == failed_at else "blocked"
                duration = abs(rng.gauss(60 + 40 * s, 10))
                chunk["step"].append(
                    (step_id, job_id, s, STEP_NAMES[s % len(STEP_NAMES)], "true", None, None,
                     s_out, 0 if s_out == "pass" else 1, round(duration, 3),
                     f"{fid}/{name}/{STEP_NAMES[s % len(STEP_NAMES)]}.log", None, j0,
                     j0 + timedelta(seconds=duration))
                )  # fmt: skip
        outcome = "fail" if "fail" in outcomes else "broken" if "broken" in outcomes else "pass"
        chunk["flight"].append(
            (fid, branch, blessing, "finished", outcome, t0, t0, t0 + timedelta(minutes=25))
        )
        chunk["rev"].append((fid, branch.split("-")[0], f"{rng.getrandbits(160):040x}"))
        gate_rows(chunk, fid, branch, blessing, outcome, t0)
        if fid % CHUNK_FLIGHTS == 0 or fid == flights:
            yield chunk
            chunk = {k: [] for k in chunk}


def gate_rows(
    chunk: dict[str, list[tuple]], fid: int, branch: str, blessing: str, outcome: str, t0: datetime
) -> None:
    """What the gate leaves of a flight: a real flight's verdict (a failed one regressed) and,
    when it passed, its push (one in seven refused); a bisect flight's bisection (of the flight
    before it)."""
    end = t0 + timedelta(minutes=25)
    if blessing == "real":
        passed = outcome == "pass"
        chunk["verdict"].append((fid, None, passed, "{}", end, 0 if passed else 1))
        if passed:
            status = "not-fast-forward" if fid % 7 == 0 else "pushed"
            chunk["push"].append((fid, branch, fid, "xen", f"{fid:040x}", None, status, None, end))
    else:
        chunk["bisection"].append(
            (fid, branch, "build-amd64", "build", None, fid - 1, None, "found", "xen",
             f"{fid:040x}", 0.99, 3, 2, None, json.dumps([fid]), "{}",
             t0 - timedelta(minutes=1), end)
        )  # fmt: skip


TABLES = {
    "flight": (t.flight, ["id", "branch", "blessing", "state", "outcome", "created", "started",
                          "finished"]),
    "rev": (t.flight_revision, ["flight_id", "tree", "sha"]),
    "job": (t.job, ["id", "flight_id", "seq", "name", "outcome", "host", "requires", "depends",
                    "exclusive", "attempt", "reason", "started", "finished"]),
    "runvar": (t.runvar, ["job_id", "name", "value"]),
    "step": (t.step, ["id", "job_id", "seq", "name", "command", "timeout", "results", "outcome",
                      "exit_status", "duration_s", "log", "reason", "started", "finished"]),
    "verdict": (t.verdict, ["flight_id", "baseline_flight_id", "push_allowed", "data", "created",
                            "regressions"]),
    "push": (t.push, ["id", "branch", "flight_id", "tree", "sha", "previous_sha", "status",
                      "message", "created"]),
    "bisection": (t.bisection, ["id", "branch", "job", "step", "testcase", "flight_id",
                                "baseline_flight_id", "state", "culprit_tree", "culprit_commit",
                                "confidence", "executions", "rounds", "reason", "flights", "graph",
                                "created", "finished"]),
}  # fmt: skip


def fill(url: str, flights: int, jobs: int, steps: int) -> float:
    """Migrate and fill the store; returns the seconds it took."""
    began = time.perf_counter()
    Store.open(url).close()
    engine = sa.create_engine(url)
    postgres = engine.dialect.name == "postgresql"
    try:
        for chunk in rows(flights, jobs, steps):
            with engine.begin() as conn:
                for key in TABLES:
                    table, columns = TABLES[key]
                    if postgres:
                        _copy(conn, table.name, columns, chunk[key])
                    else:
                        conn.execute(
                            table.insert(),
                            [dict(zip(columns, row, strict=True)) for row in chunk[key]],
                        )
        with engine.begin() as conn:
            if postgres:
                for table in ("flight", "job", "step", "push", "bisection"):
                    conn.execute(
                        sa.text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                            f" (SELECT max(id) FROM {table}))"
                        )
                    )
            conn.execute(sa.text("ANALYZE"))
    finally:
        engine.dispose()
    return time.perf_counter() - began


def _copy(conn: sa.Connection, table: str, columns: Sequence[str], data: list[tuple]) -> None:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in data:
            copy.write_row(row)


@contextmanager
def served(lab_dir: Path) -> Iterator[tuple[str, int]]:
    """``labgate serve`` on a free port in its own process; yields its base URL and pid."""
    proc = subprocess.Popen(
        labgate(lab_dir, "serve", "--listen", "127.0.0.1:0"),
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        proc.kill()
        raise SystemExit(f"labgate serve did not start: {line}{proc.stderr.read()}")
    # the request log goes to stderr: keep draining it
    threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()  # type: ignore[union-attr]
    try:
        yield match.group(0), proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def measure(
    client: httpx.Client, paths: Callable[[], str], n: int, status: int = 200
) -> tuple[float, float]:
    """p50 and p95 in ms of ``n`` requests of ``paths()`` (each must answer ``status``)."""
    for _ in range(5):
        client.get(paths())
    times = []
    for _ in range(n):
        path = paths()
        began = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        if response.status_code != status:
            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:300]}")
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def bench_store(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    seconds = fill(url, args.flights, args.jobs, args.steps)
    print(
        f"{name}: filled {args.flights:,} flights x {args.jobs} jobs x {args.steps} steps "
        f"({args.flights * args.jobs * args.steps:,} steps) in {seconds:.0f} s",
        flush=True,
    )
    rng = random.Random(7)
    names = job_names(args.jobs)
    pages: dict[str, Callable[[], str]] = {
        "flight list": lambda: "/flights",
        "flight list, filtered deep page": lambda: (
            f"/flights?branch={rng.choice(BRANCHES)}&outcome={rng.choice(('pass', 'fail'))}"
            f"&before={rng.randint(1, args.flights)}"
        ),
        "flight page": lambda: f"/flights/{rng.randint(1, args.flights)}",
        "API flight list": lambda: "/api/flights",
        "job history": lambda: f"/history/{rng.choice(BRANCHES)}/{rng.choice(names)}",
    }
    with tempfile.TemporaryDirectory(prefix="labgate-bench-web-") as tmp:
        lab_dir = Path(tmp)
        (lab_dir / "lab.toml").write_text(
            f'[lab]\nname = "bench"\ndatabase = {json.dumps(url)}\n\n'
            '[[tree]]\nname = "xen"\nurl = "/nonexistent/xen.git"\n\n'
            + "".join(f'[[branch]]\nname = "{b}"\ntree = "xen"\n\n' for b in BRANCHES)
            + '[[host]]\nname = "host00"\nflags = []\n\n'
            '[[job]]\nname = "build-amd64"\n[[job.step]]\nname = "build"\nrun = "true"\n'
        )
        results = {}
        with served(lab_dir) as (base, _), httpx.Client(base_url=base, timeout=60) as client:
            for page, paths in pages.items():
                results[page] = measure(client, paths, args.requests)
    return {"fill_s": seconds, "pages": results}


def _memory_mb(pid: int, field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def _slow_reader(url: str, pause_s: float, got: list[int]) -> None:
    with httpx.stream("GET", url, timeout=600) as response:
        response.raise_for_status()
        total = 0
        for chunk in response.iter_bytes(64 * 1024):
            total += len(chunk)
            time.sleep(pause_s)  # a slow client: the point of this case
        got.append(total)


def bench_slow_readers(readers: int, log_mb: int, pause_s: float) -> dict[str, float]:
    """``readers`` clients downloading one ``log_mb`` MB step log at once, slowly."""
    with tempfile.TemporaryDirectory(prefix="labgate-bench-log-") as tmp:
        lab_dir = Path(tmp)
        (lab_dir / "lab.toml").write_text(
            '[lab]\nname = "bench"\n\n[[tree]]\nname = "xen"\nurl = "/nonexistent/xen.git"\n\n'
            '[[branch]]\nname = "main"\ntree = "xen"\n\n[[host]]\nname = "host00"\n\n'
            '[[job]]\nname = "build"\n[[job.step]]\nname = "make"\nrun = "true"\n'
        )
        line = b"make[3]: Entering directory '/home/osstest/build/xen/tools' ... compiling\n"
        log = lab_dir / "logs" / "1" / "build" / "make.log"
        log.parent.mkdir(parents=True)
        with log.open("wb") as out:
            for _ in range(log_mb * 1024 * 1024 // len(line)):
                out.write(line)
        size = log.stat().st_size
        with Store.open(f"sqlite:///{lab_dir}/labgate.db") as store:
            fid = store.create_flight(
                "main",
                Blessing.ADHOC,
                {"xen": "0" * 40},
                [JobSpec("build", (StepSpec("make", "true"),))],
            )
            [job] = store.flight_jobs(fid)
            store.set_flight_state(fid, FlightState.RUNNING)
            store.start_job(job.id, "host00")
            store.start_step(job.step_ids[0], "1/build/make.log")
            store.finish_step(job.step_ids[0], Outcome.PASS, exit_status=0, duration_s=1.0)
            store.finish_job(job.id, Outcome.PASS)
            store.set_flight_state(fid, FlightState.FINISHED, Outcome.PASS)
        with served(lab_dir) as (base, pid):
            httpx.get(f"{base}/flights/{fid}", timeout=60).raise_for_status()  # warm
            before = _memory_mb(pid, "VmRSS")
            url = f"{base}/flights/{fid}/jobs/build/steps/0/log.txt"
            got: list[int] = []
            threads = [
                threading.Thread(target=_slow_reader, args=(url, pause_s, got))
                for _ in range(readers)
            ]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - began
            peak = _memory_mb(pid, "VmHWM")
        if got != [size] * readers:
            raise SystemExit(f"the readers got {got} bytes, not {size} each")
    return {"before_mb": before, "peak_mb": peak, "seconds": seconds, "log_mb": size / 2**20}


@contextmanager
def postgres_url() -> Iterator[str]:
    admin = os.environ.get("LABGATE_TEST_POSTGRES", "").strip()
    cluster = None
    if not admin:
        from pg import start_cluster

        cluster = start_cluster()
        admin = cluster.url
    try:
        with scratch_database(admin, "labgate_bench") as url:
            yield url
    finally:
        if cluster is not None:
            cluster.stop()


def store_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a bench on a filled store: its size, requests per page, which stores."""
    parser.add_argument("--flights", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="per page")
    parser.add_argument("--stores", default="sqlite,postgresql")


def each_store(
    stores: str, bench: Callable[[str, str], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``bench(name, url)`` on a new store of each kind ``stores`` names (comma-separated)."""
    report = {}
    for store in filter(None, stores.split(",")):
        if store == "sqlite":
            with tempfile.TemporaryDirectory(prefix="labgate-bench-db-") as tmp:
                report[store] = bench(store, f"sqlite:///{tmp}/labgate.db")
        elif store == "postgresql":
            with postgres_url() as url:
                report[store] = bench(store, url)
        else:
            raise SystemExit(f"--stores: unknown store {store!r} (sqlite, postgresql)")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    store_arguments(parser)
    parser.add_argument("--slow-readers", type=int, default=10, help="0: skip that case")
    parser.add_argument("--log-mb", type=int, default=200, help="the slow readers' log size")
    parser.add_argument("--pause-ms", type=float, default=2.0, help="a slow reader's pause")
    args = parser.parse_args()
    if args.slow_readers:
        slow = bench_slow_readers(args.slow_readers, args.log_mb, args.pause_ms / 1000)
        mark = "ok" if slow["peak_mb"] < 200 else "OVER"
        print(
            f"{args.slow_readers} slow readers of a {slow['log_mb']:.0f} MiB log.txt at once: "
            f"server RSS {slow['before_mb']:.0f} MB before, peak {slow['peak_mb']:.0f} MB "
            f"(target < 200 MB: {mark}); all read it whole in {slow['seconds']:.1f} s",
            flush=True,
        )
    report = each_store(args.stores, lambda name, url: bench_store(name, url, args))
    if not report:
        return
    print()
    print(f"{'store':<11} {'page':<32} {'p50 ms':>8} {'p95 ms':>8}   target p95 < 100 ms")
    for store, result in report.items():
        for page, (p50, p95) in result["pages"].items():
            mark = "ok" if p95 < 100 else "SLOW"
            print(f"{store:<11} {page:<32} {p50:>8.1f} {p95:>8.1f}   {mark}")


if __name__ == "__main__":
    main()
