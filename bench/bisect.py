"""Benchmark: ``labgate bisect`` side by side with ``git bisect run`` on the same histories.

    python bench/bisect.py --quick            # a few trials, 1,000 commits: under ~3 minutes
    python bench/bisect.py                    # the full table: 100 trials a cell, 1,000 commits,
                                              # 2 processes (65 minutes on 2 shared cores)
    python bench/bisect.py --sizes 1000,5000  # also 5,000 commits (several times longer)
    python bench/bisect.py --save A.jsonl     # keep each history's records as it is done;
    python bench/bisect.py --report A.jsonl B.jsonl  # one table from saved runs (stopped too)
    python bench/bisect.py --trials 20 --real-trials 0 --no-timing --shapes linear \
        --cells default,told --noise 0:1,0:0.5    # a few cells only, to try a change quickly

For every trial a history is generated with ``git fast-import`` (linear, or merge-heavy: topic
branches forked from and merged back into the mainline), a culprit is planted (a file ``bad`` exists
in every commit that has the culprit as an ancestor, itself included), and one test script
outside the repository decides each run: at a bad commit it fails with probability q (the
detection rate), and any run fails with probability p (the flake rate) — the engine's noise model.
The script appends a line to a counter file on every run, so runs are counted by the script.

On each history and for each (p, q):
- ``git bisect start BAD GOOD && git bisect run SCRIPT`` really runs (its column never depends on
  k; it has no parallel mode, so its rounds are its runs);
- labgate runs with k = 1 and k = 4. For the first ``--real-trials`` trials of each history shape
  and size this is the real runner (``labgate.bisect.run.bisect_run``: a git worktree per run, the
  same script, K processes at once); for the others it is the engine driven by a simulated test
  with the same p and q (pure, in-process: the runner adds no decisions of its own, only process
  and worktree cost, so the simulator is the engine's behaviour at a fraction of the time). Rounds
  in the simulator are synchronous batches of k; the real runner refills a slot as soon as one run
  ends and counts rounds as the longest chain of runs each waiting for a result.

Accuracy is the share of searches that named the planted culprit. Also timed: the engine's
decision on a 10,000-commit merge-heavy DAG, p50/p95/max per round.

In the simulator, on the same histories, also: what the user can say of the test
(``--intermittent no`` at p = 0, 0.05 and 0.3; ``--flaky no --intermittent no`` at p = 0,
compared with git bisect's runs on each history), and broken tests (always pass, always fail,
fail at random half the time), where the only right answer is no culprit. ``floor_runs`` is
printed beside the default mode's runs on a deterministic test.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's bisect module, which random imports: take the
# script's own directory off the path before anything imports bisect.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import labgate.bisect.engine
from labgate.bisect.engine import Knowledge, Observation, Search, TreeRange
from labgate.bisect.gitgraph import read_range
from labgate.bisect.graph import Graph
from labgate.bisect.run import bisect_run

FLAKE_RATES = (0.0, 0.05, 0.2)
# (label, --flaky, --intermittent, p, q): the cells where the user says what they know
TOLD = (
    ("intermittent=no", "auto", "no", 0.0, 1.0),
    ("intermittent=no", "auto", "no", 0.05, 1.0),
    ("deterministic", "no", "no", 0.0, 1.0),
)
# told cells watched for their accuracy only, with a random stream of their own (the other cells
# draw what they drew before these were added): the grid's largest flake rate
TOLD_ACCURACY = (("intermittent=no", "auto", "no", 0.3, 1.0),)
BROKEN = ("always-pass", "always-fail", "random-50%")
# the groups of cells: side by side with git bisect (the default mode), told, broken tests
CELLS = ("default", "told", "broken")
# the information limit for q = 0.5 on 1,000 commits, by p (the bisection issue's figures)
INFORMATION_LIMIT = {0.0: 31, 0.05: 48, 0.2: 136}
DETECTION_RATES = (1.0, 0.5)
JOBS = (1, 4)
SHAPES = ("linear", "merges")
TIMING_SIZE = 10_000
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}

# Fails at a bad commit with probability q, and on any run with probability p; counts its runs.
SCRIPT = """#!/bin/sh
echo . >> "$BENCH_COUNTER"
set -- $(od -An -N8 -tu4 /dev/urandom)
if [ -f bad ] && [ "$1" -lt "$BENCH_Q" ]; then exit 1; fi
if [ "$2" -lt "$BENCH_P" ]; then exit 1; fi
exit 0
"""


# --- histories --------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """A generated commit DAG: commit i has parents[i] (indices < i); 0 is the good root, the
    last commit is the bad tip; ``culprit`` is planted."""

    shape: str
    parents: tuple[tuple[int, ...], ...]
    culprit: int

    def bad_set(self) -> set[int]:
        """Every commit that has the culprit as an ancestor (itself included)."""
        bad = {self.culprit}
        for i in range(self.culprit + 1, len(self.parents)):
            if any(p in bad for p in self.parents[i]):
                bad.add(i)
        return bad

    def tree_range(self) -> TreeRange:
        """The range with synthetic commit names, for the simulator, newest first as ``git
        rev-list`` lists the real repository's (its commit dates follow the indices)."""
        names = [f"c{i:06d}" for i in range(len(self.parents))]
        parents = {
            names[i]: tuple(names[p] for p in self.parents[i])
            for i in reversed(range(len(self.parents)))
        }
        del parents[names[0]]
        return TreeRange(tree="", parents=parents, good=(names[0],), bad=names[-1])


def floor_runs(history: History, confidence: float = 0.99) -> float:
    """The fewest runs any bisection can average on a *deterministic* test of this history, over
    the planted culprit, if it is also to name the right culprit with probability ``confidence``
    when the regression is intermittent (p = 0, q = 0.5) without being told which case it is in.

    Why: with a deterministic test and culprit c', a search sees one history of outcomes and stops
    after T(c') runs, naming c'. With q = 0.5 and culprit c, a proper ancestor of c', that same
    history has probability at least 0.5 ** T(c') (runs at points c leaves good pass as surely as
    with c'; every other run matches with probability 0.5), and the search then names c': wrong.
    These histories differ for different c', so the error rate at q = 0.5 is at least
    ``mean over c' of A(c') * 0.5 ** T(c')``, A(c') the number of proper ancestors of c' in the
    range. Keeping that at most 1 - confidence while minimising the mean of T(c') gives
    ``T(c') = log2 A(c') + a`` (Lagrange), hence the mean below: for a linear range of N commits
    about ``log2 N - 1.44 + log2(1 / (1 - confidence))``, git bisect's runs plus 5.2 at 0.99.
    """
    sizes = [anc.bit_count() - 1 for anc in Graph([history.tree_range()]).anc]
    some = [a for a in sizes if a >= 1]
    offset = math.log2(len(some) / ((1.0 - confidence) * len(sizes)))
    return sum(math.log2(a) + offset for a in some) / len(sizes)


def generate(shape: str, size: int, rng: random.Random) -> History:
    """A history of ``size`` commits. Merge-heavy: topic branches fork from the mainline, get a
    few commits, and merge back (about one merge every ten commits, several topics open)."""
    if shape == "linear":
        parents: list[tuple[int, ...]] = [()] + [(i - 1,) for i in range(1, size)]
    else:
        parents = [()]
        main, topics = 0, list[int]()
        while len(parents) < size - 1:
            roll = rng.random()
            if roll < 0.35 and topics:
                t = rng.randrange(len(topics))
                parents.append((topics[t],))
                topics[t] = len(parents) - 1
            elif roll < 0.45 and len(topics) < 8:
                parents.append((main,))
                topics.append(len(parents) - 1)
            elif roll < 0.55 and topics:
                parents.append((main, topics.pop(rng.randrange(len(topics)))))
                main = len(parents) - 1
            else:
                parents.append((main,))
                main = len(parents) - 1
        parents.append((main, *topics))  # an octopus merge closes whatever is still open
    culprit = rng.randrange(1, len(parents))
    return History(shape, tuple(parents), culprit)


def write_repo(history: History, path: Path) -> list[str]:
    """The history as a real git repository at ``path`` (branch main checked out); the shas."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=_git_env())
    bad = history.bad_set()
    lines: list[str] = []
    for i, ps in enumerate(history.parents):
        message = f"commit {i}\n"
        lines += [
            "commit refs/heads/main",
            f"mark :{i + 1}",
            f"committer Bench <bench@example.org> {1_700_000_000 + 60 * i} +0000",
            f"data {len(message)}",
            message.rstrip("\n"),
        ]
        if ps:
            lines.append(f"from :{ps[0] + 1}")
            lines += [f"merge :{p + 1}" for p in ps[1:]]
        lines += ["M 644 inline version", f"data {len(str(i))}", str(i)]
        if (i in bad) != (bool(ps) and ps[0] in bad):
            lines += ["M 644 inline bad", "data 0"] if i in bad else ["D bad"]
        lines.append("")
    lines += ["reset refs/heads/main", f"from :{len(history.parents)}", "done", ""]
    marks = path / "marks"
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet", "--done", f"--export-marks={marks}"],
        input="\n".join(lines).encode(),
        check=True,
        env=_git_env(),
    )
    shas = dict(line.split() for line in marks.read_text().splitlines())
    marks.unlink()
    subprocess.run(["git", "-C", str(path), "checkout", "-q", "-f", "main"], check=True)
    return [shas[f":{i + 1}"] for i in range(len(history.parents))]


def _git_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **GIT_ENV, **extra}


# --- the three ways to search -----------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    tool: str  # "git bisect" or "labgate"
    mode: str  # "real" or "sim"
    shape: str
    size: int
    trial: int
    p: float
    q: float
    k: int
    correct: bool
    runs: int
    rounds: int
    seconds: float
    floor: float = 0.0  # floor_runs of the trial's history
    told: str = "auto"  # what the search was told of the test (labgate only)
    test: str = "model"  # the test: the noise model, or a broken test (BROKEN)
    named: bool = False  # some culprit was named (right or wrong)


def script_env(counter: Path, p: float, q: float) -> dict[str, str]:
    return _git_env(
        BENCH_COUNTER=str(counter), BENCH_P=str(round(p * 2**32)), BENCH_Q=str(round(q * 2**32))
    )


def run_git_bisect(
    repo: Path, shas: Sequence[str], script: Path, counter: Path, p: float, q: float
) -> tuple[str | None, int]:
    """``git bisect run`` for real; the commit it names and the runs its script counted."""
    env = script_env(counter, p, q)
    counter.unlink(missing_ok=True)
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "bisect", "start", shas[-1], shas[0]], env=env, capture_output=True)
    done = subprocess.run(
        [*git, "bisect", "run", str(script)], env=env, capture_output=True, text=True
    )
    subprocess.run([*git, "bisect", "reset", "-q"], env=env, capture_output=True)
    named = None
    for line in done.stdout.splitlines():
        if line.endswith(" is the first bad commit"):
            named = line.split()[0]
    return named, _count(counter)


def run_labgate_real(
    repo: Path, shas: Sequence[str], script: Path, counter: Path, p: float, q: float, k: int
) -> tuple[str | None, int, int]:
    """The real runner: worktrees, K processes at once; the commit named, runs, rounds."""
    counter.unlink(missing_ok=True)
    search = Search([read_range(repo, [shas[0]], shas[-1])], seed=0)
    result = bisect_run(repo, search, [str(script)], jobs=k, env=script_env(counter, p, q))
    culprit = result.decision.culprit
    return (culprit.commit if culprit else None), _count(counter), result.rounds


def run_labgate_sim(
    history: History,
    tree: TreeRange,
    p: float,
    q: float,
    k: int,
    rng: random.Random,
    *,
    flaky: Knowledge = "auto",
    intermittent: Knowledge = "auto",
    test: str = "model",
) -> tuple[str | None, int, int, list[float]]:
    """The engine on a simulated test, k tests per synchronous round; also each decision's time.
    ``test`` is the noise model or one of the broken tests of BROKEN."""
    bad = {f"c{i:06d}" for i in history.bad_set()}
    search = Search([tree], seed=0, flaky=flaky, intermittent=intermittent)
    observations: list[Observation] = []
    rounds, timings = 0, []
    while True:
        started = time.perf_counter()
        decision = search.decide(observations, k=k)
        timings.append(time.perf_counter() - started)
        if decision.kind != "test" or not decision.tests:
            break
        rounds += 1
        for point in decision.tests[:k]:
            if test == "always-pass":
                fails = False
            elif test == "always-fail":
                fails = True
            elif test == "random-50%":
                fails = rng.random() < 0.5
            else:
                fails = (point[""] in bad and rng.random() < q) or rng.random() < p
            observations.append(Observation(point=point, outcome="bad" if fails else "good"))
    named = decision.culprit.commit if decision.culprit else None
    return named, len(observations), rounds, timings


def _count(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


# --- one trial: one history, every (p, q, k) --------------------------------------------------


@dataclass(frozen=True)
class Trial:
    shape: str
    size: int
    trial: int
    real: bool
    workdir: Path
    seed: int
    cells: tuple[str, ...] = CELLS  # which groups of cells to run (see CELLS)
    # the (p, q) of the side-by-side cells to run; git bisect always runs at p = 0, q = 1 too,
    # the base of the ratios
    noise: tuple[tuple[float, float], ...] = tuple(
        (p, q) for p in FLAKE_RATES for q in DETECTION_RATES
    )


def run_trial(trial: Trial) -> list[Record]:
    rng = random.Random(f"{trial.seed}:{trial.shape}:{trial.size}:{trial.trial}")
    history = generate(trial.shape, trial.size, rng)
    tree = history.tree_range()
    place = Path(tempfile.mkdtemp(prefix=f"{trial.shape}-{trial.size}-", dir=trial.workdir))
    try:
        repo, script, counter = place / "repo", place / "test.sh", place / "counter"
        script.write_text(SCRIPT)
        script.chmod(0o755)
        shas = write_repo(history, repo)
        culprit_sha, culprit_name = shas[history.culprit], f"c{history.culprit:06d}"
        floor = floor_runs(history)
        records = []
        for p in FLAKE_RATES:
            for q in DETECTION_RATES:
                side_by_side = "default" in trial.cells and (p, q) in trial.noise
                if not side_by_side and (p, q) != (0.0, 1.0):
                    continue
                cell = (trial.shape, trial.size, trial.trial, p, q)
                started = time.monotonic()
                named, runs = run_git_bisect(repo, shas, script, counter, p, q)
                seconds = time.monotonic() - started
                for k in JOBS:  # git bisect has no k: the same search stands in both columns
                    records.append(
                        Record(
                            "git bisect",
                            "real",
                            *cell,
                            k,
                            named == culprit_sha,
                            runs,
                            runs,
                            seconds,
                            floor,
                        )
                    )
                for k in JOBS if side_by_side else ():
                    started = time.monotonic()
                    if trial.real:
                        named, runs, rounds = run_labgate_real(repo, shas, script, counter, p, q, k)
                        correct = named == culprit_sha
                    else:
                        named, runs, rounds, _ = run_labgate_sim(history, tree, p, q, k, rng)
                        correct = named == culprit_name
                    mode = "real" if trial.real else "sim"
                    seconds = time.monotonic() - started
                    records.append(
                        Record(
                            "labgate", mode, *cell, k, correct, runs, rounds, seconds, floor,
                            named=named is not None,
                        )
                    )  # fmt: skip
        records += _told_and_broken(trial, history, tree, culprit_name, floor, rng)
        return records
    finally:
        shutil.rmtree(place, ignore_errors=True)


def _told_and_broken(
    trial: Trial, history: History, tree: TreeRange, culprit: str, floor: float, rng: random.Random
) -> list[Record]:
    """The simulator's cells where the user says what they know, and the broken tests."""
    out = []
    own = random.Random(f"{trial.seed}:{trial.shape}:{trial.size}:{trial.trial}:told-accuracy")
    told = [(cell, rng) for cell in TOLD] + [(cell, own) for cell in TOLD_ACCURACY]
    for (label, flaky, intermittent, p, q), stream in told if "told" in trial.cells else ():
        for k in JOBS if label == "deterministic" else (1,):
            started = time.monotonic()
            named, runs, rounds, _ = run_labgate_sim(
                history, tree, p, q, k, stream,
                flaky=flaky, intermittent=intermittent,  # type: ignore[arg-type]
            )  # fmt: skip
            cell = (trial.shape, trial.size, trial.trial, p, q, k)
            out.append(
                Record(
                    "labgate", "sim", *cell, named == culprit, runs, rounds,
                    time.monotonic() - started, floor, told=label, named=named is not None,
                )
            )  # fmt: skip
    for test in BROKEN if "broken" in trial.cells else ():
        started = time.monotonic()
        named, runs, rounds, _ = run_labgate_sim(history, tree, 0.0, 1.0, 1, rng, test=test)
        cell = (trial.shape, trial.size, trial.trial, 0.0, 1.0, 1)
        out.append(
            Record(
                "labgate", "sim", *cell, False, runs, rounds, time.monotonic() - started,
                floor, test=test, named=named is not None,
            )
        )  # fmt: skip
    return out


# --- the decision time on a large DAG ---------------------------------------------------------


def time_decisions(size: int, seed: int) -> dict[str, float]:
    """Per-round decision time of the engine on a merge-heavy DAG of ``size`` commits."""
    rng = random.Random(seed)
    history = generate("merges", size, rng)
    tree = history.tree_range()
    started = time.perf_counter()
    Search([tree], seed=0)
    build = time.perf_counter() - started
    timings: list[float] = []
    for p, q, k in ((0.0, 1.0, 1), (0.05, 1.0, 1), (0.05, 1.0, 4), (0.2, 0.5, 4)):
        timings += run_labgate_sim(history, tree, p, q, k, rng)[3]
    timings.sort()
    return {
        "build_s": build,
        "rounds": len(timings),
        "p50_ms": 1000 * timings[len(timings) // 2],
        "p95_ms": 1000 * timings[min(len(timings) - 1, math.ceil(0.95 * len(timings)) - 1)],
        "max_ms": 1000 * timings[-1],
    }


# --- worktrees: one per job, or a fresh one per run -------------------------------------------


def time_worktrees(files: int, commits: int, workdir: Path) -> dict[str, float]:
    """Seconds per run on a repository of ``files`` files: labgate moving one worktree per job
    (the default), labgate with a fresh worktree per run (``--fresh``), and git bisect run in
    the checkout; a deterministic test, both told so, so both make about the same runs."""
    repo = workdir / "worktrees-repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=_git_env())
    for i in range(files):
        path = repo / f"d{i % 100}" / f"f{i}.c"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"int x{i};\n" * 20)
    env = _git_env(
        GIT_AUTHOR_NAME="Bench",
        GIT_AUTHOR_EMAIL="bench@example.org",
        GIT_COMMITTER_NAME="Bench",
        GIT_COMMITTER_EMAIL="bench@example.org",
    )
    culprit = commits * 2 // 3

    def commit(message: str) -> None:
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
        subprocess.run(["git", "-C", str(repo), "commit", "-qm", message], check=True, env=env)

    commit("base")
    for i in range(1, commits + 1):
        (repo / "d0" / "f0.c").write_text(f"{i}\n")
        if i == culprit:
            (repo / "bad").write_text("x\n")
        commit(f"commit {i}")
    good = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", f"HEAD~{commits}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    command = ["sh", "-c", "test -f bad && exit 1; exit 0"]
    out: dict[str, float] = {}
    for label, fresh in (("labgate", False), ("labgate --fresh", True)):
        search = Search([read_range(repo, [good], "HEAD")], flaky="no", intermittent="no")
        started = time.monotonic()
        result = bisect_run(
            repo, search, command, fresh=fresh, env=env, log_dir=workdir / f"logs-{fresh}"
        )
        out[label] = (time.monotonic() - started) / result.runs
    started = time.monotonic()
    subprocess.run(["git", "-C", str(repo), "bisect", "start", "HEAD", good], env=env,
                   capture_output=True, check=True)  # fmt: skip
    done = subprocess.run(["git", "-C", str(repo), "bisect", "run", *command], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    subprocess.run(["git", "-C", str(repo), "bisect", "reset"], env=env, capture_output=True)
    runs = done.stdout.count("running")
    out["git bisect"] = (time.monotonic() - started) / max(1, runs)
    return out


# --- the report -------------------------------------------------------------------------------


def report(records: Sequence[Record], timing: dict[str, float] | None) -> bool:
    """Print the tables and the targets; True when every target is met."""
    cells: dict[tuple[object, ...], list[Record]] = defaultdict(list)
    for r in records:
        cells[(r.shape, r.size, r.p, r.q, r.k, r.tool, r.told, r.test)].append(r)
    default = {key[:6]: rs for key, rs in cells.items() if key[6:] == ("auto", "model")}
    print(
        f"{'':23}| {'git bisect run':^21} | {'labgate bisect run (default: auto/auto)':^55}\n"
        f"{'shape':7} {'size':>5} {'p':>4} {'q':>3} {'k':>1} |"
        f" {'n':>4} {'accuracy':>8} {'runs':>6} |"
        f" {'n':>4} {'real':>4} {'accuracy':>8} {'runs':>6} {'rounds':>6} {'x git p=0':>9}"
        f" {'floor':>6}"
    )
    for key in sorted({key[:5] for key in default}):
        shape, size, p, q, k = key
        git, lab = default[(*key, "git bisect")], default.get((*key, "labgate"))
        if not lab:  # --cells without default: git bisect's runs only, the base of the ratios
            continue
        base = default.get((shape, size, 0.0, 1.0, k, "git bisect"))
        ratio = f"{_mean(lab, 'runs') / _mean(base, 'runs'):>9.2f}" if base else f"{'':>9}"
        floor = f"{_mean(lab, 'floor'):>6.2f}" if (p, q) == (0.0, 1.0) else f"{'':>6}"
        real = sum(r.mode == "real" for r in lab)
        print(
            f"{shape:7} {size:>5} {p:>4} {q:>3} {k:>1} |"
            f" {len(git):>4} {_mean(git, 'correct'):>8.3f} {_mean(git, 'runs'):>6.2f} |"
            f" {len(lab):>4} {real:>4} {_mean(lab, 'correct'):>8.3f} {_mean(lab, 'runs'):>6.2f}"
            f" {_mean(lab, 'rounds'):>6.2f} {ratio} {floor}"
        )
    print(
        f"\n{'labgate, told or broken (simulator)':36} | {'n':>4} {'accuracy':>8} {'named':>6}"
        f" {'runs':>6} {'max':>4} {'rounds':>6} {'x git p=0':>9}"
    )
    for key in sorted(k for k in cells if k[6:] != ("auto", "model")):
        shape, size, p, q, k, _, told, test = key
        rs = cells[key]
        base = default.get((shape, size, 0.0, 1.0, k, "git bisect"))
        ratio = f"{_mean(rs, 'runs') / _mean(base, 'runs'):>9.2f}" if base else f"{'':>9}"
        what = f"{shape} {size} {told if test == 'model' else test} p={p} k={k}"
        print(
            f"{what:36} | {len(rs):>4}"
            f" {_mean(rs, 'correct'):>8.3f} {sum(r.named for r in rs):>6}"
            f" {_mean(rs, 'runs'):>6.2f} {max(r.runs for r in rs):>4}"
            f" {_mean(rs, 'rounds'):>6.2f} {ratio}"
        )
    for line in _random_test_bound(records):
        print(line)
    real_lab = [r for r in records if r.tool == "labgate" and r.mode == "real"]
    if real_lab:
        right = sum(r.correct for r in real_lab)
        print(f"labgate's real runner (worktrees, real script): {right}/{len(real_lab)} correct")
    for tool in ("git bisect", "labgate"):
        real_runs = [r for r in records if r.tool == tool and r.mode == "real" and r.k == 1]
        if real_runs:
            per_run = sum(r.seconds for r in real_runs) / max(1, sum(r.runs for r in real_runs))
            print(f"wall time per real run, {tool} (k=1): {1000 * per_run:.0f} ms")
    print()
    checks = list(_targets(records, default))
    if timing is not None:
        ok = timing["p95_ms"] < 50
        checks.append(
            (
                ok,
                f"decision time on a {TIMING_SIZE}-commit merge DAG: p50 {timing['p50_ms']:.1f} ms,"
                f" p95 {timing['p95_ms']:.1f} ms, max {timing['max_ms']:.1f} ms over"
                f" {timing['rounds']:.0f} rounds (graph built in {timing['build_s']:.2f} s);"
                f" target p95 < 50 ms",
            )
        )
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for ok, _ in checks)


def random_test_bound(size: int, deterministic: Sequence[Record]) -> float:
    """The least probability that a search names a culprit for a test failing at random half the
    time, given its runs on a deterministic test (``deterministic``: searches of histories of
    ``size`` commits with the culprit planted uniformly, as :func:`generate` plants it).

    Why: the search is a function of the runs it has seen. A deterministic test with culprit c
    gives one history of outcomes, on which it names c after T(c) runs; a 50%-random test
    gives that same history with probability 2 ** -T(c), and then the search names c too. The
    histories for different c are different, so a random test gets some culprit named with
    probability at least the sum over c of 2 ** -T(c), estimated here as ``size - 1`` times the
    mean of 2 ** -runs over the searches that named the right culprit (a search that names a
    wrong one is counted as naming none, which only lowers the bound). It is at least
    ``(size - 1) * 2 ** -mean(T)`` (convexity): 1,000 commits at 17.5 runs give 0.54%, so 0 in
    100 searches needs about 17.7 runs even to be more likely than not."""
    if not deterministic:
        return 0.0
    hits = [2.0**-r.runs if r.correct else 0.0 for r in deterministic]
    return (size - 1) * statistics.fmean(hits)


def _random_test_bound(records: Sequence[Record]) -> Iterator[str]:
    """The bound of :func:`random_test_bound` beside the random-50% test's culprits named."""
    for shape, size in sorted({(r.shape, r.size) for r in records}):
        here = [r for r in records if (r.shape, r.size) == (shape, size) and r.tool == "labgate"]
        det = [r for r in here if r.test == "model" and r.told == "auto" and r.k == 1]
        det = [r for r in det if (r.p, r.q) == (0.0, 1.0)]
        coins = [r for r in here if r.test == "random-50%"]
        if det and coins:
            bound = random_test_bound(size, det)
            yield (
                f"{shape} {size} random-50%: {sum(r.named for r in coins)} culprits named in"
                f" {len(coins)} searches; any engine making the default mode's runs on a"
                f" deterministic test names one with probability >= {bound:.4f}, so >="
                f" {bound * len(coins):.2f} expected (chance of none about"
                f" {math.exp(-bound * len(coins)):.2f})"
            )


def _mean(rs: Sequence[Record], attr: str) -> float:
    return statistics.fmean(getattr(r, attr) for r in rs)


def _targets(
    records: Sequence[Record], default: dict[tuple[object, ...], list[Record]]
) -> Iterator[tuple[bool, str]]:
    """The issue's targets, one line each."""
    lab = {key[:5]: rs for key, rs in default.items() if key[5] == "labgate"}
    git = {key[:5]: rs for key, rs in default.items() if key[5] == "git bisect"}
    noisy = [r for key, rs in lab.items() if key[2:4] != (0.0, 1.0) for r in rs]
    if noisy:
        right = sum(r.correct for r in noisy)
        low, high = wilson(right, len(noisy))
        worst, where = min((_mean(rs, "correct"), key) for key, rs in lab.items())
        yield (
            right / len(noisy) >= 0.99 and worst >= 0.97,
            f"default mode, pooled accuracy over the noisy cells: {right}/{len(noisy)} ="
            f" {right / len(noisy):.4f}, 95% Wilson interval [{low:.4f}, {high:.4f}]"
            f" (target >= 0.99); worst cell {worst:.3f} at {where} (target >= 0.97)",
        )
    for shape, size in sorted({(r.shape, r.size) for r in records}):
        git0 = git.get((shape, size, 0.0, 1.0, 1))
        det = lab.get((shape, size, 0.0, 1.0, 1))
        if git0 and det:
            runs, floor = _mean(det, "runs"), _mean(det, "floor")
            yield (
                runs <= floor + 1,
                f"{shape} {size} default, deterministic test: {runs:.2f} runs, floor_runs"
                f" {floor:.2f} (+{runs - floor:.2f}; target <= floor_runs + 1), git bisect"
                f" {_mean(git0, 'runs'):.2f}",
            )
        for p, limit in INFORMATION_LIMIT.items():
            cell = lab.get((shape, size, p, 0.5, 1))
            if cell and size == 1000:
                runs = _mean(cell, "runs")
                yield (
                    runs <= 2 * limit,
                    f"{shape} {size} default, q=0.5 p={p}: {runs:.1f} runs = {runs / limit:.2f}x"
                    f" the information limit {limit} (target <= 2x)",
                )
        told = [r for r in records if (r.shape, r.size) == (shape, size) and r.test == "model"]
        told_no = [r for r in told if r.told == "intermittent=no" and r.p == 0.05]
        if git0 and told_no:
            ratio = _mean(told_no, "runs") / _mean(git0, "runs")
            acc = _mean(told_no, "correct")
            yield (
                ratio <= 1.4 and acc >= 0.99,
                f"{shape} {size} --intermittent no, p=0.05: runs {ratio:.3f}x git bisect's at"
                f" p=0 (target <= 1.4), accuracy {acc:.3f} (target >= 0.99)",
            )
        git_runs = {r.trial: r.runs for r in git0 or ()}
        det_told = [r for r in told if r.told == "deterministic" and r.k == 1]
        if det_told and git_runs:
            over = [r.runs - git_runs[r.trial] for r in det_told if r.trial in git_runs]
            acc = _mean(det_told, "correct")
            yield (
                max(over) <= 1 and acc == 1.0,
                f"{shape} {size} --flaky no --intermittent no: runs - git bisect's on each"
                f" history: mean {statistics.fmean(over):+.2f}, max {max(over):+d} (target <= +1),"
                f" accuracy {acc:.3f} (target 1.00)",
            )
        broken = [r for r in records if (r.shape, r.size) == (shape, size) and r.test in BROKEN]
        if broken:
            named = sum(r.named for r in broken)
            yield (
                named == 0,
                f"{shape} {size} broken tests (always pass, always fail, random 50%):"
                f" {named} culprits named in {len(broken)} searches (target 0)",
            )
        for p in FLAKE_RATES:
            for q in DETECTION_RATES:
                one = lab.get((shape, size, p, q, 1))
                four = lab.get((shape, size, p, q, 4))
                if one and four:
                    ratio = _mean(four, "rounds") / _mean(one, "rounds")
                    yield (
                        ratio <= 0.35,
                        f"{shape} {size} p={p} q={q}: rounds k=4 / k=1 = {ratio:.3f}"
                        f" (target <= 0.35)",
                    )


def wilson(right: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for z = 1.96)."""
    phat = right / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def engine_version() -> str:
    """The commit of the labgate source benchmarked, and whether the engine had local changes."""
    source = Path(labgate.bisect.engine.__file__).parent
    head = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(source), "status", "--porcelain", "--", "."],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head or 'unknown'}{' with uncommitted changes in bisect/' if dirty else ''}"


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="histories per shape and size")
    parser.add_argument("--sizes", default="1000", help="history sizes, comma-separated")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="linear,merges")
    parser.add_argument(
        "--real-trials",
        type=int,
        default=3,
        help="trials per shape and size where labgate runs for real (worktrees)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="trials run at once (processes; 2 at most)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cells",
        default=",".join(CELLS),
        help="which cells to run, for a quicker look at a few: default (side by side with git"
        " bisect), told, broken; comma-separated (git bisect still runs at p=0, q=1)",
    )
    parser.add_argument(
        "--noise",
        metavar="P:Q,...",
        help="only these (p, q) of the side-by-side cells, e.g. 0:1,0.05:0.5 (all by default)",
    )
    parser.add_argument("--no-timing", action="store_true", help="skip the 10,000-commit timing")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="5 trials of 1,000 commits, 1 real: a smoke run of a few minutes",
    )
    parser.add_argument(
        "--save",
        type=Path,
        help="write every record as JSON lines here, each history's as soon as it is done (a run"
        " stopped early keeps what it measured)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="SAVED",
        help="only print the table of records saved by --save (several files: one table)",
    )
    parser.add_argument(
        "--worktrees",
        type=int,
        metavar="FILES",
        help="only time a run with one worktree per job, --fresh and git bisect, on a"
        " repository of FILES files",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.sizes, args.real_trials = 5, "1000", 1
    if not 1 <= args.workers <= 2:
        parser.error(f"--workers {args.workers}: 1 or 2 (the machine's cores are shared)")
    sizes = [int(s) for s in args.sizes.split(",")]
    shapes = args.shapes.split(",")
    cells = tuple(args.cells.split(","))
    if not set(cells) <= set(CELLS):
        parser.error(f"--cells {args.cells}: among {', '.join(CELLS)}")
    grid = {(p, q) for p in FLAKE_RATES for q in DETECTION_RATES}
    noise = tuple(grid)
    if args.noise:
        pairs = [pq.split(":") for pq in args.noise.split(",")]
        noise = tuple((float(p), float(q)) for p, q in pairs)
        if not set(noise) <= grid:
            parser.error(f"--noise {args.noise}: (p, q) among {sorted(grid)}")
    if shutil.which("git") is None:
        print("bench/bisect.py: git is not installed", file=sys.stderr)
        return 2
    if args.worktrees:
        with tempfile.TemporaryDirectory(prefix="labgate-bench-") as workdir:
            per_run = time_worktrees(args.worktrees, 64, Path(workdir))
        for label, seconds in per_run.items():
            print(f"{args.worktrees} files, seconds per run, {label:16}: {seconds:.3f}")
        return 0
    if args.report:
        saved = [Record(**json.loads(line)) for f in args.report for line in f.open()]
        print(f"{len(saved)} saved records from {', '.join(map(str, args.report))}")
        return 0 if report(saved, None) else 1
    started = time.monotonic()
    version = engine_version()  # before the run: the source may change while it goes
    with tempfile.TemporaryDirectory(prefix="labgate-bench-") as workdir:
        trials = [
            Trial(shape, size, t, t < args.real_trials, Path(workdir), args.seed, cells, noise)
            for size in sizes
            for shape in shapes
            for t in range(args.trials)
        ]
        records: list[Record] = []
        if args.save:
            args.save.write_text("")
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            for done, batch in enumerate(pool.map(run_trial, trials), 1):
                records += batch
                if args.save:
                    with args.save.open("a") as out:
                        out.writelines(json.dumps(asdict(r)) + "\n" for r in batch)
                print(
                    f"\r{done}/{len(trials)} histories ({time.monotonic() - started:.0f} s)",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        print(file=sys.stderr)
    timing = None if args.no_timing else time_decisions(TIMING_SIZE, args.seed)
    print(
        f"{args.trials} trials per shape and size ({args.real_trials} with labgate's real runner),"
        f" seed {args.seed}, engine {version}, {time.monotonic() - started:.0f} s"
    )
    return 0 if report(records, timing) else 1


if __name__ == "__main__":
    sys.exit(main())
