"""Benchmark: the dashboard's pages when 10% of the flights are embargoed, per viewer.

    python bench/embargo.py                        # 10,000 flights x 50 jobs x 5 steps, both stores
    python bench/embargo.py --jobs 10 --stores sqlite

The store is filled as ``bench/web.py`` fills it (its functions: same rows, same server, same
timing), then every tenth flight is put under embargo of group ``security``; a member of it and
a user of another group get API tokens. The pages are timed as anonymous, as the outsider and as
the member (each request with its Bearer token, one keep-alive connection, after a warm-up):
the flight list (first page; a filtered, deep page), a flight page (a random flight the viewer
may see), a job's history, the hosts page. Printed: p50 and p95 in milliseconds, target
p95 < 100 ms. Then, for those outside the group, the 404 of each route of a hidden flight
against the 404 of a flight that does not exist, interleaved: their timing class must not
differ (labgate.perf.compare: MWU and KS, and the shift bounded within +-10%).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/bisect.py, next to this file, is named like the standard library's bisect module: take
# the script's own directory off the path before random and statistics load
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import importlib.util
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from labgate.perf.compare import Comparison, compare
from labgate.store import schema as t
from labgate.store.users import Users

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_web", HERE / "web.py")
assert _spec is not None and _spec.loader is not None
web = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(web)

GROUP = "security"
EVERY = 10  # one flight in ten is embargoed


def embargo_some(url: str, flights: int) -> dict[str, str]:
    """Put every EVERY-th flight under embargo (one UPDATE); a member and an outsider with
    tokens; returns the Authorization header of each viewer."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.update(t.flight)
                .where(t.flight.c.id % EVERY == 0)
                .values(embargo_group=GROUP, embargo_until=datetime(2099, 1, 1, tzinfo=UTC))
            )
            conn.execute(sa.text("ANALYZE"))
        users = Users(engine)
        users.add("member", groups=[GROUP])
        users.add("outsider", groups=["other"])
        return {
            "anonymous": "",
            "outsider": "Bearer " + users.create_token("outsider"),
            "member": "Bearer " + users.create_token("member"),
        }
    finally:
        engine.dispose()


def bench_store(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    seconds = web.fill(url, args.flights, args.jobs, args.steps)
    viewers = embargo_some(url, args.flights)
    print(
        f"{name}: filled {args.flights:,} flights x {args.jobs} jobs x {args.steps} steps in "
        f"{seconds:.0f} s; {args.flights // EVERY:,} of them embargoed",
        flush=True,
    )
    names = web.job_names(args.jobs)
    results: dict[str, dict[str, tuple[float, float]]] = {}
    classes: dict[str, dict[str, tuple[float, float, Comparison]]] = {}
    with tempfile.TemporaryDirectory(prefix="labgate-bench-embargo-") as tmp:
        lab_dir = Path(tmp)
        (lab_dir / "lab.toml").write_text(
            f'[lab]\nname = "bench"\ndatabase = {json.dumps(url)}\n\n'
            '[[tree]]\nname = "xen"\nurl = "/nonexistent/xen.git"\n\n'
            + "".join(f'[[branch]]\nname = "{b}"\ntree = "xen"\n\n' for b in web.BRANCHES)
            + "".join(f'[[host]]\nname = "{h}"\nflags = []\n\n' for h in web.HOSTS)
            + '[[job]]\nname = "build-amd64"\n[[job.step]]\nname = "build"\nrun = "true"\n'
        )
        with web.served(lab_dir) as (base, _):
            for viewer, header in viewers.items():
                rng = random.Random(7)
                sees_all = viewer == "member"

                def flight(rng: random.Random = rng, sees_all: bool = sees_all) -> str:
                    while True:
                        fid = rng.randint(1, args.flights)
                        if sees_all or fid % EVERY:
                            return f"/flights/{fid}"

                pages: dict[str, Callable[[], str]] = {
                    "flight list": lambda: "/flights",
                    "flight list, filtered deep page": lambda rng=rng: (
                        f"/flights?branch={rng.choice(web.BRANCHES)}"
                        f"&outcome={rng.choice(('pass', 'fail'))}"
                        f"&before={rng.randint(1, args.flights)}"
                    ),
                    "flight page": flight,
                    "job history": lambda rng=rng: (
                        f"/history/{rng.choice(web.BRANCHES)}/{rng.choice(names)}"
                    ),
                    "hosts": lambda: "/hosts",
                }
                headers = {"authorization": header} if header else {}
                with httpx.Client(base_url=base, timeout=60, headers=headers) as client:
                    results[viewer] = {
                        page: web.measure(client, paths, args.requests)
                        for page, paths in pages.items()
                    }
                    if not sees_all:
                        classes[viewer] = timing_classes(client, args, names[0], rng)
    return {"fill_s": seconds, "viewers": results, "classes": classes}


# the routes of one flight whose 404 for a hidden flight is timed against that of a missing one
HIDDEN_ROUTES = (
    "/flights/{id}",
    "/api/flights/{id}",
    "/flights/{id}/jobs/{job}",
    "/flights/{id}/jobs/{job}/steps/0/log",
    "/api/flights/{id}/verdict",
)
SAME_CLASS = 0.10  # "the same timing class": the shift is bounded within +-10%


def timing_classes(
    client: httpx.Client, args: argparse.Namespace, job: str, rng: random.Random
) -> dict[str, tuple[float, float, Comparison]]:
    """Per route: p50 of hidden and of missing, and their comparison (MWU and KS, and the
    Hodges-Lehmann shift's 90% interval). Requests alternate hidden/missing in a random order
    within each pair, so both see the same machine."""
    out = {}
    for route in HIDDEN_ROUTES:
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.requests):
            for hidden in rng.sample((True, False), 2):
                fid = EVERY * rng.randint(1, args.flights // EVERY)
                if not hidden:
                    fid += args.flights  # past the last flight: no such flight
                path = route.format(id=fid, job=job)
                began = time.perf_counter()
                response = client.get(path)
                times[hidden].append((time.perf_counter() - began) * 1000)
                if response.status_code != 404:
                    raise SystemExit(f"GET {path}: {response.status_code}, not 404")
        out[route] = (
            statistics.median(times[True]),
            statistics.median(times[False]),
            compare(times[False], times[True], min_change=SAME_CLASS),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    web.store_arguments(parser)
    args = parser.parse_args()
    report = web.each_store(args.stores, lambda name, url: bench_store(name, url, args))
    print()
    print(f"{'store':<11} {'viewer':<10} {'page':<32} {'p50 ms':>8} {'p95 ms':>8}   p95 < 100 ms")
    for store, result in report.items():
        for viewer, timings in result["viewers"].items():
            for page, (p50, p95) in timings.items():
                mark = "ok" if p95 < 100 else "SLOW"
                print(f"{store:<11} {viewer:<10} {page:<32} {p50:>8.1f} {p95:>8.1f}   {mark}")
    print()
    print(
        "404 of a hidden flight against that of a missing one (interleaved): p50 ms, the hidden "
        f"one's shift with its 90% interval, p (MWU/KS); same class: interval within "
        f"+-{SAME_CLASS:.0%}"
    )
    print(f"{'store':<11} {'viewer':<10} {'route':<40} {'hidden':>7} {'missing':>8}  shift")
    for store, result in report.items():
        for viewer, routes in result["classes"].items():
            for route, (hidden, missing, c) in routes.items():
                print(
                    f"{store:<11} {viewer:<10} {route:<40} {hidden:>7.1f} {missing:>8.1f}  "
                    f"{c.change:+.1%} [{c.change_low:+.1%}, {c.change_high:+.1%}] "
                    f"p={c.p_value:.2f}  {c.difference}"
                )


if __name__ == "__main__":
    main()
