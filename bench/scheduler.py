"""Benchmark: host allocation by a pool of controllers on PostgreSQL.

    python bench/scheduler.py                     # on a throwaway PostgreSQL cluster
    python bench/scheduler.py --database URL       # an admin URL; a fresh database is made in it
    python bench/scheduler.py --hosts 200 --jobs 4000 --seconds 5      # quicker

For each controller count (1 and 4): a fresh database with ``--hosts`` hosts (a lab like the Xen
lab scaled up: mostly amd64, some arm64/armhf/i386, cpu vendors, equivalence classes, 1-4 slots)
and ``--jobs`` queued jobs of flights handed to the pool (branches, blessings real/review/adhoc/
bisect, 1-3 required flags, a tenth exclusive). Each controller is a process with its own
:class:`labgate.store.slots.Allocator`; it claims (the timed *decision*: one transaction),
then "runs" every claimed job at once (marks it passed, gives its slots back) and claims again,
until no job is queued or ``--seconds`` are up.

Printed per controller count: decisions, allocation decision time p50/p95/max, allocations per
second (all controllers together), and the check that no slot was ever allocated twice: after
each claim the controller reads back that every slot it was given is held by it for that job
(any double grant would show there), and every job is allocated exactly once overall.
Targets: p95 < 50 ms; 4 controllers at least as many allocations per second as one.
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
import multiprocessing as mp
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path

import sqlalchemy as sa

from labgate.model import HostSpec
from labgate.store import Store, now
from labgate.store import schema as t
from labgate.store.slots import Allocator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg import scratch_database, start_cluster

ARCHES = [("amd64", 0.7), ("arm64", 0.15), ("armhf", 0.05), ("i386", 0.1)]
BRANCHES = [f"branch-{i}" for i in range(8)]
BLESSINGS = [("real", 0.3), ("review", 0.3), ("adhoc", 0.2), ("bisect", 0.2)]
JOBS_PER_FLIGHT = 50
# How long the controllers may take to start (connect, build their Allocator) before giving up.
START_TIMEOUT_S = 120


def pick(rng: random.Random, weighted: list[tuple[str, float]]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def make_hosts(n: int, rng: random.Random) -> list[HostSpec]:
    hosts = []
    for i in range(n):
        arch = pick(rng, ARCHES)
        flags = {f"arch-{arch}", rng.choice(["cpu-intel", "cpu-amd"]), f"equiv-{arch}-{i % 7}"}
        hosts.append(HostSpec(f"host{i:04}", frozenset(flags), slots=rng.choice([1, 2, 2, 4])))
    return hosts


def fill(url: str, hosts: list[HostSpec], jobs: int, rng: random.Random) -> None:
    """The hosts' slot rows and ``jobs`` queued jobs in flights handed to the pool."""
    with Store.open(url) as store, store.engine.begin() as conn:
        stamp = now()
        conn.execute(
            sa.insert(t.host),
            [
                {
                    "name": h.name,
                    "flags": json.dumps(sorted(h.flags)),
                    "slots": h.slots,
                    "executor": "local",
                }
                for h in hosts
            ],
        )
        conn.execute(
            sa.insert(t.slot_lease),
            [{"host": h.name, "slot": s} for h in hosts for s in range(h.slots)],
        )
        flights = (jobs + JOBS_PER_FLIGHT - 1) // JOBS_PER_FLIGHT
        conn.execute(
            sa.insert(t.flight),
            [
                {
                    "id": f + 1,
                    "branch": rng.choice(BRANCHES),
                    "blessing": pick(rng, BLESSINGS),
                    "state": "queued",
                    "created": stamp,
                }
                for f in range(flights)
            ],
        )
        conn.execute(
            sa.insert(t.pool_flight),
            [{"flight_id": f + 1, "submitted": stamp} for f in range(flights)],
        )
        rows = []
        for j in range(jobs):
            arch = pick(rng, ARCHES)
            requires = [f"arch-{arch}"]
            if rng.random() < 0.4:
                requires.append(rng.choice(["cpu-intel", "cpu-amd"]))
            if rng.random() < 0.1:
                requires.append(f"equiv-{arch}-{rng.randrange(7)}")
            rows.append(
                {
                    "flight_id": j // JOBS_PER_FLIGHT + 1,
                    "seq": j % JOBS_PER_FLIGHT,
                    "name": f"job-{j % JOBS_PER_FLIGHT}",
                    "outcome": "queued",
                    "requires": json.dumps(requires),
                    "depends": "[]",
                    "exclusive": rng.random() < 0.1,
                    "attempt": 0,
                }
            )
        conn.execute(sa.insert(t.job), rows)
    if url.startswith("postgresql"):
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
        engine.dispose()


@dataclass
class Result:
    owner: str
    decisions: list[float]
    claimed: list[int]
    problems: list[str]


def controller(
    url: str,
    hosts: list[HostSpec],
    owner: str,
    seconds: float,
    start_line: Barrier,
    batch: int,
    out: mp.Queue,  # type: ignore[type-arg]
) -> None:
    engine = sa.create_engine(url, pool_size=2)
    allocator = Allocator(engine, hosts, owner, lease_s=300, batch=batch)
    decisions: list[float] = []
    claimed: list[int] = []
    problems: list[str] = []
    start_line.wait(START_TIMEOUT_S)  # every controller is ready: all claim from now on
    deadline = time.monotonic() + seconds
    idle = 0
    while time.monotonic() < deadline:
        began = time.perf_counter()
        claims = allocator.claim()
        decisions.append(time.perf_counter() - began)
        if not claims:
            idle += 1
            with engine.connect() as conn:
                left = conn.execute(
                    sa.select(sa.func.count()).select_from(t.job).where(t.job.c.outcome == "queued")
                ).scalar()
            if not left or idle > 200:
                break
            continue
        idle = 0
        ids = [c.job_id for c in claims]
        with engine.begin() as conn:
            held = Counter(
                conn.execute(
                    sa.select(t.slot_lease.c.job_id).where(
                        t.slot_lease.c.job_id.in_(ids), t.slot_lease.c.owner == owner
                    )
                ).scalars()
            )
            for c in claims:
                if held[c.job_id] != c.slots:
                    problems.append(f"job {c.job_id}: holds {held[c.job_id]} of {c.slots} slots")
            # the jobs "run" at once: passed, slots given back
            conn.execute(sa.update(t.job).where(t.job.c.id.in_(ids)).values(outcome="pass"))
            # as a controller does: a flight whose jobs all ended is finished
            live = (
                sa.select(t.job.c.id)
                .where(t.job.c.flight_id == t.flight.c.id, t.job.c.outcome != "pass")
                .exists()
            )
            flights = {c.flight_id for c in claims}
            conn.execute(
                sa.update(t.flight)
                .where(t.flight.c.id.in_(flights), ~live)
                .values(state="finished", outcome="pass")
            )
            conn.execute(
                sa.update(t.slot_lease)
                .where(t.slot_lease.c.job_id.in_(ids), t.slot_lease.c.owner == owner)
                .values(job_id=None, owner=None, lease_until=None)
            )
        claimed += ids
    engine.dispose()
    out.put(Result(owner, decisions, claimed, problems))


def run(
    url: str, hosts: list[HostSpec], controllers: int, seconds: float, batch: int
) -> dict[str, object]:
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    start_line = mp.Barrier(controllers + 1)  # the controllers and this process
    procs = [
        mp.Process(target=controller, args=(url, hosts, f"c{i}", seconds, start_line, batch, out))
        for i in range(controllers)
    ]
    for p in procs:
        p.start()
    start_line.wait(START_TIMEOUT_S)
    start = time.monotonic()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(0.001, time.monotonic() - start)
    decisions = sorted(d for r in results for d in r.decisions)
    claimed = [j for r in results for j in r.claimed]
    twice = [j for j, n in Counter(claimed).items() if n > 1]
    problems = [p for r in results for p in r.problems]
    return {
        "controllers": controllers,
        "decisions": len(decisions),
        "p50_ms": 1000 * statistics.median(decisions),
        "p95_ms": 1000 * decisions[int(0.95 * (len(decisions) - 1))],
        "max_ms": 1000 * decisions[-1],
        "allocations": len(claimed),
        "allocations_per_s": len(claimed) / wall,
        "wall_s": wall,
        "double": len(twice) + len(problems),
        "problems": (problems + [f"job {j} allocated twice" for j in twice])[:5],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", help="admin URL of a PostgreSQL server")
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=20.0, help="per controller count")
    parser.add_argument("--controllers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32, help="jobs a controller claims at most")
    args = parser.parse_args()

    cluster = None
    admin_url = args.database
    if admin_url is None:
        cluster = start_cluster()
        admin_url = cluster.url
    try:
        print(f"{args.hosts} hosts, {args.jobs} queued jobs, PostgreSQL {admin_url.split('@')[-1]}")
        header = (
            f"{'ctl':>3} {'decisions':>9} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} "
            f"{'allocs':>7} {'allocs/s':>9} {'double':>6}"
        )
        print(header)
        rows = []
        for n in args.controllers:
            with scratch_database(admin_url, "labgate_bench") as url:
                rng = random.Random(args.seed)
                hosts = make_hosts(args.hosts, rng)
                fill(url, hosts, args.jobs, rng)
                row = run(url, hosts, n, args.seconds, args.batch)
            rows.append(row)
            print(
                f"{n:>3} {row['decisions']:>9} {row['p50_ms']:>7.1f} {row['p95_ms']:>7.1f} "
                f"{row['max_ms']:>7.1f} {row['allocations']:>7} "
                f"{row['allocations_per_s']:>9.0f} {row['double']:>6}"
            )
            for problem in row["problems"]:  # type: ignore[attr-defined]
                print(f"    {problem}")
        ok = all(r["double"] == 0 for r in rows) and all(r["p95_ms"] < 50 for r in rows)  # type: ignore[operator]
        by_n = {r["controllers"]: r["allocations_per_s"] for r in rows}
        if 1 in by_n and 4 in by_n:
            ok = ok and by_n[4] >= by_n[1]  # type: ignore[operator]
        print(
            "targets (p95 < 50 ms, 4 >= 1 allocations/s, no slot twice):",
            "met" if ok else "NOT met",
        )
        return 0 if ok else 1
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
