"""The push gate end to end: real git upstreams, real flights, real pushes, real bisections."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from gitrepos import GitRepo
from labgate.config import load_lab
from labgate.gate import Gate, GateResult
from labgate.model import Blessing, Outcome
from labgate.store import Store
from labs import job, labgate, local_host, step, toml_str

BUILD = 'cp xen/VERSION "$LABGATE_ARTIFACTS/xen.img"'
# the test fails when the tree carries a file called "bug"
TEST = "test -f artifacts/build/xen.img && test ! -e xen/bug"


class Upstream:
    """A bare upstream repository (what the lab fetches from and pushes to) and a developer's
    clone that commits and pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "upstream" / "xen.git"
        self.bare.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "--bare", str(self.bare)], check=True)
        self.dev = GitRepo.init(root / "dev")
        self.dev.git("remote", "add", "origin", str(self.bare))

    def commit(self, message: str, files: dict[str, str | None], author: tuple[str, str]) -> str:
        return self.dev.commit(message, files=files, author=author)  # type: ignore[arg-type]

    def push(self, sha: str, ref: str) -> None:
        self.dev.git("push", "-q", "--force", "origin", f"{sha}:refs/heads/{ref}")

    def ref(self, ref: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(self.bare), "rev-parse", ref],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip


def write_gate_lab(root: Path, upstream: Upstream, *, database: str | None, extra: str = "",
                   test: str = TEST, hosts: int = 1) -> Path:  # fmt: skip
    lab = root / "lab"
    lab.mkdir()
    db = f"database = {toml_str(database)}\n" if database else ""
    (lab / "lab.toml").write_text(
        f'[lab]\nname = "gate-lab"\n{db}\n'
        f'[[tree]]\nname = "xen"\nurl = {toml_str(str(upstream.bare))}\n\n'
        '[[branch]]\nname = "xen-unstable"\ntree = "xen"\n\n'
        + "".join(local_host(f"h{i}", slots=4, flags=["x86"]) + "\n" for i in range(hosts))
        + job("build", step("build", BUILD))
        + job("test", step("guest-start", test), depends=["build"])
        + "\n[gate]\nbisect_parallel = 2\nretests = 1\n"
        + extra
    )
    return lab


def cycle(lab_dir: Path) -> GateResult:
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        return asyncio.run(Gate(lab, store).cycle("xen-unstable"))


ANN = ("Ann Maintainer", "ann@xen.example")
BOB = ("Bob Breaker", "bob@xen.example")


def one_change(upstream: Upstream) -> tuple[str, str]:
    """master at a base commit, staging one harmless commit ahead: (base, change)."""
    base = upstream.commit("base", {"VERSION": "1\n"}, ANN)
    upstream.push(base, "master")
    change = upstream.commit("change", {"a": "1\n"}, ANN)
    upstream.push(change, "staging")
    return base, change


def history(upstream: Upstream, bad_at: int, length: int = 12) -> list[str]:
    """master at a base commit; staging ``length`` commits ahead, the one at ``bad_at`` (by Bob)
    plants the bug."""
    base = upstream.commit("base", {"VERSION": "1\n"}, ANN)
    upstream.push(base, "master")
    shas = []
    for i in range(length):
        files: dict[str, str | None] = {f"f{i}": f"{i}\n"}
        author = ANN
        if i == bad_at:
            files["bug"] = "oops\n"
            author = BOB
        shas.append(upstream.commit(f"change {i}", files, author))
    upstream.push(shas[-1], "staging")
    return shas


def test_a_lab_that_knows_its_test_is_deterministic_bisects_at_git_bisects_cost(
    tmp_path: Path,
) -> None:
    """``[gate] bisect_flaky = "no"`` and ``bisect_intermittent = "no"`` reach the engine: 12
    commits take at most ceil(log2 12) = 4 bisect flights, one at a time, to the right culprit
    (the default guards against the noise the lab ruled out: 9 flights here)."""
    upstream = Upstream(tmp_path)
    shas = history(upstream, bad_at=7)
    extra = 'bisect_flaky = "no"\nbisect_intermittent = "no"\n'
    lab_dir = write_gate_lab(tmp_path, upstream, database=None, extra=extra)
    text = (lab_dir / "lab.toml").read_text().replace("bisect_parallel = 2", "bisect_parallel = 1")
    (lab_dir / "lab.toml").write_text(text)
    result = cycle(lab_dir)
    (bisection,) = result.bisections
    assert bisection.culprit is not None and bisection.culprit.commit == shas[7]
    assert len(bisection.flights) <= 4


def test_regression_is_not_pushed_and_bisected_to_its_culprit_then_the_fix_is_pushed(
    tmp_path: Path, database_url: str
) -> None:
    upstream = Upstream(tmp_path)
    shas = history(upstream, bad_at=7)
    master = upstream.ref("master")
    lab_dir = write_gate_lab(tmp_path, upstream, database=database_url)

    result = cycle(lab_dir)
    assert result.action == "not-pushed" and not result.pushed
    assert result.verdict == "regression"
    assert [(c.job, c.step) for c in result.regressions] == [("test", "guest-start")]
    assert upstream.ref("master") == master  # nothing pushed
    (bisection,) = result.bisections
    assert bisection.culprit is not None
    assert (bisection.culprit.tree, bisection.culprit.commit) == ("xen", shas[7])
    assert (bisection.culprit.author, bisection.culprit.email) == BOB
    assert bisection.culprit.subject == "change 7"
    assert bisection.confidence >= 0.99
    assert "xen " + shas[7] + " is the first bad commit" in result.report
    assert "REGR. vs." in result.report
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        baseline = store.baseline("xen-unstable")
        assert baseline is not None and store.get_flight(baseline).revisions["xen"] == master
        assert result.flight is not None
        assert store.verdict(result.flight)["push_allowed"] is False  # type: ignore[index]
        record = store.bisection(bisection.id)
        assert record.state == "found" and record.culprit_commit == shas[7]
        bisect_flights = [store.get_flight(f) for f in bisection.flights]
        assert bisect_flights and all(f.blessing is Blessing.BISECT for f in bisect_flights)
        # every bisect flight ran just the failing job and what it depends on
        assert all({j.name for j in f.jobs} == {"build", "test"} for f in bisect_flights)
        tested = {f.revisions["xen"] for f in bisect_flights}
        # the culprit was seen to fail and its parent to pass, directly
        assert {shas[6], shas[7]} <= tested
        # the stored results of the two ends were used, not run again
        assert master not in tested and shas[-1] not in tested
        nodes = {n["commit"]: n for n in record.graph["nodes"]}
        assert set(nodes) == set(shas)
        assert nodes[shas[7]]["probability"] >= 0.99
        assert "bad" in nodes[shas[7]]["outcomes"] and "good" in nodes[shas[6]]["outcomes"]
        # bisecting the same regression again reuses every stored result: no new flight
        before = len(store.list_flights("xen-unstable", limit=1000))
        failing = store.get_flight(result.flight)
        again = asyncio.run(
            Gate(lab, store).bisect(
                "xen-unstable", failing, store.get_flight(baseline), result.regressions
            )
        )
        assert again.culprit is not None and again.culprit.commit == shas[7]
        assert len(store.list_flights("xen-unstable", limit=1000)) == before

    # the fix lands on staging: the next cycle pushes exactly it
    fix = upstream.commit("revert the bug", {"bug": None}, ANN)
    upstream.push(fix, "staging")
    result = cycle(lab_dir)
    assert result.action == "pushed" and result.pushed_revision == fix
    assert upstream.ref("master") == fix
    with Store.open(lab.database_url) as store:
        assert store.baseline("xen-unstable") == result.flight
        (push,) = store.pushes("xen-unstable")
        assert (push.status, push.sha, push.previous_sha) == ("pushed", fix, master)
    # and then there is nothing to do
    assert cycle(lab_dir).action == "nothing-to-do"


def test_the_tested_commit_is_pushed_even_when_staging_moves_during_the_flight(
    tmp_path: Path,
) -> None:
    upstream = Upstream(tmp_path)
    base = upstream.commit("base", {"VERSION": "1\n"}, ANN)
    upstream.push(base, "master")
    first = upstream.commit("first", {"a": "1\n"}, ANN)
    later = upstream.commit("later", {"b": "1\n"}, ANN)
    upstream.push(later, "topic")  # the object is upstream; staging does not point at it yet
    upstream.push(first, "staging")
    # while the staging flight of `first` runs, a developer pushes `later` to staging
    moves = (
        f'if [ "$LABGATE_REV_XEN" = {first} ]; then '
        f"git --git-dir {upstream.bare} update-ref refs/heads/staging {later}; fi; {TEST}"
    )
    lab_dir = write_gate_lab(tmp_path, upstream, database=None, test=moves)
    result = cycle(lab_dir)
    assert result.action == "pushed"
    assert result.pushed_revision == first
    assert upstream.ref("master") == first
    assert upstream.ref("staging") == later
    again = cycle(lab_dir)
    assert again.action == "pushed" and again.pushed_revision == later
    assert upstream.ref("master") == later


def test_a_tested_ref_moved_by_hand_is_reported_not_overwritten(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path)
    base, _good = one_change(upstream)
    lab_dir = write_gate_lab(tmp_path, upstream, database=None)
    lab = load_lab(lab_dir)
    # the baseline exists; then someone pushes an unrelated commit to master by hand
    with Store.open(lab.database_url) as store:
        asyncio.run(Gate(lab, store)._real_flight("xen-unstable", {"xen": base}, "baseline"))
        store.set_baseline("xen-unstable", store.list_flights("xen-unstable")[0].id)
    upstream.dev.git("checkout", "-q", base)
    by_hand = upstream.commit("pushed by hand", {"hand": "1\n"}, BOB)
    upstream.push(by_hand, "master")
    result = cycle(lab_dir)
    assert result.action == "not-pushed" and not result.pushed
    assert result.message.startswith("not-fast-forward")
    assert upstream.ref("master") == by_hand
    with Store.open(lab.database_url) as store:
        assert store.pushes("xen-unstable")[0].status == "not-fast-forward"


def test_a_flaky_failure_is_retested_and_recorded_as_a_flake_not_a_regression(
    tmp_path: Path,
) -> None:
    upstream = Upstream(tmp_path)
    _base, change = one_change(upstream)
    marker = tmp_path / "failed-once"
    # fails the first time it runs at `change`, passes after
    flaky = (
        f'if [ "$LABGATE_REV_XEN" = {change} ] && [ ! -e {marker} ]; then '
        f"touch {marker}; exit 1; fi; {TEST}"
    )
    lab_dir = write_gate_lab(tmp_path, upstream, database=None, test=flaky,
                             extra="flake_threshold = 0.0\n")  # fmt: skip
    result = cycle(lab_dir)
    assert result.action == "pushed", result.report
    assert result.pushed_revision == change
    assert not result.bisections
    assert "failing intermittently" in result.report


def test_a_broken_lab_is_not_tested_never_a_regression(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path)
    base, change = one_change(upstream)
    broken = (
        f'if [ "$LABGATE_REV_XEN" = {change} ]; then echo "host lost" > "$LABGATE_BROKEN_FILE";'
        f" exit 1; fi; {TEST}"
    )
    lab_dir = write_gate_lab(tmp_path, upstream, database=None, test=broken)
    result = cycle(lab_dir)
    assert result.action == "not-pushed" and result.verdict == "not-tested"
    assert not result.regressions and not result.bisections
    assert upstream.ref("master") == base
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        flights = store.list_flights("xen-unstable")
        # baseline, the staging flight, one retest of the broken job
        assert [f.blessing for f in flights] == [Blessing.REAL] * 3
        assert store.get_flight(flights[0].id).job("test").outcome is Outcome.BROKEN


def test_a_job_the_lab_broke_is_retried_on_another_host(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path)
    _base, change = one_change(upstream)
    lost_on_h0 = (
        f'if [ "$LABGATE_REV_XEN" = {change} ] && [ "$LABGATE_HOST" = h0 ]; then '
        f'echo "h0 lost its disk" > "$LABGATE_BROKEN_FILE"; exit 1; fi; {TEST}'
    )
    lab_dir = write_gate_lab(tmp_path, upstream, database=None, test=lost_on_h0, hosts=2)
    result = cycle(lab_dir)
    assert result.action == "pushed", result.report
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        retest, staging, _baseline = store.list_flights("xen-unstable")
        assert store.get_flight(staging.id).job("test").host == "h0"
        assert store.get_flight(staging.id).job("test").outcome is Outcome.BROKEN
        assert store.get_flight(retest.id).job("test").host == "h1"
        assert store.get_flight(retest.id).job("test").outcome is Outcome.PASS


def test_review_flights_of_patches_are_not_evidence_for_the_branch(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path)
    shas = history(upstream, bad_at=1, length=2)
    # the test passes in review flights only: if they counted, the regression would look flaky
    review_passes = f'[ "$LABGATE_BLESSING" = review ] || {{{{ {TEST}; }}}}'
    lab_dir = write_gate_lab(tmp_path, upstream, database=None, test=review_passes)
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        from labgate.flight import plan_flight
        from labgate.flights import Flights

        fid = plan_flight(lab, store, "xen-unstable", revisions={"xen": shas[-1]},
                          blessing=Blessing.REVIEW)  # fmt: skip
        assert asyncio.run(Flights(lab, store).run(fid)).outcome is Outcome.PASS
    result = cycle(lab_dir)
    assert result.action == "not-pushed" and result.verdict == "regression"
    assert result.bisections[0].culprit is not None
    assert result.bisections[0].culprit.commit == shas[1]


def test_two_gates_on_one_branch_never_run_it_together(tmp_path: Path, database_url: str) -> None:
    upstream = Upstream(tmp_path)
    history(upstream, bad_at=99, length=2)  # no bug: the cycle pushes
    lab_dir = write_gate_lab(tmp_path, upstream, database=database_url)
    lab = load_lab(lab_dir)

    async def both() -> list[GateResult]:
        with Store.open(lab.database_url) as one, Store.open(lab.database_url) as two:
            return list(
                await asyncio.gather(
                    Gate(lab, one, owner="one").cycle("xen-unstable"),
                    Gate(lab, two, owner="two").cycle("xen-unstable"),
                )
            )

    results = asyncio.run(both())
    assert sorted(r.action for r in results) == ["busy", "pushed"]
    with Store.open(lab.database_url) as store:
        assert len(store.pushes("xen-unstable")) == 1
        assert len(store.list_flights("xen-unstable")) == 2  # baseline + staging, once each


def test_cli_gate_once_json_and_exit_status(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path)
    shas = history(upstream, bad_at=2, length=4)
    lab_dir = write_gate_lab(tmp_path, upstream, database=None)
    proc = subprocess.run(
        labgate(lab_dir, "gate", "xen-unstable", "--once", "--json"), capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) >= {"branch", "flight", "baseline_flight", "pushed", "pushed_revision",
                         "revisions", "verdict", "regressions", "bisections"}  # fmt: skip
    assert data["pushed"] is False and data["verdict"] == "regression"
    assert data["regressions"] == [{"job": "test", "step": "guest-start", "testcase": None}]
    (b,) = data["bisections"]
    assert b["culprit"] == {"tree": "xen", "commit": shas[2], "author": BOB[0],
                            "email": BOB[1], "subject": "change 2"}, (b, proc.stderr)  # fmt: skip
    assert set(b) >= {"job", "step", "culprit", "confidence", "executions", "flights"}
    hist = subprocess.run(
        labgate(lab_dir, "history", "xen-unstable", "test"), capture_output=True, text=True
    )
    assert hist.returncode == 0 and "flake rate (failures in runs" in hist.stdout
    bad = subprocess.run(labgate(lab_dir, "gate", "nope", "--once"), capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown branch 'nope'" in bad.stderr


def test_staging_equal_to_tested_is_nothing_to_do(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path)
    base = upstream.commit("base", {"VERSION": "1\n"}, ANN)
    upstream.push(base, "master")
    upstream.push(base, "staging")
    lab_dir = write_gate_lab(tmp_path, upstream, database=None)
    result = cycle(lab_dir)
    assert result.action == "nothing-to-do" and result.exit_status == 0
    assert result.flight is None  # no flight ran


def test_a_failed_push_says_why_with_the_fix_and_the_next_cycle_pushes_without_retesting(
    tmp_path: Path,
) -> None:
    # the tree is a non-bare repository with the tested ref checked out: git refuses the push
    repo = GitRepo.init(tmp_path / "xen")
    repo.commit("base", files={"VERSION": "1\n"}, author=ANN)
    repo.git("checkout", "-q", "-b", "staging")
    change = repo.commit("change", files={"a": "1\n"}, author=ANN)
    repo.git("checkout", "-q", "master")

    class Tree:
        bare = repo.path

    lab_dir = write_gate_lab(tmp_path, Tree(), database=None)  # type: ignore[arg-type]
    first = cycle(lab_dir)
    assert first.action == "not-pushed" and not first.pushed
    assert first.verdict == "pass"
    assert first.message == (
        "error: the tested ref is the checked-out branch of a non-bare repository. Fix: "
        "point the tree's url at a bare repository, or run "
        "`git config receive.denyCurrentBranch updateInstead` in that repository"
    )
    assert "Not pushing: the push failed: the tested ref is the checked-out branch" in first.report
    assert "git said:" in first.report and "refusing to update checked out branch" in first.report
    assert "Not pushing." not in first.report
    lab = load_lab(lab_dir)
    with Store.open(lab.database_url) as store:
        flights = len(store.list_flights("xen-unstable", limit=100))

    repo.git("config", "receive.denyCurrentBranch", "updateInstead")
    second = cycle(lab_dir)
    assert second.action == "pushed" and second.pushed_revision == change
    assert second.flight == first.flight  # the tested flight, pushed: nothing ran again
    assert repo.rev("master") == change
    with Store.open(lab.database_url) as store:
        assert len(store.list_flights("xen-unstable", limit=100)) == flights
        assert store.baseline("xen-unstable") == first.flight
