"""Flights end to end on real git trees and both stores: planning, scheduling, steps, outcomes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from labgate.config import Lab, load_lab
from labgate.flight import FlightError, plan_flight
from labgate.flights import Flights
from labgate.model import Blessing, FlightResult, FlightState, Outcome
from labgate.store import Store
from labs import job, labgate, local_host, step, write_lab
from procs import gone_within

BUILD_SH = (
    '#!/bin/sh\necho "building $(cat xen/VERSION)"\ncp xen/VERSION "$LABGATE_ARTIFACTS/xen.img"\n'
)


def run(lab: Lab, flight_id: int) -> FlightResult:
    with Store.open(lab.database_url) as store:
        return asyncio.run(Flights(lab, store).run(flight_id))


def plan(lab: Lab, **kwargs: object) -> int:
    with Store.open(lab.database_url) as store:
        return plan_flight(lab, store, "main", **kwargs)  # type: ignore[arg-type]


def test_jobs_get_trees_dependency_artifacts_env_and_logs(
    tmp_path: Path, database_url: str
) -> None:
    jobs = (
        '[[job]]\nname = "build-{arch}"\nmatrix = { arch = ["amd64"] }\n'
        'runvars = { kconfig = "defconfig" }\n'
        + step("build", "sh xen/build.sh")
        + job(
            "test-amd64",
            step(
                "check",
                "cat artifacts/build-amd64/xen.img && test -f linux/README "
                '&& env | grep ^LABGATE_ | sort > "$LABGATE_ARTIFACTS/env"',
            ),
            depends=["build-amd64"],
        )
    )
    lab_dir = write_lab(
        tmp_path / "lab",
        trees={"xen": {"VERSION": "4.19\n", "build.sh": BUILD_SH}, "linux": {"README": "l\n"}},
        jobs=jobs,
        database=database_url,
    )
    lab = load_lab(lab_dir.path)
    fid = plan(lab)
    flight = run(lab, fid)
    assert flight.state is FlightState.FINISHED and flight.outcome is Outcome.PASS
    assert flight.revisions == {
        "xen": lab_dir.trees["xen"].rev("staging"),
        "linux": lab_dir.trees["linux"].rev("HEAD"),
    }
    build, test = flight.jobs
    assert (build.outcome, test.outcome) == (Outcome.PASS, Outcome.PASS)
    assert (lab.log_dir / build.steps[0].log).read_text() == "building 4.19\n"  # type: ignore[operator]
    assert (lab.log_dir / test.steps[0].log).read_text() == "4.19\n"  # type: ignore[operator]
    env = dict(
        line.split("=", 1)
        for line in (lab.artifacts_dir / str(fid) / "test-amd64" / "env").read_text().splitlines()
    )
    assert env["LABGATE_FLIGHT"] == str(fid)
    assert env["LABGATE_JOB"] == "test-amd64"
    assert env["LABGATE_STEP"] == "check"
    assert env["LABGATE_HOST"] == "local0"
    assert env["LABGATE_REV_XEN"] == flight.revisions["xen"]
    assert env["LABGATE_REV_LINUX"] == flight.revisions["linux"]
    assert env["LABGATE_ARTIFACTS"] == str(lab.artifacts_dir / str(fid) / "test-amd64")
    assert "LABGATE_RUNVAR_KCONFIG" not in env  # runvars belong to their own job
    assert build.runvars == {"arch": "amd64", "kconfig": "defconfig"}
    # work dirs are removed (moved aside at each job's end, deleted before the run returns),
    # artifacts are kept
    assert list((lab.work_dir / str(fid)).iterdir()) == []
    assert (lab.artifacts_dir / str(fid) / "build-amd64" / "xen.img").exists()


def test_a_failing_step_ends_its_job_and_blocks_its_dependants(
    tmp_path: Path, database_url: str
) -> None:
    jobs = (
        job("build", step("configure", "true"), step("compile", "exit 3"), step("pack", "true"))
        + job("test", step("run", "true"), depends=["build"])
        + job("other", step("run", "true"))
    )
    lab = load_lab(write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs,
                             database=database_url).path)  # fmt: skip
    flight = run(lab, plan(lab))
    assert flight.outcome is Outcome.FAIL
    build, test, other = flight.jobs
    assert build.outcome is Outcome.FAIL
    assert build.reason == "step compile: exit status 3"
    assert [(s.outcome, s.exit_status) for s in build.steps] == [
        (Outcome.PASS, 0),
        (Outcome.FAIL, 3),
        (Outcome.BLOCKED, None),
    ]
    assert test.outcome is Outcome.BLOCKED and test.host is None
    assert test.reason == "dependency did not pass: build fail"
    assert other.outcome is Outcome.PASS


def test_skip_ends_the_job_as_skip_and_dependants_still_run(tmp_path: Path) -> None:
    jobs = job("build", step("a", "exit 125"), step("b", "exit 1")) + job(
        "test", step("run", "true"), depends=["build"]
    )
    lab = load_lab(write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs).path)
    flight = run(lab, plan(lab))
    assert [j.outcome for j in flight.jobs] == [Outcome.SKIP, Outcome.PASS]
    assert [s.outcome for s in flight.jobs[0].steps] == [Outcome.SKIP, Outcome.SKIP]
    assert flight.outcome is Outcome.PASS
    # a flight runs from its first job given a host, however fast its jobs end
    assert flight.started is not None and flight.finished is not None
    assert flight.started <= flight.finished


def test_lab_failures_are_broken_never_fail(tmp_path: Path, database_url: str) -> None:
    jobs = job("reports", step("power", 'echo "PDU timeout" > "$LABGATE_BROKEN_FILE"; exit 1'))
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs,
                        database=database_url)  # fmt: skip
    lab = load_lab(lab_dir.path)
    flight = run(lab, plan(lab))
    assert flight.jobs[0].outcome is Outcome.BROKEN
    assert flight.jobs[0].steps[0].reason == "PDU timeout"
    assert flight.outcome is Outcome.BROKEN
    # a revision the mirror does not have: the checkout is impossible, the lab failed
    fid = plan(lab, revisions={"t": "0" * 40})
    flight = run(lab, fid)
    assert flight.jobs[0].outcome is Outcome.BROKEN
    assert flight.jobs[0].reason is not None
    assert flight.jobs[0].reason.startswith("cannot prepare the work dir")
    assert flight.jobs[0].steps[0].outcome is Outcome.BLOCKED


def test_independent_jobs_run_in_parallel_up_to_the_slots(tmp_path: Path) -> None:
    # each job waits (bounded) for the other to have started: only parallel runs can pass
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    wait_other = (
        f"touch {barrier}/$LABGATE_JOB; i=0; while [ $(ls {barrier} | wc -l) -lt 2 ]; do "
        "i=$((i+1)); [ $i -gt 500 ] && exit 1; sleep 0.02; done"
    )
    jobs = job("a", step("meet", wait_other)) + job("b", step("meet", wait_other))
    lab = load_lab(write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs,
                             hosts=local_host(slots=2)).path)  # fmt: skip
    assert run(lab, plan(lab)).outcome is Outcome.PASS


def test_exclusive_jobs_hold_the_whole_host(tmp_path: Path, database_url: str) -> None:
    exclusive = '[[job]]\nname = "excl"\nexclusive = true\n' + step("s", "true") + "\n"
    jobs = "".join(job(f"j{i}", step("s", "true")) for i in range(4)) + exclusive
    lab = load_lab(write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs,
                             hosts=local_host(slots=3), database=database_url).path)  # fmt: skip
    fid = plan(lab)
    assert run(lab, fid).outcome is Outcome.PASS
    with Store.open(lab.database_url) as store, store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT job.name, allocation.started, allocation.released FROM allocation "
                "JOIN job ON job.id = allocation.job_id WHERE job.flight_id = :f"
            ),
            {"f": fid},
        ).all()
    spans = {name: (_ts(a), _ts(b)) for name, a, b in rows}
    ex_start, ex_end = spans.pop("excl")
    assert set(spans) == {f"j{i}" for i in range(4)}  # every job's span is compared below
    for start, end in spans.values():
        assert end <= ex_start or start >= ex_end


def _ts(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def test_a_job_goes_back_to_the_host_that_ran_it_last(tmp_path: Path) -> None:
    hosts = local_host("h1", slots=2) + local_host("h2", slots=2)
    jobs = job("a", step("s", "true"))
    lab = load_lab(write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs,
                             hosts=hosts).path)  # fmt: skip
    first = run(lab, plan(lab)).jobs[0].host
    for _ in range(3):
        assert run(lab, plan(lab)).jobs[0].host == first


def test_job_globs_select_jobs_with_their_dependencies(tmp_path: Path) -> None:
    jobs = (
        job("build", step("s", "true"))
        + job("test-a", step("s", "true"), depends=["build"])
        + job("test-b", step("s", "true"), depends=["build"])
    )
    lab = load_lab(write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs).path)
    flight = run(lab, plan(lab, job_globs=["test-a"]))
    assert [j.name for j in flight.jobs] == ["build", "test-a"]
    with pytest.raises(FlightError, match="matches no job"):
        plan(lab, job_globs=["nothing*"])


def test_rev_overrides_take_any_revision_and_refuse_unknown_ones(tmp_path: Path) -> None:
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "1"}},
                        jobs=job("a", step("s", "cat t/f")))  # fmt: skip
    repo = lab_dir.trees["t"]
    first = repo.rev("HEAD")
    repo.checkout("staging")
    second = repo.commit("two", files={"f": "2"})
    lab = load_lab(lab_dir.path)
    assert run(lab, plan(lab)).revisions["t"] == second
    assert run(lab, plan(lab, overrides={"t": "staging~1"})).revisions["t"] == first
    with pytest.raises(FlightError, match="unknown revision 'nope'"):
        plan(lab, overrides={"t": "nope"})
    with pytest.raises(FlightError, match="no tree 'linux'"):
        plan(lab, overrides={"linux": "master"})


def test_cli_flight_run_json_exit_statuses_and_show(tmp_path: Path, database_url: str) -> None:
    jobs = job("good", step("s", "echo hello")) + job("bad", step("s", "exit 1"))
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs,
                        database=database_url)  # fmt: skip
    proc = subprocess.run(
        labgate(lab_dir.path, "flight", "run", "main", "--json"), capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) >= {"id", "branch", "blessing", "revisions", "started", "finished",
                         "outcome", "jobs"}  # fmt: skip
    assert data["outcome"] == "fail" and data["blessing"] == "adhoc"
    good = data["jobs"][0]
    assert set(good) >= {"name", "outcome", "host", "runvars", "steps"}
    assert set(good["steps"][0]) >= {"name", "outcome", "exit_status", "duration_s", "log"}
    assert good["steps"][0]["exit_status"] == 0
    shown = subprocess.run(
        labgate(lab_dir.path, "flight", "show", str(data["id"]), "--json"),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(shown.stdout) == data
    log = subprocess.run(
        labgate(lab_dir.path, "flight", "log", str(data["id"]), "good", "s"),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert log.stdout == "hello\n"
    ok = subprocess.run(
        labgate(lab_dir.path, "flight", "run", "main", "--job", "good"), capture_output=True
    )
    assert ok.returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["flight", "run", "main", "--rev", "t=nope"], "tree 't': unknown revision 'nope'"),
        (["flight", "run", "nobranch"], "unknown branch 'nobranch'"),
        (["flight", "run", "main", "--rev", "t"], "expected TREE=REV"),
        (["flight", "show", "99"], "flight 99 does not exist"),
        (["flight", "log", "99", "x"], "flight 99 does not exist"),
    ],
)
def test_cli_usage_errors_exit_2_with_one_clear_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=job("a", step("s", "true")))
    proc = subprocess.run(labgate(lab_dir.path, *args), capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_check_refuses_a_broken_lab_with_file_and_key(tmp_path: Path) -> None:
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}},
                        jobs=job("a", step("s", "true", timeout=-1)))  # fmt: skip
    proc = subprocess.run(labgate(lab_dir.path, "check"), capture_output=True, text=True)
    assert proc.returncode == 2
    assert "lab.toml" in proc.stderr and "job[0] (a).step[0].timeout" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_tells_the_whole_gate_story(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*labgate(tmp_path, "demo", str(tmp_path / "demo"))[:-2]],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lab = load_lab(tmp_path / "demo")
    with Store.open(lab.database_url) as store:
        baseline = store.get_flight(1)
        (bisection,) = store.bisections("xen-unstable")
        (push,) = store.pushes("xen-unstable")
        assert baseline.blessing is Blessing.REAL and baseline.outcome is Outcome.PASS
        assert [j.name for j in baseline.jobs] == [
            "build-amd64", "build-arm64", "test-amd64-xl", "test-arm64-xl"
        ]  # fmt: skip
        assert {j.host for j in baseline.jobs} == {"italia0", "rochester0"}
        regressed = store.get_flight(bisection.flight_id)
        assert regressed.outcome is Outcome.FAIL
        assert bisection.state == "found"
        assert push.status == "pushed" and store.baseline("xen-unstable") == push.flight_id
    dev = tmp_path / "demo" / "dev" / "xen"
    culprit = subprocess.run(
        ["git", "show", "-s", "--format=%an|%s", bisection.culprit_commit or "?"],
        cwd=dev, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert culprit == "Bob Developer|sched: make the credit2 time slice configurable"
    assert f"{bisection.culprit_commit} is the first bad commit" in proc.stdout.replace("\n", "")
    upstream_master = subprocess.run(
        ["git", "--git-dir", str(tmp_path / "demo" / "trees" / "xen.git"), "rev-parse", "master"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert upstream_master == push.sha


def test_a_cancel_request_in_the_store_cancels_the_running_flight(
    tmp_path: Path, database_url: str
) -> None:
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    pidfile = tmp_path / "pid"
    hang = f"echo $$ > {pidfile}; echo started > {fifo}; exec sleep 300"
    jobs = job("hang", step("s", hang))
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs, database=database_url)
    lab = load_lab(lab_dir.path)
    fid = plan(lab)

    async def scenario(store: Store) -> FlightResult:
        flight = asyncio.create_task(Flights(lab, store).run(fid))
        await asyncio.to_thread(fifo.read_text)  # blocks until the step has started
        assert store.request_cancel(fid, "test")
        return await flight

    with Store.open(lab.database_url) as store:
        result = asyncio.run(scenario(store))
        assert (result.state, result.outcome) == (FlightState.CANCELLED, Outcome.CANCELLED)
        assert result.jobs[0].outcome is Outcome.CANCELLED
        assert not store.cancel_requested(fid)
    assert gone_within(int(pidfile.read_text()))
