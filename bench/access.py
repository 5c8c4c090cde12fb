"""Benchmark: on-demand flights of community users against a lab busy with its own gate.

    python bench/access.py                          # SQLite stores in a temp dir
    python bench/access.py --users 10 --flights 100 # quicker

A lab of ``--hosts`` one-slot hosts (lab.toml written and loaded as any lab's) and the real code
on a simulated clock: flights are planned with :func:`labgate.flight.plan_flight` and handed to
the pool, ``--users`` users submit ``--flights`` on-demand flights between them (equal demand:
each user the same number, of the same two jobs) through the quota decision of
:mod:`labgate.access.ondemand` (``admit``, in the transaction that stores the flight), whenever
it lets them, in a random order each tick; the gate
plans a ``real`` flight of 12 jobs every 7 ticks and a ``bisect`` flight of 2 jobs every 11
(about a third of the hosts). One :class:`labgate.store.slots.Allocator` claims every tick;
every job takes 4 ticks (the *job length*), then passes and gives its host back; a flight whose
jobs all ended is finished.

The same gate is run alone first (no community work): a lab job's *delay by community work* is
how much later it started than it did alone. Printed: the lab jobs' max delay by community work
(target <= 1 job length: community jobs are never preempted, but never chosen before a lab job),
the quota violations seen after every tick (flights at once per user and per group; target 0),
and the spread of the users' mean waiting times, from when they wanted to submit (a quota
may refuse them for a while) to the start of each job (max / min; target <= 1.5x), with the
wall time the run took.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/bisect.py, next to this file, is named like the standard library's bisect module, which
# random and statistics import: take the script's own directory off the path before they load.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import os
import random
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field

from labgate.access.fetch import Refused
from labgate.access.ondemand import admit
from labgate.config import Lab, load_lab
from labgate.flight import plan_flight
from labgate.model import Blessing, FlightState, Outcome, Owner
from labgate.store import Store
from labgate.store.access import AccessRequests
from labgate.store.users import Users, Viewer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from labs import job, local_host, step, write_lab

JOB_TICKS = 4  # a job's length, in ticks: lab work arrives while community jobs run
GATE_EVERY, GATE_JOBS = 7, 12
BISECT_EVERY, BISECT_JOBS = 11, 2
COMMUNITY_JOBS = ["j00", "j01"]
USER_FLIGHTS_AT_ONCE, GROUP_FLIGHTS_AT_ONCE = 2, 60


def make_lab(root: Path, hosts: int, database: str) -> Lab:
    lab_dir = write_lab(
        root / "lab",
        trees={"xen": {"README": "xen\n"}},
        hosts="".join(local_host(f"host{i:02}") for i in range(hosts)),
        jobs="".join(job(f"j{i:02}", step("s", "true")) for i in range(GATE_JOBS)),
        database=database,
    )
    with lab_dir.toml.open("a") as toml:
        toml.write(
            f"\n[access]\nquota = {{ flights = {USER_FLIGHTS_AT_ONCE} }}\n"
            f"groups = {{ community = {{ flights = {GROUP_FLIGHTS_AT_ONCE} }} }}\n"
        )
    return load_lab(lab_dir.path)


@dataclass
class Run:
    """What one simulated run saw."""

    lab_start: dict[tuple[str, int, int], int] = field(default_factory=dict)
    """(blessing, tick planned, job seq) → the tick a lab job started."""
    waits: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    violations: int = 0
    refused: int = 0
    ticks: int = 0


@dataclass(frozen=True)
class Planned:
    owner: str | None
    blessing: str
    tick: int
    seq: dict[int, int]  # job id → its place in the flight


def plan(lab: Lab, store: Store, tick: int, globs: list[str], blessing: Blessing,
         owner: Viewer | None = None) -> tuple[int, Planned]:  # fmt: skip
    """Plan a flight of the lab's own, or of ``owner`` (Refused when their quota says no)."""
    user = owner.user if owner is not None else None
    decide = admit(lab, owner, user) if owner is not None and user is not None else None
    fid = plan_flight(lab, store, "main", revisions={}, job_globs=globs, blessing=blessing,
                      owner=Owner(user) if user else None, admit=decide)  # fmt: skip
    store.submit_flight(fid)
    seq = {j.id: i for i, j in enumerate(store.flight_jobs(fid))}
    return fid, Planned(user, str(blessing), tick, seq)


def simulate(lab: Lab, users: int, flights: int, gate_ticks: int, seed: int) -> Run:
    """One run of the gate for ``gate_ticks`` ticks and ``flights`` on-demand flights of
    ``users`` users, to the end of the last job."""
    rng = random.Random(seed)
    run = Run()
    with Store.open(lab.database_url) as store:
        store.sync_hosts(lab.hosts)
        allocator = store.slots(lab.hosts, "bench")
        allocator.sync()
        people = Users(store.engine)
        names = [f"user{i:02}" for i in range(users)]
        for name in names:
            people.add(name, groups=["community"])
        viewers = {name: people.viewer(name) for name in names}
        left = {name: flights // users for name in names}
        planned: dict[int, Planned] = {}
        ending: dict[int, list[tuple[int, int]]] = defaultdict(list)  # tick → (flight, job)
        jobs_left: dict[int, int] = {}
        wanted: dict[str, int] = {}  # user → since when a quota refuses their next flight
        tick = 0
        while tick < gate_ticks or any(left.values()) or jobs_left:
            for fid, job_id in ending.pop(tick, []):
                store.finish_job(job_id, Outcome.PASS)
                allocator.release(job_id)
                jobs_left[fid] -= 1
                if not jobs_left[fid]:
                    del jobs_left[fid]
                    store.set_flight_state(fid, FlightState.FINISHED, Outcome.PASS)
            gate = (
                (GATE_EVERY, GATE_JOBS, Blessing.REAL),
                (BISECT_EVERY, BISECT_JOBS, Blessing.BISECT),
            )
            for every, size, blessing in gate if tick < gate_ticks else ():
                if tick % every == 0:
                    fid, planned[fid] = plan(lab, store, tick, [f"j{i:02}" for i in range(size)],
                                             blessing)  # fmt: skip
                    jobs_left[fid] = size
            for name in rng.sample(names, len(names)):
                while left[name]:
                    asked = wanted.get(name, tick)
                    try:
                        fid, planned[fid] = plan(
                            lab, store, asked, COMMUNITY_JOBS, Blessing.ADHOC, viewers[name]
                        )
                    except Refused:
                        run.refused += 1
                        wanted.setdefault(name, tick)
                        break
                    wanted.pop(name, None)
                    jobs_left[fid] = len(COMMUNITY_JOBS)
                    left[name] -= 1
            while claimed := allocator.claim():
                for claim in claimed:
                    ending[tick + JOB_TICKS].append((claim.flight_id, claim.job_id))
                    p = planned[claim.flight_id]
                    if p.owner is None:
                        run.lab_start[(p.blessing, p.tick, p.seq[claim.job_id])] = tick
                    else:
                        run.waits[p.owner].append(tick - p.tick)
            run.violations += violations(store, names)
            tick += 1
        run.ticks = tick
    return run


def violations(store: Store, names: list[str]) -> int:
    """Users over their flights-at-once quota now, plus one if the group is over its own."""
    usage = AccessRequests(store.engine).usage(names)
    over = sum(1 for u in usage.values() if u.flights > USER_FLIGHTS_AT_ONCE)
    return over + (sum(u.flights for u in usage.values()) > GROUP_FLIGHTS_AT_ONCE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--flights", type=int, default=500)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    # the gate goes on for as long as the community's work would take the whole pool
    gate_ticks = args.flights * len(COMMUNITY_JOBS) * JOB_TICKS // args.hosts + 20
    with tempfile.TemporaryDirectory(prefix="bench-access-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        labs = [make_lab(root / name, args.hosts, f"sqlite:///{root}/{name}.db")
                for name in ("alone", "busy")]  # fmt: skip
        alone = simulate(labs[0], args.users, 0, gate_ticks, args.seed)
        busy = simulate(labs[1], args.users, args.flights, gate_ticks, args.seed)
        wall = time.perf_counter() - started
    delays = [(busy.lab_start[k] - alone.lab_start[k]) / JOB_TICKS for k in alone.lab_start]
    means = {u: statistics.mean(w) / JOB_TICKS for u, w in busy.waits.items()}
    spread = max(means.values()) / max(min(means.values()), 1e-9) if means else 1.0
    load = os.getloadavg()
    rows = [
        ("lab jobs compared (gate and bisect)", f"{len(delays)}", ""),
        ("lab jobs' max delay by community work", f"{max(delays, default=0):.2f} job length(s)",
         "<= 1"),
        ("lab jobs delayed at all", f"{sum(d > 0 for d in delays)}", ""),
        ("on-demand flights run", f"{sum(len(w) for w in busy.waits.values()) // 2}", ""),
        ("quota violations (user and group, every tick)", f"{busy.violations}", "0"),
        ("submissions refused by a quota (then retried)", f"{busy.refused}", ""),
        ("users' mean wait, min / max (job lengths)",
         f"{min(means.values()):.2f} / {max(means.values()):.2f}" if means else "-", ""),
        ("spread of mean waits (max / min)", f"{spread:.2f}x", "<= 1.5x"),
        ("ticks simulated (gate alone / with community)", f"{alone.ticks} / {busy.ticks}", ""),
        ("wall time", f"{wall:.1f}s (load average {load[0]:.2f}, shared machine)", ""),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<40} target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<40} {target}")


if __name__ == "__main__":
    main()
