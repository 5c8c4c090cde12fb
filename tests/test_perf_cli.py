"""``labgate perf changepoints`` as a real process: JSON lines in, JSON lines out, each answer
flushed before the next line is read, a bad line named with exit status 2."""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import sys
from pathlib import Path

import pytest

from labgate.config import load_lab
from labgate.flight import plan_flight
from labgate.flights import Flights
from labgate.model import Blessing
from labgate.perf.changepoint import change_points
from labgate.store import Store
from labs import job, labgate, local_host, step, write_lab

CHANGEPOINTS = [sys.executable, "-m", "labgate", "perf", "changepoints"]
STEP = [100.0 + (k % 3) for k in range(30)] + [110.0 + (k % 3) for k in range(30)]
REVERTED = STEP[:40] + [100.0 + (k % 3) for k in range(30)]


def run(stdin: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHANGEPOINTS, *options], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_one_answer_per_line_as_the_library_gives() -> None:
    lines = [STEP, REVERTED, [], [1, 2, 3], [5] * 50]
    done = run("".join(json.dumps(values) + "\n" for values in lines))
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert answers == [[p.index for p in change_points(values)] for values in lines]
    assert answers[:2] == [[30], [30, 40]]


def test_options_reach_the_detector() -> None:
    small = [100.0 + (k % 3) for k in range(30)] + [103.0 + (k % 3) for k in range(30)]
    assert run(json.dumps(small) + "\n").stdout == "[30]\n"
    assert run(json.dumps(small) + "\n", "--min-change", "0.05").stdout == "[]\n"
    assert run(json.dumps(STEP) + "\n", "--min-segment", "31").stdout == "[]\n"


def test_each_answer_comes_before_the_next_line_is_sent() -> None:
    with subprocess.Popen(
        CHANGEPOINTS, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        for values, expected in ((STEP, "[30]\n"), (REVERTED, "[30, 40]\n")):
            process.stdin.write(json.dumps(values) + "\n")
            process.stdin.flush()
            # the process holds stdin open: only a flushed answer can arrive
            ready, _, _ = select.select([process.stdout], [], [], 30)
            assert ready, "no answer within 30 s: not flushed?"
            assert process.stdout.readline() == expected
        process.stdin.close()
        assert process.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2", "stdin line 3: not JSON (Expecting ',' delimiter at column 6)"),
        ('{"values": [1]}', "stdin line 3: expected a JSON array of numbers, got dict"),
        ('[1, "2"]', 'stdin line 3: value 1 is "2", not a number'),
        ("[1, true]", "stdin line 3: value 1 is true, not a number"),
        ("[1, NaN]", "stdin line 3: value 1 is nan, not a finite number"),
        ("", "stdin line 3: empty; expected a JSON array of numbers"),
    ],
)
def test_a_bad_line_is_named_after_the_answers_before_it(line: str, message: str) -> None:
    done = run(f"{json.dumps(STEP)}\n[]\n{line}\n{json.dumps(STEP)}\n")
    assert done.returncode == 2
    assert done.stdout == "[30]\n[]\n"
    assert done.stderr == f"labgate: {message}\n"


# --- a lab's metrics: `labgate perf metrics` and `labgate perf history` -----------------------

# Five runs report COST+1, +2, +3, +4, +0; COST is a file the test rewrites between flights.
BENCH = (
    "echo x >> runs; n=$(wc -l < runs); c=$(cat {cost}); echo LABGATE-METRIC time=$((c + n % 5)) s"
)


def measured_lab(tmp_path: Path, database_url: str) -> tuple[Path, Path]:
    cost = tmp_path / "cost"
    jobs = job("perf", step("bench", BENCH.format(cost=cost)) + "repeat = 5\n")
    lab_dir = write_lab(
        tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs, database=database_url,
        hosts=local_host("h0", flags=["equiv-small"]),
    )  # fmt: skip
    (lab_dir.toml).write_text(lab_dir.toml.read_text() + "\n[perf]\nalpha = 0.05\n")
    return lab_dir.path, cost


def real_flights(lab_dir: Path, cost: Path, costs: list[int]) -> list[int]:
    lab = load_lab(lab_dir)
    ids = []
    with Store.open(lab.database_url) as store:
        for value in costs:
            cost.write_text(f"{value}\n")
            flight_id = plan_flight(lab, store, "main", blessing=Blessing.REAL)
            asyncio.run(Flights(lab, store).run(flight_id))
            ids.append(flight_id)
    return ids


def test_history_prints_each_flights_median_with_the_change_points(
    tmp_path: Path, database_url: str
) -> None:
    lab_dir, cost = measured_lab(tmp_path, database_url)
    ids = real_flights(lab_dir, cost, [100] * 7 + [130] * 7)
    done = subprocess.run(
        labgate(lab_dir, "perf", "history", "main", "perf", "bench", "time", "--json"),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (series,) = json.loads(done.stdout)["series"]
    assert series["host_class"] == "equiv-small" and series["unit"] == "s"
    assert series["flights"] == [
        {"flight": i, "value": 102.0 if k < 7 else 132.0, "runs": 5} for k, i in enumerate(ids)
    ]
    assert [(c["flight"], c["before"], c["after"]) for c in series["change_points"]] == [
        (ids[7], 102.0, 132.0)
    ]
    text = subprocess.run(
        labgate(lab_dir, "perf", "history", "main", "perf", "bench", "time"),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert text.splitlines()[0] == "perf bench time [equiv-small] on main"
    assert f" flight {ids[7]:>6}         132 s  (5 runs)  <- change +29.4% (102 -> 132)" in text
    none = subprocess.run(
        labgate(lab_dir, "perf", "history", "main", "perf", "bench", "boot"),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert none.stdout == "perf bench: no values of boot on main\n"
    typo = subprocess.run(
        labgate(lab_dir, "perf", "history", "main", "perf", "bnch", "time"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert typo.returncode == 2
    assert "branch 'main' has no job 'perf' with a step 'bnch'" in typo.stderr


def test_metrics_judges_a_flight_against_the_branch_baseline(
    tmp_path: Path, database_url: str
) -> None:
    lab_dir, cost = measured_lab(tmp_path, database_url)
    base, slower = real_flights(lab_dir, cost, [100, 120])
    with Store.open(load_lab(lab_dir).database_url) as store:
        store.set_baseline("main", base)
    done = subprocess.run(
        labgate(lab_dir, "perf", "metrics", str(slower), "--json"),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    shown = json.loads(done.stdout)
    assert (shown["baseline"], shown["flights"]) == (base, [slower])
    (time,) = shown["metrics"]
    assert (time["verdict"], time["host_class"]) == ("regression", "equiv-small")
    assert (time["baseline_median"], time["current_median"]) == (102.0, 122.0)
    assert time["blocking"] is False  # [perf] block is false by default
    text = subprocess.run(
        labgate(lab_dir, "perf", "metrics", str(slower)), capture_output=True, text=True, check=True
    ).stdout
    assert text.splitlines() == [
        f"flight {slower} (main) against baseline flight {base}",
        " regression  perf bench time [equiv-small]  +19.6% (102 -> 122 s, p=0.016, 5 vs 5 runs)",
    ]
    missing = subprocess.run(
        labgate(lab_dir, "perf", "metrics", "999"), capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no flight 999 in the store" in missing.stderr
