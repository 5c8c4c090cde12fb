"""Benchmark: static analysis findings tracked across 200 commits of real C code.

    python bench/sarif.py                      # 200 commits, 10,000 findings a revision
    python bench/sarif.py --commits 60 --timing-revisions 3      # quicker
    python bench/sarif.py --database URL       # time the store on PostgreSQL (an empty database)

The code base: ten files of mypyc's C runtime (``mypyc/lib-rt/*_ops.c``, ``getargs.c``, about 3,500
lines; mypy, which ships them, is in labgate's test extra). A seeded script makes a git history of
``--commits`` commits on them; each commit does one of: *add* a defect cppcheck finds (a memory
leak, an array index out of bounds, a null pointer dereference, an uninitialised variable, a
division by zero) at the top of a real function, *fix* one (remove it), or *move* one without
changing it: shift its file's lines (a comment block on top), rename its function, reindent its
function, or edit another line of its function (which changes cppcheck's own ``hash/v1``
fingerprint of the function). Every revision is analysed by the real cppcheck (PyPI's
``cppcheck-py``; only the file a commit changed is analysed again, the rest is cached by
content), and read with ``labgate.findings.sarif``.

Printed:

- **matching**: each revision's findings compared with the previous revision's
  (``labgate.findings.compare``). The truth comes from the code: a planted defect is named by its
  variables (``lg_<kind>_<n>``, in cppcheck's message or on the line it points at); cppcheck's
  findings in the real code are counted by rule, message and file. A finding reported new or
  fixed where the truth has no such change is *misreported* (a moved finding shown as new +
  fixed counts twice); a change the truth has that was not reported is *missed*.
- **blame**: the history cut into flights of ``--flight-span`` commits; every new planted finding
  of a flight is blamed with the bisection engine told the test is deterministic, on the one
  search loop (``labgate.bisect.loop.drive``), the test at a commit being "is this finding among
  that revision's findings" (``labgate.findings.blame.present``'s matching). Accuracy: culprits
  equal to the commit that planted the defect (the last time it appeared, if it came and went).
- **time**: ``--timing-findings`` findings a revision (the real findings of each revision,
  copied into as many directories as it takes), stored in a flight's step
  (``Store.record_findings``) and compared with the revision before
  (``labgate.findings.report.flight_comparison``: the store's reads, triage, blame, comparison),
  over ``--timing-revisions`` revisions; seconds per revision (mean and max).

Targets: 0 moved findings misreported, blame accuracy 1.00, < 1 s per revision at 10,000 findings.
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
import gc
import hashlib
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise

import mypyc

from labgate.bisect.engine import Answer, Observation, Search
from labgate.bisect.gitgraph import read_range
from labgate.bisect.loop import drive
from labgate.findings.compare import State, compare, match
from labgate.findings.model import Finding
from labgate.findings.report import flight_comparison
from labgate.findings.sarif import parse_sarif
from labgate.model import Blessing, FlightState, JobSpec, StepSpec
from labgate.model import Outcome as StepOutcome
from labgate.store import Store

SOURCES = (
    "dict_ops.c", "list_ops.c", "int_ops.c", "str_ops.c", "exc_ops.c",
    "set_ops.c", "tuple_ops.c", "bytes_ops.c", "getargs.c", "generic_ops.c",
)  # fmt: skip
CPPCHECK = Path(sys.executable).parent / "cppcheck"
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.org",
}
PLANTED = re.compile(r"\blg_[a-z]+_(\d+)\b")
# a defect: the lines planted, {n} its number (each line names the defect's variables)
DEFECTS = {
    "leak": ["char *lg_leak_{n} = malloc(16);", "if (lg_leak_{n}) lg_leak_{n}[0] = 0;"],
    "oob": ["int lg_arr_{n}[4];", "lg_arr_{n}[4] = 0;"],
    "null": ["int *lg_np_{n} = NULL;", "*lg_np_{n} = 0;"],
    "uninit": ["int lg_un_{n};", "int lg_unr_{n} = lg_un_{n} + 1;", "(void)lg_unr_{n};"],
    "zerodiv": ["int lg_zd_{n} = 0;", "int lg_zdr_{n} = 10 / lg_zd_{n};", "(void)lg_zdr_{n};"],
}
ACTIONS = ("add", "add", "fix", "shift", "rename", "reindent", "edit")
HEADER = re.compile(r"^[A-Za-z_][\w\s\*,]*?\b([A-Za-z_]\w*)\s*\(")


# --- the history ------------------------------------------------------------------------------


@dataclass
class Tree:
    """The C files as lists of lines, and which planted defects are in which file."""

    files: dict[str, list[str]]
    planted: dict[int, str] = field(default_factory=dict)  # defect number -> file
    renamed: int = 0

    def bodies(self, name: str) -> list[tuple[int, int]]:
        """(line index of the opening brace, of the closing brace) of each function."""
        lines = self.files[name]
        out = []
        for i, line in enumerate(lines):
            opening = line == "{" and i > 0 and HEADER.match(lines[i - 1])
            inline = HEADER.match(line) and line.rstrip().endswith("{") and ";" not in line
            if opening or inline:
                end = next((j for j in range(i + 1, len(lines)) if lines[j] == "}"), None)
                if end is not None:
                    out.append((i, end))
        return out

    def body_of(self, name: str, defect: int) -> tuple[int, int] | None:
        """The function holding a planted defect."""
        for start, end in self.bodies(name):
            if any(planted(line, defect) for line in self.files[name][start:end]):
                return start, end
        return None


def planted(line: str, defect: int) -> bool:
    """Whether a line is one of the lines of planted defect number ``defect``."""
    return any(m.group(1) == str(defect) for m in PLANTED.finditer(line))


def make_commit(tree: Tree, rng: random.Random, number: int) -> tuple[str, str]:
    """Change the tree by one action; returns (the file changed, the commit message)."""
    action = rng.choice(ACTIONS) if tree.planted else "add"
    if action != "add":
        defect = rng.choice(sorted(tree.planted))
        name = tree.planted[defect]
        lines = tree.files[name]
        body = tree.body_of(name, defect)
        if body is None:
            action = "add"
    if action == "add":
        name = rng.choice([n for n in sorted(tree.files) if tree.bodies(n)])
        bodies = tree.bodies(name)
        start, _ = rng.choice(bodies)
        kind = rng.choice(sorted(DEFECTS))
        indent = _indent(tree.files[name], start)
        tree.files[name][start + 1 : start + 1] = [
            indent + line.format(n=number) for line in DEFECTS[kind]
        ]
        tree.planted[number] = name
        return name, f"add {kind} defect {number}"
    assert body is not None
    start, end = body
    if action == "fix":
        tree.files[name] = [line for line in lines if not planted(line, defect)]
        del tree.planted[defect]
        return name, f"fix defect {defect}"
    if action == "shift":
        block = ["/*", f" * commit {number}: notes on this file", " */", ""]
        tree.files[name] = block + lines
        return name, f"shift {name}"
    if action == "rename":
        header = start - 1 if lines[start] == "{" else start
        found = HEADER.match(lines[header])
        assert found is not None
        tree.renamed += 1
        new = f"{found.group(1)}_r{tree.renamed}"
        lines[header] = lines[header][: found.start(1)] + new + lines[header][found.end(1) :]
        return name, f"rename {found.group(1)} to {new}"
    if action == "reindent":
        for i in range(start + 1, end):
            if lines[i].startswith("    "):
                lines[i] = "\t" + lines[i][4:]
            elif lines[i].startswith("\t"):
                lines[i] = "    " + lines[i][1:]
        return name, f"reindent the function of defect {defect}"
    lines.insert(start + 1, _indent(lines, start) + f"(void){number};")
    return name, f"edit the function of defect {defect}"


def _indent(lines: Sequence[str], start: int) -> str:
    following = lines[start + 1] if start + 1 < len(lines) else ""
    return following[: len(following) - len(following.lstrip())] or "    "


@dataclass
class Revision:
    sha: str
    message: str
    findings: list[Finding]


TRUTH: dict[int, tuple[str, ...]] = {}
"""What each finding (by object: one per analysed file content) is, as the history knows it."""


def build_history(root: Path, commits: int, seed: int) -> tuple[Path, list[Revision]]:
    """A git repository of the sources and ``commits`` commits, each analysed by cppcheck."""
    repo = root / "repo"
    (repo / "src").mkdir(parents=True)
    runtime = Path(mypyc.__file__).parent / "lib-rt"
    tree = Tree({n: (runtime / n).read_text().splitlines() for n in SOURCES})
    rng = random.Random(seed)
    cache: dict[str, list[Finding]] = {}
    current: dict[str, list[Finding]] = {}

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, capture_output=True,
                              text=True, check=True)  # fmt: skip
        return done.stdout.strip()

    def analyse(name: str) -> None:
        text = "\n".join(tree.files[name]) + "\n"
        (repo / "src" / name).write_text(text)
        key = hashlib.sha256(text.encode()).hexdigest()
        if key not in cache:
            out = root / "out.sarif"
            command = [str(CPPCHECK), "-q", "--output-format=sarif", f"--output-file={out}"]
            subprocess.run([*command, f"src/{name}"], cwd=repo, check=True)
            cache[key] = parse_sarif(out, repo, "analyse", "cppcheck")
            lines = {f"src/{name}": tree.files[name]}
            for f in cache[key]:
                TRUTH[id(f)] = truth_key(f, lines)
        current[name] = cache[key]

    git("init", "-q", "-b", "main")
    for name in SOURCES:
        analyse(name)
    git("add", "-A")
    git("commit", "-q", "-m", "mypyc runtime sources")
    history = [Revision(git("rev-parse", "HEAD"), "base", _all(current))]
    for number in range(1, commits + 1):
        name, message = make_commit(tree, rng, number)
        analyse(name)
        git("commit", "-q", "-a", "-m", message)
        history.append(Revision(git("rev-parse", "HEAD"), message, _all(current)))
    return repo, history


def _all(current: Mapping[str, list[Finding]]) -> list[Finding]:
    return [f for name in SOURCES for f in current[name]]


# --- truth ------------------------------------------------------------------------------------


def truth_key(f: Finding, sources: Mapping[str, list[str]]) -> tuple[str, ...]:
    """What a finding is, as the history knows it: a planted defect's number, or the rule,
    message and file of a finding in the real code."""
    found = PLANTED.search(f.message)
    if found is None and f.line:
        lines = sources.get(f.path) or []
        if 0 < f.line <= len(lines):
            found = PLANTED.search(lines[f.line - 1])
    if found is not None:
        return ("planted", found.group(1))
    return ("real", f.rule, f.message, f.path)


@dataclass
class MatchScore:
    revisions: int = 0
    findings: int = 0
    changes: int = 0
    misreported: int = 0
    missed: int = 0
    moves: int = 0
    moved: int = 0
    """Findings matched unchanged whose line or function changed."""
    identity_changed: int = 0
    """Of those, the ones whose identity changed too (matched by their snippet)."""


def score_matching(history: Sequence[Revision]) -> MatchScore:
    score = MatchScore()
    for prev, rev in pairwise(history):
        before = Counter(TRUTH[id(f)] for f in prev.findings)
        now = Counter(TRUTH[id(f)] for f in rev.findings)
        expected_new, expected_fixed = now - before, before - now
        rows = compare(2, rev.findings, 1, prev.findings).rows
        new = Counter(TRUTH[id(r.finding)] for r in rows if r.state is State.NEW)
        fixed = Counter(TRUTH[id(r.finding)] for r in rows if r.state is State.FIXED)
        for r in rows:
            if r.before is not None and (r.before.line, r.before.function) != (
                r.finding.line,
                r.finding.function,
            ):
                score.moved += 1
                score.identity_changed += r.before.identity != r.finding.identity
        score.revisions += 1
        score.findings += len(rev.findings)
        score.changes += sum(expected_new.values()) + sum(expected_fixed.values())
        score.misreported += sum((new - expected_new).values())
        score.misreported += sum((fixed - expected_fixed).values())
        score.missed += sum((expected_new - new).values()) + sum((expected_fixed - fixed).values())
        if not rev.message.startswith(("add", "fix")):
            score.moves += 1
    return score


# --- blame ------------------------------------------------------------------------------------


@dataclass
class BlameScore:
    flights: int = 0
    blamed: int = 0
    right: int = 0
    undecided: int = 0
    runs: int = 0
    wrong: list[str] = field(default_factory=list)


def score_blame(repo: Path, history: Sequence[Revision], span: int) -> BlameScore:
    score = BlameScore()
    by_sha = {r.sha: r for r in history}
    index = {r.sha: i for i, r in enumerate(history)}
    ends = list(range(0, len(history), span))
    if ends[-1] != len(history) - 1:
        ends.append(len(history) - 1)
    for good_i, bad_i in pairwise(ends):
        good, bad = history[good_i], history[bad_i]
        new = [r.finding for r in compare(2, bad.findings, 1, good.findings).of(State.NEW)]
        planted = [(f, TRUTH[id(f)]) for f in new if TRUTH[id(f)][0] == "planted"]
        score.flights += 1
        for finding, key in planted:
            truth = _introduced(history, good_i, bad_i, key)
            culprit, runs = asyncio.run(_bisect(repo, good.sha, bad.sha, by_sha, finding))
            score.blamed += 1
            score.runs += runs
            if culprit is None:
                score.undecided += 1
            elif index[culprit] == truth:
                score.right += 1
            else:
                score.wrong.append(f"defect {key[1]}: blamed {index[culprit]}, truth {truth}")
    return score


def _introduced(history: Sequence[Revision], good_i: int, bad_i: int, key: tuple[str, ...]) -> int:
    """The commit (index) from which cppcheck finds the planted defect through to ``bad_i``."""
    first = bad_i
    for i in range(bad_i, good_i, -1):
        if not any(TRUTH[id(f)] == key for f in history[i].findings):
            break
        first = i
    return first


async def _bisect(
    repo: Path, good: str, bad: str, by_sha: Mapping[str, Revision], finding: Finding
) -> tuple[str | None, int]:
    ranges = [read_range(repo, [good], bad, tree="src")]
    search = Search(ranges, flaky="no", intermittent="no")
    runs = 0

    async def test(point: Mapping[str, str]) -> Answer:
        nonlocal runs
        runs += 1
        pairs, _, _ = match([finding], by_sha[point["src"]].findings)
        return "bad" if pairs else "good"

    given = [Observation({"src": bad}, "bad"), Observation({"src": good}, "good")]
    result = await drive(search, given, test)
    culprit = result.decision.culprit if result.decision.kind == "culprit" else None
    return (culprit.commit if culprit else None), runs


# --- time -------------------------------------------------------------------------------------


def time_store(
    history: Sequence[Revision], url: str, size: int, revisions: int
) -> tuple[list[tuple[float, float]], int]:
    """Seconds to store, and to compare, ``size`` findings, for each of ``revisions``
    revisions."""
    job = JobSpec(name="analyse", steps=(StepSpec("cppcheck", "cppcheck", None, "sarif:o"),))
    seconds = []
    per_revision = 0
    with Store.open(url) as store:
        for rev in history[-(revisions + 1) :]:
            copies = -(-size // max(1, len(rev.findings)))
            findings = [
                replace(f, path=f"copy{c}/{f.path}") for c in range(copies) for f in rev.findings
            ][:size]
            per_revision = len(findings)
            fid = store.create_flight("main", Blessing.REAL, {"src": rev.sha}, [job])
            [stored] = store.flight_jobs(fid)
            started = time.perf_counter()
            store.record_findings(stored.step_ids[0], findings)
            store.finish_step(stored.step_ids[0], StepOutcome.PASS, exit_status=0, duration_s=1)
            store.set_flight_state(fid, FlightState.FINISHED, StepOutcome.PASS)
            stored_at = time.perf_counter()
            comparison = flight_comparison(store, fid)
            compared_at = time.perf_counter()
            if comparison.baseline is not None:
                seconds.append((stored_at - started, compared_at - stored_at))
    return seconds, per_revision


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flight-span", type=int, default=20, help="commits a flight spans")
    parser.add_argument("--timing-findings", type=int, default=10_000)
    parser.add_argument("--timing-revisions", type=int, default=10)
    parser.add_argument("--database", help="a PostgreSQL URL (an empty database) to time")
    args = parser.parse_args()
    print(f"load average at the start: {os.getloadavg()[0]:.2f} (a shared machine: see below)")
    with tempfile.TemporaryDirectory(prefix="labgate-bench-sarif-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        repo, history = build_history(root, args.commits, args.seed)
        built = time.perf_counter() - started
        actions = Counter(r.message.split()[0] for r in history[1:])
        sizes = [len(r.findings) for r in history]
        print(f"history: {args.commits} commits of {len(SOURCES)} mypyc runtime files "
              f"({', '.join(f'{a} {n}' for a, n in sorted(actions.items()))}); cppcheck "
              f"findings a revision {min(sizes)}-{max(sizes)}; built and "
              f"analysed in {built:.1f} s")  # fmt: skip
        matching = score_matching(history)
        print(f"matching: {matching.revisions} revisions, {matching.findings} findings compared, "
              f"{matching.changes} true changes (new or fixed), {matching.moves} commits that "
              f"only moved code, {matching.moved} findings moved (line or function changed; "
              f"{matching.identity_changed} of them with a new identity); misreported "
              f"{matching.misreported}, missed {matching.missed}")  # fmt: skip
        blame = score_blame(repo, history, args.flight_span)
        accuracy = blame.right / blame.blamed if blame.blamed else 1.0
        print(f"blame: {blame.flights} flights of {args.flight_span} commits, {blame.blamed} new "
              f"planted findings blamed, right {blame.right}, undecided {blame.undecided}, "
              f"accuracy {accuracy:.2f}, {blame.runs} analysis runs in all")  # fmt: skip
        for wrong in blame.wrong:
            print(f"  wrong: {wrong}")
        url = args.database or f"sqlite:///{root}/labgate.db"
        # the history above (every revision's findings) is the bench's, not the gate's: out of
        # the collector's way, so the timing is of the store and the comparison alone
        gc.collect()
        gc.freeze()
        parts, size = time_store(history, url, args.timing_findings, args.timing_revisions)
        seconds = [store + compared for store, compared in parts]
        storing = statistics.mean(p[0] for p in parts)
        comparing = statistics.mean(p[1] for p in parts)
        kind = "PostgreSQL" if args.database else "SQLite"
        print(f"time ({kind}): {size} findings a revision stored and compared: "
              f"{statistics.mean(seconds):.3f} s mean, {max(seconds):.3f} s max per revision "
              f"over {len(seconds)} revisions (storing {storing:.3f} s, comparing "
              f"{comparing:.3f} s on average)")  # fmt: skip
        shutil.rmtree(repo, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(f"targets: 0 moved findings misreported: {met(matching.misreported == 0)}; blame "
          f"accuracy 1.00: {met(accuracy == 1.0)}; < 1 s a revision: "
          f"{met(statistics.mean(seconds) < 1.0)} on average, {met(max(seconds) < 1.0)} for "
          f"the slowest revision (the machine's load counts: see above)")  # fmt: skip


if __name__ == "__main__":
    main()
