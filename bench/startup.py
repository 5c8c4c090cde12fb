"""How fast ``labgate`` starts: ``--help`` and ``--version``, and a flight up to its first step.

Each figure is the median (and the fastest) of ROUNDS runs of the console script, wall clock,
rounds alternating so that every figure sees the same machine:

- ``labgate --version`` and ``labgate --help`` (target: at most 150 ms each);
- ``python -c pass``: the interpreter alone, the floor under any command;
- eager imports: what importing the command line cost before it imported lazily (the modules
  ``labgate.cli`` loaded at start-up then), side by side with ``import labgate.cli`` now;
- ``labgate flight run`` up to its first step (target: at most 300 ms): from just before the
  process is spawned to the moment the first step's shell writes the time. The lab is warmed up
  by one flight first (mirror cloned, schema made), as a lab's controller finds it. Beside it,
  the imports such a flight cannot do without (lab.toml's pydantic models, the SQLAlchemy
  store, the flight runner): the rest is the work itself.
- the same three commands with this user's resident controller running (labgate.resident: the
  command is forked from a process that imported labgate already), as every command after the
  first finds it on a terminal. The others run with ``LABGATE_RESIDENT=0``: a process each.

    python bench/startup.py [--rounds 15]

labgate's own modules are compiled first (``compileall``), as pip does when it installs a
wheel: with ``PYTHONDONTWRITEBYTECODE`` set (as on this project's machines) an editable install
would otherwise compile them again at every start. The load average is printed with the figures:
on a shared machine they move with it.
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
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from labs import job, labgate_exe, local_host, resident_controller, step, write_lab

HELP_TARGET_MS = 150.0
FIRST_STEP_TARGET_MS = 300.0

# what `import labgate.cli` loaded before the command line imported lazily
EAGER = (
    "import rich.console, labgate.bisect.cli, labgate.config, labgate.flight, labgate.progress, "
    "labgate.store, labgate.text, labgate.serve, labgate.review.cli, labgate.hosts.cli"
)

# the floor under a flight's first step: its configuration (pydantic) and store (SQLAlchemy)
FLIGHT_IMPORTS = "import labgate.config, labgate.store, labgate.flight"


ALONE = {"LABGATE_RESIDENT": "0"}  # every command a process of its own
RESIDENT = {"LABGATE_RESIDENT": ""}  # the default off a terminal: the resident when it answers


def timed(argv: list[str], env: dict[str, str] = ALONE) -> Callable[[], float]:
    def once() -> float:
        started = time.perf_counter()
        subprocess.run(
            argv,
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            check=True,
            env={**os.environ, **env},
        )
        return (time.perf_counter() - started) * 1000

    return once


def first_step(lab: Path, stamp: Path, env: dict[str, str] = ALONE) -> Callable[[], float]:
    """Milliseconds from spawning ``labgate flight run`` to its first step's start."""

    def once() -> float:
        stamp.unlink(missing_ok=True)
        started = time.time()
        subprocess.run(
            [labgate_exe(), "flight", "run", "main", "--lab", str(lab)],
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            check=True,
            env={**os.environ, **env},
        )
        return (float(stamp.read_text()) - started) * 1000

    return once


def make_lab(root: Path, stamp: Path) -> Path:
    lab = write_lab(
        root / "lab",
        trees={"t": {"README": "a small tree\n"}},
        hosts=local_host("h0"),
        jobs=job("first", step("stamp", f"date +%s.%N > {stamp}")),
    )
    return lab.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    python = sys.executable
    # labgate's modules compiled, as pip compiles them installing a wheel: an editable install
    # under PYTHONDONTWRITEBYTECODE (set on some machines) would compile them at every start
    package = Path(__file__).resolve().parent.parent / "src" / "labgate"
    subprocess.run([python, "-m", "compileall", "-q", str(package)], check=True)
    with tempfile.TemporaryDirectory(prefix="labgate-startup-") as tmp:
        stamp = Path(tmp) / "stamp"
        lab = make_lab(Path(tmp), stamp)
        subprocess.run(
            [labgate_exe(), "flight", "run", "main", "--lab", str(lab)],
            stdout=subprocess.DEVNULL,
            check=True,
            env={**os.environ, **ALONE},
        )  # warm-up: mirror cloned, schema made
        with resident_controller(Path(tmp) / "resident"):
            samples = sample(lab, stamp, python, args.rounds)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"labgate start-up, {args.rounds} rounds; load average {load} ({os.cpu_count()} cores)")
    print(f"{'':<36} {'median ms':>10} {'fastest ms':>11} {'target ms':>10}")
    for name, (values, target) in samples.items():
        verdict = "" if target is None else f"{target:>10.0f}"
        if target is not None:
            verdict += "  ok" if statistics.median(values) <= target else "  OVER"
        print(f"{name:<36} {statistics.median(values):>10.1f} {min(values):>11.1f} {verdict}")


def sample(
    lab: Path, stamp: Path, python: str, rounds: int
) -> dict[str, tuple[list[float], float | None]]:
    """Each measure's samples (and its target), rounds alternating between measures."""
    measures: dict[str, tuple[Callable[[], float], float | None]] = {
        "labgate --version": (timed([labgate_exe(), "--version"]), HELP_TARGET_MS),
        "labgate --help": (timed([labgate_exe(), "--help"]), HELP_TARGET_MS),
        "python -c pass": (timed([python, "-c", "pass"]), None),
        "import labgate.cli (now)": (timed([python, "-c", "import labgate.cli"]), None),
        "eager imports (before)": (timed([python, "-c", EAGER]), None),
        "imports a flight needs": (timed([python, "-c", FLIGHT_IMPORTS]), None),
        "flight run to first step": (first_step(lab, stamp), FIRST_STEP_TARGET_MS),
        "labgate --version, resident": (
            timed([labgate_exe(), "--version"], RESIDENT),
            HELP_TARGET_MS,
        ),
        "labgate --help, resident": (timed([labgate_exe(), "--help"], RESIDENT), HELP_TARGET_MS),
        "flight run to first step, resident": (
            first_step(lab, stamp, RESIDENT),
            FIRST_STEP_TARGET_MS,
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, (measure, _target) in measures.items():
            samples[name].append(measure())
    return {name: (samples[name], target) for name, (_m, target) in measures.items()}


if __name__ == "__main__":
    main()
