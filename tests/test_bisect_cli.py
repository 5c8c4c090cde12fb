"""``labgate bisect run`` end to end: real repositories, real test commands, a real process.

Every test builds a git repository in tmp_path whose commits carry the test command itself
(``test.sh``) and a file ``bad`` from the planted culprit on. The command appends a line to a
counter file outside the repository on every run, so runs are counted by the command itself.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitrepos import GitRepo
from labgate.bisect.run import outcome_of_status
from procs import gone_within

# Fails from the planted culprit on; 125 where a file `skip` exists; stops the search (exit 200)
# before counting once LIMIT runs were made.
TEST_SH = """#!/bin/sh
if [ -n "$LIMIT" ] && [ "$(wc -l < "$COUNTER" 2>/dev/null || echo 0)" -ge "$LIMIT" ]; then
    exit 200
fi
echo "$LABGATE_BISECT_COMMIT" >> "$COUNTER"
[ -f skip ] && exit 125
[ -f bad ] && exit 1
exit 0
"""

# A flaky test: a good commit fails with probability 0.1, a bad one passes with probability 0.2;
# the coin is seeded by the commit and the number of runs so far, so every run is reproducible.
FLAKY_PY = """import os, pathlib, random, sys
counter = pathlib.Path(os.environ["COUNTER"])
runs = len(counter.read_text().splitlines()) if counter.exists() else 0
with counter.open("a") as out:
    out.write(os.environ["LABGATE_BISECT_COMMIT"] + "\\n")
coin = random.Random(f"{os.environ['LABGATE_BISECT_COMMIT']}:{runs}").random()
sys.exit((coin >= 0.2) if pathlib.Path("bad").exists() else (coin < 0.1))
"""

# Reports its pid and its child's to a FIFO, then waits on the child, which never ends by itself.
# `labgate bisect run` in this Python, whatever is on PATH.
BISECT_RUN = [sys.executable, "-c", "from labgate.cli import main; main()", "bisect", "run"]

HANG_SH = """#!/bin/sh
sleep 300 &
echo "$$ $!" > "$FIFO"
wait
"""


@dataclass(frozen=True)
class History:
    repo: GitRepo
    good: str
    bad: str
    culprit: str
    commits: tuple[str, ...]  # every commit after good, oldest first


@dataclass(frozen=True)
class Ran:
    status: int
    stdout: str
    stderr: str


def linear(tmp_path: Path, n: int = 24, culprit_at: int = 15, **marks: int) -> History:
    """good, then n commits; `bad` appears at commit culprit_at (1-based); marks put a file
    (`skip`) at the given commit only."""
    repo = GitRepo.init(tmp_path / "repo")
    repo.write({"test.sh": TEST_SH, "flaky.py": FLAKY_PY, "hang.sh": HANG_SH})
    repo.git("update-index", "--chmod=+x", "test.sh", "hang.sh")
    good = repo.commit("base")
    commits = []
    for i in range(1, n + 1):
        files: dict[str, str | None] = {"version": f"{i}\n"}
        if i == culprit_at:
            files["bad"] = "planted\n"
        for name, at in marks.items():
            if i == at:
                files[name] = "\n"
            elif i == at + 1:
                files[name] = None
        # Brackets in subjects must reach the user as they are (no markup interpretation).
        message = f"[PATCH] change {i} [/x]"
        commits.append(repo.commit(message, files=files, author=("Ann", "ann@example.org")))
    return History(repo, good, commits[-1], commits[culprit_at - 1], tuple(commits))


def with_merges(tmp_path: Path) -> History:
    """master and two topic branches merged back; the culprit is inside the second topic."""
    repo = GitRepo.init(tmp_path / "repo")
    repo.write({"test.sh": TEST_SH})
    repo.git("update-index", "--chmod=+x", "test.sh")
    good = repo.commit("base")
    commits: list[str] = []
    culprit = ""
    for topic in ("one", "two"):
        repo.git("checkout", "-q", "-b", topic, "master")
        for i in range(6):
            files = {f"{topic}.txt": f"{i}\n"}
            if topic == "two" and i == 3:
                files["bad"] = "planted\n"
            commits.append(repo.commit(f"{topic} {i}", files=files))
            if topic == "two" and i == 3:
                culprit = commits[-1]
        repo.git("checkout", "-q", "master")
        for i in range(4):
            commits.append(repo.commit(f"master {topic} {i}", files={"master.txt": f"{i}\n"}))
        commits.append(repo.merge(topic, message=f"Merge {topic}"))
    return History(repo, good, commits[-1], culprit, tuple(commits))


def labgate(
    repo: Path,
    *args: str,
    counter: Path | None = None,
    env: dict[str, str] | None = None,
) -> Ran:
    done = subprocess.run(
        [*BISECT_RUN, *args],
        cwd=repo,
        env=_env(counter, env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def search(
    h: History,
    *command: str,
    options: Sequence[str] = (),
    counter: Path | None = None,
    env: dict[str, str] | None = None,
) -> Ran:
    """`bisect run --good GOOD --bad BAD OPTIONS -- COMMAND` over the whole history `h`."""
    return labgate(
        h.repo.path, *goods(h.good), "--bad", h.bad, *options, "--", *command,
        counter=counter, env=env,
    )  # fmt: skip


def _env(counter: Path | None, extra: dict[str, str] | None) -> dict[str, str]:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    env["COUNTER"] = str(counter or os.devnull)
    return {**env, **(extra or {})}


def runs(counter: Path) -> list[str]:
    return counter.read_text().split() if counter.exists() else []


def snapshot(repo: GitRepo) -> tuple[str, ...]:
    """HEAD (symbolic and resolved), index, working tree state and the worktree list."""
    return (
        repo.git("symbolic-ref", "-q", "HEAD"),
        repo.rev("HEAD"),
        repo.git("write-tree"),
        repo.git("status", "--porcelain=v1", "--untracked-files=all"),
        repo.git("diff"),
        repo.git("worktree", "list", "--porcelain"),
    )


def goods(*revs: str) -> Sequence[str]:
    return [arg for rev in revs for arg in ("--good", rev)]


# --- finding the culprit ----------------------------------------------------------------------


def test_linear_history_names_the_culprit_and_writes_json(tmp_path: Path) -> None:
    h = linear(tmp_path)
    counter, report = tmp_path / "counter", tmp_path / "result.json"
    ran = search(h, "./test.sh", options=["--json", str(report)], counter=counter)
    assert ran.status == 0, ran.stderr
    first = ran.stdout.splitlines()[0]
    assert first.startswith(f"{h.culprit} is the first bad commit (confidence ")
    assert "Ann <ann@example.org>" in ran.stdout
    assert "[PATCH] change 15 [/x]" in ran.stdout
    result = json.loads(report.read_text())
    assert set(result) == {
        "culprit",
        "confidence",
        "runs",
        "rounds",
        "resumed",
        "cancelled",
        "reason",
        "message",
        "candidates",
        "good_end_fails",
        "bad_end_passes",
        "fails_at_random",
        "flake_rate",
        "detection_rate",
        "observations",
        "log_dir",
        "logs",
    }
    assert result["culprit"] == h.culprit
    assert result["reason"] is None
    assert result["confidence"] >= 0.99
    assert result["runs"] == len(runs(counter)) == len(result["observations"])
    assert result["rounds"] == result["runs"]  # one run at a time: a round per run
    # one number everywhere: the text says what the JSON says
    assert f"after {result['runs']} runs in {result['rounds']} rounds)" in first
    assert result["candidates"][0][0] == h.culprit
    assert all(len(pair) == 2 and 0 <= pair[1] <= 1 for pair in result["candidates"])
    assert len(result["candidates"]) <= 5
    by_commit = {o["commit"]: o["outcome"] for o in result["observations"]}
    assert by_commit == {c: "bad" if c in h.commits[14:] else "good" for c in runs(counter)}


def test_merges_in_parallel_and_json_on_stdout(tmp_path: Path) -> None:
    h = with_merges(tmp_path)
    counter = tmp_path / "counter"
    ran = labgate(
        h.repo.path,
        *goods(h.good),
        "--bad",
        "master",
        "--jobs",
        "3",
        "--json",
        "-",
        "--",
        "./test.sh",
        counter=counter,
    )
    assert ran.status == 0, ran.stderr
    result = json.loads(ran.stdout)  # stdout is the JSON document alone
    assert result["culprit"] == h.culprit
    assert f"{h.culprit} is the first bad commit" in ran.stderr
    # Runs still going when the culprit was named were killed: started, counted, not observed.
    assert result["runs"] == len(result["observations"])
    assert result["runs"] <= len(runs(counter)) <= result["runs"] + result["cancelled"]
    assert result["cancelled"] < 3
    assert result["rounds"] < result["runs"]  # some runs overlapped


def test_first_parent_names_the_merge(tmp_path: Path) -> None:
    h = with_merges(tmp_path)
    ran = labgate(
        h.repo.path,
        *goods(h.good),
        "--bad",
        "master",
        "--first-parent",
        "--json",
        "-",
        "--",
        "./test.sh",
    )
    assert ran.status == 0, ran.stderr
    assert json.loads(ran.stdout)["culprit"] == h.bad  # the merge of topic two


def test_flaky_test_still_finds_the_culprit(tmp_path: Path) -> None:
    h = linear(tmp_path, n=30, culprit_at=11)
    counter = tmp_path / "counter"
    ran = search(h, sys.executable, "flaky.py", options=["--json", "-"], counter=counter)
    assert ran.status == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["culprit"] == h.culprit
    assert result["confidence"] >= 0.99
    assert result["runs"] == len(runs(counter))


def test_skipped_commit_is_tested_around(tmp_path: Path) -> None:
    h = linear(tmp_path, culprit_at=15, skip=12)
    counter = tmp_path / "counter"
    ran = search(h, "./test.sh", options=["--json", "-"], counter=counter)
    assert ran.status == 0, ran.stderr
    assert json.loads(ran.stdout)["culprit"] == h.culprit


def test_skip_next_to_the_culprit_leaves_it_undecided(tmp_path: Path) -> None:
    h = linear(tmp_path, culprit_at=15, skip=14)
    ran = search(h, "./test.sh", options=["--json", "-"])
    assert ran.status == 1, ran.stderr
    result = json.loads(ran.stdout)
    assert result["culprit"] is None
    assert result["reason"] == "skipped-commits"
    assert "untestable commits" in result["message"]
    assert {c for c, _ in result["candidates"]} >= {h.commits[13], h.culprit}
    assert "no culprit" in ran.stderr


@pytest.mark.parametrize("option", ["--max-runs", "--max-executions"])
def test_max_runs_gives_up_undecided(tmp_path: Path, option: str) -> None:
    h = linear(tmp_path, n=60, culprit_at=31)
    counter = tmp_path / "counter"
    ran = search(h, "./test.sh", options=[option, "2", "--json", "-"], counter=counter)
    assert ran.status == 1, ran.stderr
    result = json.loads(ran.stdout)
    assert result["culprit"] is None
    assert result["reason"] == "max-runs"
    assert len(runs(counter)) == 2


# --- resuming ---------------------------------------------------------------------------------


def test_interrupted_search_resumes_without_repeating_work(tmp_path: Path) -> None:
    h = linear(tmp_path, n=40, culprit_at=23)
    counter, observations = tmp_path / "counter", tmp_path / "obs.jsonl"
    options = ["--observations", str(observations), "--json", "-"]

    first = search(h, "./test.sh", options=options, counter=counter, env={"LIMIT": "3"})
    assert first.status == 1
    assert "exited with status 200" in first.stderr and "aborted" in first.stderr
    saved = [json.loads(line) for line in observations.read_text().splitlines()]
    assert [o["commit"] for o in saved] == runs(counter)
    assert len(saved) == 3

    second = search(h, "./test.sh", options=options, counter=counter)
    assert second.status == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["culprit"] == h.culprit
    assert result["observations"][:3] == saved
    assert result["resumed"] == 3
    assert result["runs"] - result["resumed"] == len(runs(counter)) - 3 == len(result["logs"])

    before = runs(counter)
    third = search(h, "./test.sh", options=options, counter=counter)
    assert third.status == 0
    assert json.loads(third.stdout)["logs"] == []
    assert runs(counter) == before


def test_observations_of_another_range_are_ignored(tmp_path: Path) -> None:
    h = linear(tmp_path, n=4, culprit_at=2)
    observations = tmp_path / "obs.jsonl"
    observations.write_text(json.dumps({"commit": "0" * 40, "outcome": "bad"}) + "\n")
    ran = search(h, "./test.sh", options=["--observations", str(observations), "--json", "-"])
    assert ran.status == 0, ran.stderr
    assert "1 observations outside this range ignored" in ran.stderr
    assert json.loads(ran.stdout)["culprit"] == h.culprit


def test_bad_observations_file_is_a_usage_error(tmp_path: Path) -> None:
    h = linear(tmp_path, n=4, culprit_at=2)
    observations = tmp_path / "obs.jsonl"
    observations.write_text('{"commit": "abc", "outcome": "good"}\nnot json\n')
    ran = search(h, "./test.sh", options=["--observations", str(observations)])
    assert ran.status == 2
    assert f"{observations}:2" in ran.stderr
    assert "Traceback" not in ran.stderr


# --- the exit status of the command and of labgate --------------------------------------------


def test_status_128_or_more_aborts_the_search(tmp_path: Path) -> None:
    h = linear(tmp_path, n=8, culprit_at=6)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    ran = search(
        h, "sh", "-c", "echo giving up here; exit 129",
        options=["--json", "-"], env={"TMPDIR": str(tmp)},
    )  # fmt: skip
    assert ran.status == 1
    assert "exited with status 129 at " in ran.stderr
    assert "giving up here" in ran.stderr  # the tail of the command's output
    result = json.loads(ran.stdout)
    assert result["culprit"] is None
    assert result["reason"] == "aborted"
    assert "aborted" in result["message"]
    assert result["observations"] == []
    assert list(tmp.iterdir()) == []
    assert len(h.repo.git("worktree", "list").splitlines()) == 1


def test_unwritable_observations_file_is_one_message(tmp_path: Path) -> None:
    h = linear(tmp_path, n=4, culprit_at=2)
    missing = tmp_path / "no-such-dir" / "obs.jsonl"
    ran = search(h, "./test.sh", options=["--observations", str(missing)])
    assert ran.status == 2
    assert "No such file or directory" in ran.stderr
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--good", "no-such-rev", "--bad", "HEAD", "--", "./test.sh"], "unknown revision"),
        (["--good", "HEAD", "--bad", "HEAD~2", "--", "./test.sh"], "is not an ancestor of"),
        (["--good", "HEAD~2", "--bad", "HEAD"], "no command"),
        (["--good", "HEAD~2", "--", "./test.sh"], "--bad"),
        (["--bad", "HEAD", "--", "./test.sh"], "--good"),
        (["--good", "HEAD~2", "--bad", "HEAD", "--", "no-such-command-x"], "cannot run"),
    ],
)
def test_usage_errors_exit_2_with_one_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    h = linear(tmp_path, n=3, culprit_at=2)
    ran = labgate(h.repo.path, *args)
    assert ran.status == 2
    assert message in ran.stderr
    assert "Traceback" not in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1


def test_outside_a_repository_is_a_usage_error(tmp_path: Path) -> None:
    ran = labgate(tmp_path, "--good", "a", "--bad", "b", "--", "true")
    assert ran.status == 2
    assert "not inside a git repository" in ran.stderr


# --- the user's checkout, and Ctrl-C ----------------------------------------------------------


def test_user_checkout_is_untouched(tmp_path: Path) -> None:
    h = linear(tmp_path)
    (h.repo.path / "version").write_text("edited, not staged\n")
    (h.repo.path / "staged.txt").write_text("staged\n")
    h.repo.git("add", "staged.txt")
    (h.repo.path / "untracked.txt").write_text("untracked\n")
    before = snapshot(h.repo)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    ran = search(h, "./test.sh", options=["-j", "2"], env={"TMPDIR": str(tmp)})
    assert ran.status == 0, ran.stderr
    assert snapshot(h.repo) == before
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("target", ["process", "terminal"])
def test_ctrl_c_kills_the_commands_and_removes_every_worktree(tmp_path: Path, target: str) -> None:
    """SIGINT to labgate alone, or to its whole process group as a terminal's Ctrl-C does."""
    h = linear(tmp_path, n=20, culprit_at=9)
    (h.repo.path / "untracked.txt").write_text("untracked\n")
    before = snapshot(h.repo)
    fifo, tmp = tmp_path / "fifo", tmp_path / "tmp"
    os.mkfifo(fifo)
    tmp.mkdir()
    process = subprocess.Popen(
        [
            *BISECT_RUN,
            *goods(h.good),
            "--bad",
            h.bad,
            "-j",
            "2",
            "--",
            "./hang.sh",
        ],
        cwd=h.repo.path,
        env=_env(None, {"FIFO": str(fifo), "TMPDIR": str(tmp)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, like a job started at a terminal
    )
    try:
        pids: list[int] = []
        while len(pids) < 4:  # both runs started: each reports its shell's pid and its child's
            with fifo.open() as reports:
                pids += [int(pid) for pid in reports.read().split()]
        assert len(h.repo.git("worktree", "list").splitlines()) == 3  # while the runs go on
        if target == "terminal":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    assert [pid for pid in pids if not gone_within(pid)] == []
    assert list(tmp.iterdir()) == []
    assert snapshot(h.repo) == before
    assert not (h.repo.path / ".git" / "worktrees").exists() or not any(
        (h.repo.path / ".git" / "worktrees").iterdir()
    )


def test_live_progress_on_a_terminal(tmp_path: Path) -> None:
    h = linear(tmp_path)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*BISECT_RUN, *goods(h.good), "--bad", h.bad, "-j", "2", "--", "./test.sh"],
        cwd=h.repo.path,
        env=_env(None, {"TERM": "xterm", "COLUMNS": "200"}),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    screen = b""
    while True:  # until the process is gone and the terminal hangs up
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = screen.decode(errors="replace")
    assert "round " in text and "runs done" in text and "leading " in text
    assert f"{h.culprit} is the first bad commit" in text


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0, "good"),
        (1, "bad"),
        (124, "bad"),
        (125, "skip"),
        (126, "bad"),
        (127, "bad"),
        (128, None),
        (255, None),
        (-9, None),
    ],
)
def test_exit_status_means_what_it_means_to_git_bisect_run(
    status: int, outcome: str | None
) -> None:
    assert outcome_of_status(status) == outcome


# --- a broken test names no culprit -----------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "code", "says"),
    [
        (["sh", "-c", "exit 0"], "bad-end-passes", "never failed at the bad end"),
        (["sh", "-c", "echo it broke; exit 1"], "good-end-fails", "already fails at the good end"),
    ],
)
def test_a_test_that_never_changes_ends_undecided_naming_the_end_to_check(
    tmp_path: Path, command: list[str], code: str, says: str
) -> None:
    h = linear(tmp_path, n=30, culprit_at=12)
    ran = search(h, *command, options=["--json"])
    assert ran.status == 1, ran.stderr
    result = json.loads(ran.stdout)
    assert result["culprit"] is None
    assert result["reason"] == code
    assert says in result["message"]
    end = h.bad if code == "bad-end-passes" else h.good
    assert end in {o["commit"] for o in result["observations"]}  # the accused end was run
    line = [x for x in ran.stderr.splitlines() if x.startswith("no culprit after ")]
    assert len(line) == 1 and says in line[0]
    assert f"after {result['runs']} runs in {result['rounds']} rounds" in line[0]


# --- the test's output -------------------------------------------------------------------------


def test_every_run_keeps_its_output_and_a_failing_run_shows_its_last_lines(tmp_path: Path) -> None:
    h = linear(tmp_path, n=12, culprit_at=5)
    logs = tmp_path / "logs"
    script = (
        'echo "checking $LABGATE_BISECT_COMMIT"; '
        '[ -f bad ] && echo "assertion x failed" && exit 1; exit 0'
    )
    ran = search(h, "sh", "-c", script, options=["--json", "--log-dir", str(logs)])
    assert ran.status == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["log_dir"] == str(logs)
    assert len(result["logs"]) == result["runs"] == len(list(logs.iterdir()))
    for run in result["logs"]:
        text = Path(run["log"]).read_text()
        assert f"checking {run['commit']}" in text
        assert ("assertion x failed" in text) == (run["outcome"] == "bad")
        assert run["exit_status"] == (1 if run["outcome"] == "bad" else 0)
    failing = [run for run in result["logs"] if run["outcome"] == "bad"]
    assert failing
    assert ran.stderr.count("| assertion x failed") == len(failing)
    assert all(f"log: {run['log']}" in ran.stderr for run in failing)

    # the same directory again: the earlier logs are kept, the new ones numbered after them
    again = search(h, "sh", "-c", script, options=["--json", "--log-dir", str(logs)])
    assert again.status == 0
    assert len(list(logs.iterdir())) == result["runs"] + json.loads(again.stdout)["runs"]


def test_default_log_dir_is_inside_the_git_directory(tmp_path: Path) -> None:
    h = linear(tmp_path, n=6, culprit_at=3)
    before = snapshot(h.repo)
    ran = search(h, "./test.sh", options=["--json"])
    assert ran.status == 0, ran.stderr
    log_dir = Path(json.loads(ran.stdout)["log_dir"])
    assert log_dir.parent == h.repo.path / ".git" / "labgate-bisect"
    assert len(list(log_dir.glob("run-*.log"))) == json.loads(ran.stdout)["runs"]
    assert snapshot(h.repo) == before  # not in the work tree: git status is unchanged


def test_verbose_streams_every_line_of_every_run(tmp_path: Path) -> None:
    h = linear(tmp_path, n=6, culprit_at=3)
    script = 'echo "hello from $LABGATE_BISECT_COMMIT"; [ -f bad ] && exit 1; exit 0'
    ran = search(h, "sh", "-c", script, options=["-v", "--json"])
    assert ran.status == 0, ran.stderr
    for commit in {o["commit"] for o in json.loads(ran.stdout)["observations"]}:
        assert f"[{commit[:10]}] hello from {commit}" in ran.stderr


# --- worktrees ----------------------------------------------------------------------------------

# An incremental "build": counts the runs that found the previous build output in place.
BUILD_SH = """if [ -f build.out ]; then echo reused >> "$COUNTER.reused"; fi
echo built > build.out
[ -f bad ] && exit 1
exit 0
"""


@pytest.mark.parametrize("fresh", [False, True])
def test_one_worktree_per_job_keeps_untracked_build_outputs_unless_fresh(
    tmp_path: Path, fresh: bool
) -> None:
    h = linear(tmp_path, n=30, culprit_at=17)
    counter = tmp_path / "counter"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    options = ["--json", *(["--fresh"] if fresh else [])]
    ran = search(
        h, "sh", "-c", BUILD_SH, options=options, counter=counter, env={"TMPDIR": str(tmp)}
    )
    assert ran.status == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["culprit"] == h.culprit
    reused = Path(f"{counter}.reused")
    reused_runs = len(reused.read_text().splitlines()) if reused.exists() else 0
    # one worktree: every run after the first found the build output; fresh: none did
    assert reused_runs == (0 if fresh else result["runs"] - 1)
    assert list(tmp.iterdir()) == []
    assert len(h.repo.git("worktree", "list").splitlines()) == 1


# --- timeouts and the JSON path -----------------------------------------------------------------


@pytest.mark.parametrize("means", ["skip", "bad"])
def test_a_hanging_run_times_out_and_counts_as_told(tmp_path: Path, means: str) -> None:
    h = linear(tmp_path, n=16, culprit_at=9, hang=8)
    # hangs where the file `hang` exists (commit 8 only), otherwise the usual test
    script = "if [ -f hang ]; then exec sleep 300; fi; [ -f bad ] && exit 1; exit 0"
    options = ["--timeout", "1", "--timeout-means", means, "--json"]
    ran = search(h, "sh", "-c", script, options=options)
    result = json.loads(ran.stdout)
    timed_out = [run for run in result["logs"] if run["timed_out"]]
    assert timed_out and {run["commit"] for run in timed_out} == {h.commits[7]}
    assert all(run["outcome"] == means for run in timed_out)
    assert "timed out after" in ran.stderr
    if means == "skip":  # the parent of the culprit cannot be tested: either may be it
        assert ran.status == 1 and result["reason"] == "skipped-commits"
        assert {c for c, _ in result["candidates"][:2]} == {h.commits[7], h.culprit}
    else:  # told a hang means bad, commit 8 looks bad: it is blamed, as the user asked
        assert ran.status == 0 and result["culprit"] == h.commits[7]


def test_json_path_that_cannot_be_written_fails_before_any_run(tmp_path: Path) -> None:
    h = linear(tmp_path, n=6, culprit_at=3)
    counter = tmp_path / "counter"
    where = tmp_path / "no-such-dir" / "result.json"
    ran = search(h, "./test.sh", options=["--json", str(where)], counter=counter)
    assert ran.status == 2
    assert f"--json {where}: cannot write there" in ran.stderr
    assert runs(counter) == []
    assert "Traceback" not in ran.stderr


# --- what the user knows -------------------------------------------------------------------------


def test_told_deterministic_costs_git_bisects_runs(tmp_path: Path) -> None:
    h = linear(tmp_path, n=32, culprit_at=20)
    counter = tmp_path / "counter"
    options = ["--flaky", "no", "--intermittent", "no", "--json"]
    ran = search(h, "./test.sh", options=options, counter=counter)
    assert ran.status == 0, ran.stderr
    assert json.loads(ran.stdout)["culprit"] == h.culprit
    assert len(runs(counter)) <= 5 + 1  # git bisect: log2(32) = 5 halvings
