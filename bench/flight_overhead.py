"""The controller's overhead per step: a flight of trivial steps against the same processes bare.

A lab of JOBS jobs x STEPS steps of `true` on one local host of SLOTS slots; each round times
`labgate flight run` as a whole command (wall clock: start-up, mirror fetch, planning, checkouts,
store writes, scheduling, the steps) and then the same JOBS*STEPS `/bin/sh -c true` processes
spawned bare, SLOTS at a time (asyncio, own session each, as the local executor starts and
watches them).
Rounds alternate so that both see the same machine. The overhead per step is
(labgate - bare) / (JOBS*STEPS); the target is at most 5 ms.

    python bench/flight_overhead.py                       # SQLite
    python bench/flight_overhead.py --database URL        # also an existing PostgreSQL database
    LABGATE_TEST_POSTGRES=postgresql+psycopg://postgres@host/postgres python bench/...
                                                          # also a scratch database made there
    python bench/flight_overhead.py --profile             # and where the time goes, in process
    python bench/flight_overhead.py --resident            # each flight run through a resident
                                                          # controller, as typed on a terminal

The lab is made once per store and warmed up by one untimed flight (mirror cloned, schema made),
as a lab's controller finds it in production.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/bisect.py, next to this file, is named like the standard library's bisect module, which
# random and statistics import: take the script's own directory off the path before they load.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from labs import labgate_exe, local_host, resident_controller, write_lab
from pg import scratch_database

TARGET_MS = 5.0


def make_lab(path: Path, database: str, jobs: int, steps: int, slots: int) -> Path:
    """A lab with one small tree and JOBS jobs (a matrix) of STEPS `true` steps."""
    numbers = ", ".join(f'"{n}"' for n in range(jobs))
    step_tables = "".join(f'[[job.step]]\nname = "s{i}"\nrun = "true"\n' for i in range(steps))
    lab = write_lab(
        path,
        trees={"t": {"README": "a small tree\n"}},
        hosts=local_host("h0", slots=slots),
        jobs=f'[[job]]\nname = "job-{{n}}"\nmatrix = {{ n = [{numbers}] }}\n{step_tables}',
        database=database,
    )
    return lab.path


# a process of its own, start-up included; with --resident, this bench's own resident controller
# (labgate.resident: the default on a terminal) forks each command from its imported self
RESIDENT = {"LABGATE_RESIDENT": "0"}


def time_labgate(lab: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [labgate_exe(), "flight", "run", "main", "--lab", str(lab)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **RESIDENT},
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"labgate flight run failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return elapsed


async def _spawn_bare(count: int, parallel: int) -> None:
    limit = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with limit:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                "true",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            if await proc.wait() != 0:
                raise RuntimeError("/bin/sh -c true failed")

    await asyncio.gather(*(one() for _ in range(count)))


def time_bare(count: int, parallel: int) -> float:
    # the children are watched as the local executor watches its steps (by pidfd where the
    # kernel has it, not a thread a child): the bare side pays no cost labgate does not
    from labgate import children

    children.install()
    started = time.perf_counter()
    asyncio.run(_spawn_bare(count, parallel))
    return time.perf_counter() - started


def time_startup() -> float:
    """`labgate --version`: the interpreter and imports alone."""
    started = time.perf_counter()
    subprocess.run([labgate_exe(), "--version"], capture_output=True, check=True)
    return time.perf_counter() - started


@dataclass
class Figures:
    store: str
    steps: int
    labgate: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    startup: list[float] = field(default_factory=list)

    def overhead_ms(self) -> list[float]:
        pairs = zip(self.labgate, self.bare, strict=True)
        return [(lab - bare) / self.steps * 1000 for lab, bare in pairs]


def measure(store: str, lab: Path, args: argparse.Namespace) -> Figures:
    steps = args.jobs * args.steps
    figures = Figures(store, steps)
    time_labgate(lab)  # warm-up: clones the mirror, migrates the schema
    for round_no in range(1, args.rounds + 1):
        figures.labgate.append(time_labgate(lab))
        figures.bare.append(time_bare(steps, args.slots))
        figures.startup.append(time_startup())
        print(
            f"  {store} round {round_no}: labgate {figures.labgate[-1]:.3f} s, "
            f"bare {figures.bare[-1]:.3f} s, overhead {figures.overhead_ms()[-1]:.2f} ms/step",
            flush=True,
        )
    return figures


def measure_slope(store: str, small: Path, big: Path, args: argparse.Namespace) -> list[float]:
    """The cost of one more step, start-up left out: a flight of ``--slope`` jobs and one of
    ``--jobs`` jobs timed in alternation, each against its bare processes; ms per step."""
    extra = (args.jobs - args.slope) * args.steps
    time_labgate(small)
    time_labgate(big)
    slopes = []
    for round_no in range(1, args.rounds + 1):
        t_small = time_labgate(small) - time_bare(args.slope * args.steps, args.slots)
        t_big = time_labgate(big) - time_bare(args.jobs * args.steps, args.slots)
        slopes.append((t_big - t_small) / extra * 1000)
        print(f"  {store} slope round {round_no}: {slopes[-1]:.2f} ms/step", flush=True)
    return slopes


def print_table(all_figures: list[Figures], args: argparse.Namespace) -> None:
    steps = args.jobs * args.steps
    print()
    print(
        f"{args.jobs} jobs x {args.steps} steps of `true` = {steps} steps, one local host of "
        f"{args.slots} slots, {args.rounds} rounds (median, min..max); target <= {TARGET_MS:g} ms"
    )
    header = (
        f"{'store':<11}{'labgate s':>11}{'bare s':>9}{'start-up s':>12}"
        f"{'overhead ms/step':>18}{'range':>16}  verdict"
    )
    print(header)
    print("-" * len(header))
    for f in all_figures:
        over = f.overhead_ms()
        if not over:
            continue
        median = statistics.median(over)
        verdict = "ok" if median <= TARGET_MS else "OVER TARGET"
        print(
            f"{f.store:<11}{statistics.median(f.labgate):>11.3f}{statistics.median(f.bare):>9.3f}"
            f"{statistics.median(f.startup):>12.3f}{median:>18.2f}"
            f"{f'{min(over):.2f}..{max(over):.2f}':>16}  {verdict}"
        )
    print(
        "start-up = `labgate --version` (interpreter and imports), included in labgate s; "
        "per step it is start-up / steps."
    )


# --- where the time goes -----------------------------------------------------------------------


@dataclass
class Timers:
    """Wall time and calls per patched function (threads included: checkouts run in threads)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        timers = self

        if asyncio.iscoroutinefunction(original):

            async def async_timed(*a: Any, **k: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await original(*a, **k)
                finally:
                    timers.seconds[label] += time.perf_counter() - started
                    timers.calls[label] += 1

            setattr(owner, name, async_timed)
            return

        def timed(*a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                timers.seconds[label] += time.perf_counter() - started
                timers.calls[label] += 1

        setattr(owner, name, timed)


@contextmanager
def lab_env(lab: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(lab)
    try:
        yield
    finally:
        os.chdir(old)


def profile(lab_dir: Path, top: int) -> None:
    """Plan and run one flight in this process: wall time per kind of work, then cProfile's
    top functions (main thread: the event loop, and the store calls made on it)."""
    from sqlalchemy import event

    from labgate.config import load_lab
    from labgate.executor import LocalExecutor
    from labgate.flight import plan_flight
    from labgate.flights import Flights
    from labgate.git import Mirrors
    from labgate.store import Store
    from labgate.store.hosts import HostRegistry
    from labgate.store.slots import Allocator

    timers = Timers()
    for name in ("claim", "release", "reap"):
        timers.wrap(Allocator, name, f"allocator.{name}")
    timers.wrap(Flights, "_advance", "flights: move flights along")
    timers.wrap(HostRegistry, "record_job", "host history: record_job")
    for name in (
        "start_step",
        "finish_step",
        "finish_job",
        "set_steps",
        "flight_jobs",
        "get_flight",
        "create_flight",
        "job_states",
        "cancel_requests",
    ):
        timers.wrap(Store, name, f"store.{name}")
    timers.wrap(Mirrors, "checkout", "checkout (copy of the kept one), in threads")
    timers.wrap(Mirrors, "update", "git mirror fetch")
    timers.wrap(LocalExecutor, "run_step", "executor.run_step (the step itself included)")

    with lab_env(lab_dir):
        started = time.perf_counter()
        lab = load_lab(lab_dir)
        loaded = time.perf_counter()
        store = Store.open(lab.database_url)
        opened = time.perf_counter()
        flight_id = plan_flight(lab, store, "main")
        planned = time.perf_counter()
        statements: list[str] = []
        event.listen(
            store.engine,
            "before_cursor_execute",
            lambda _conn, _cursor, sql, *_: statements.append(sql.split(None, 1)[0].upper()),
        )
        commits = [0]
        event.listen(store.engine, "commit", lambda _conn: commits.__setitem__(0, commits[0] + 1))
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(Flights(lab, store).run(flight_id))
        profiler.disable()
        ran = time.perf_counter()
        steps = sum(len(j.step_ids) for j in store.flight_jobs(flight_id))
        store.close()

    print("\nwhere the time goes (one flight, in process; threads overlap the event loop):")
    print(f"  load lab.toml                 {loaded - started:8.3f} s")
    print(f"  open the store (migrations)   {opened - loaded:8.3f} s")
    print(f"  plan (mirror fetch, insert)   {planned - opened:8.3f} s")
    print(f"  Flights.run                   {ran - planned:8.3f} s")
    kinds = ", ".join(f"{k} {n}" for k, n in Counter(statements).most_common())
    print(
        f"  SQL statements: {len(statements)} ({len(statements) / steps:.2f} a step: {kinds}); "
        f"commits {commits[0]} ({commits[0] / steps:.2f} a step)"
    )
    for label, seconds in sorted(timers.seconds.items(), key=lambda kv: -kv[1]):
        calls = timers.calls[label]
        print(f"    {label:<52}{calls:>6} calls {seconds:8.3f} s {seconds / calls * 1000:8.2f} ms")
    for sort in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(sort).print_stats(top)
        body = text.getvalue()
        print(f"\ncProfile of Flights.run, top {top} by {sort}:")
        print(body[body.find("   ncalls") :].rstrip())


# --- stores --------------------------------------------------------------------------------------


def stores(args: argparse.Namespace, root: Path) -> Iterator[tuple[str, Callable[[], Any]]]:
    """(name, context manager giving a URL) for each store to measure."""

    @contextmanager
    def fixed(url: str) -> Iterator[str]:
        yield url

    yield "sqlite", lambda: fixed(f"sqlite:///{root}/sqlite-lab/labgate.db")
    if args.database:
        yield "postgresql", lambda: fixed(args.database)
    elif os.environ.get("LABGATE_TEST_POSTGRES"):
        yield (
            "postgresql",
            lambda: scratch_database(os.environ["LABGATE_TEST_POSTGRES"], "labgate_bench"),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="0: only --profile")
    parser.add_argument("--database", help="also measure on this (PostgreSQL) database URL")
    parser.add_argument("--profile", action="store_true", help="then show where the time goes")
    parser.add_argument(
        "--resident",
        action="store_true",
        help="run each flight through a resident controller (started by the bench, stopped at the"
        " end), as a command typed on a terminal does, instead of a process of its own",
    )
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    parser.add_argument(
        "--slope",
        type=int,
        metavar="JOBS",
        help="also time a flight of JOBS jobs: the cost of one more step without start-up",
    )
    args = parser.parse_args()
    if args.slope is not None and not 0 < args.slope < args.jobs:
        parser.error("--slope JOBS must be between 0 and --jobs")

    results = []
    slopes: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="labgate-bench-") as tmp:
        root = Path(tmp)
        if args.resident:
            RESIDENT["LABGATE_RESIDENT"] = "1"
        with resident_controller(root / "resident") if args.resident else nullcontext():
            run_all(args, root, results, slopes)
    print_table(results, args)
    for name, values in slopes.items():
        print(
            f"{name}: slope between {args.slope} and {args.jobs} jobs: "
            f"{statistics.median(values):.2f} ms/step "
            f"(median; {min(values):.2f}..{max(values):.2f})"
        )


def run_all(
    args: argparse.Namespace,
    root: Path,
    results: list[Figures],
    slopes: dict[str, list[float]],
) -> None:
    """Measure each store (and its slope, and its profile, as asked)."""
    for name, url_context in stores(args, root):
        with url_context() as url:
            lab = make_lab(root / f"{name}-lab", url, args.jobs, args.steps, args.slots)
            results.append(measure(name, lab, args))
            if args.slope:
                small = make_lab(
                    root / f"{name}-small", url.replace("labgate.db", "small.db"),
                    args.slope, args.steps, args.slots,
                )  # fmt: skip
                slopes[name] = measure_slope(name, small, lab, args)
            if args.profile:
                print(f"\n=== profile on {name} ===")
                profile(lab, args.top)


if __name__ == "__main__":
    main()
