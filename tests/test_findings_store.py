"""Findings in the store, on SQLite and on a real PostgreSQL server: every write read back,
the baseline a flight's findings are compared with, triage kept by identity, blame, trends."""

from __future__ import annotations

from labgate.findings.model import Finding, Level, TriageState
from labgate.findings.report import flight_comparison
from labgate.model import Blessing, FlightState, JobSpec, Outcome, StepSpec
from labgate.store import Store

ANALYSE = JobSpec(name="analyse", steps=(StepSpec("cppcheck", "cppcheck", None, "sarif:o.sarif"),))
REVS = {"xen": "a" * 40}


def finding(rule: str, line: int, identity: str, snippet: str, function: str = "f") -> Finding:
    return Finding(
        job="analyse", step="cppcheck", rule=rule, level=Level.ERROR, message=f"{rule} here",
        path="xen/a.c", line=line, column=3, function=function, identity=identity,
        snippet_key=snippet, tool="Cppcheck",
    )  # fmt: skip


def finished_flight(store: Store, findings: list[Finding]) -> int:
    fid = store.create_flight("main", Blessing.REAL, REVS, [ANALYSE])
    [job] = store.flight_jobs(fid)
    store.record_findings(job.step_ids[0], findings)
    store.finish_step(job.step_ids[0], Outcome.PASS, exit_status=0, duration_s=1.0)
    store.finish_job(job.id, Outcome.PASS)
    store.set_flight_state(fid, FlightState.FINISHED, Outcome.PASS)
    return fid


def test_findings_are_stored_per_flight_and_replaced_by_a_later_attempt(database_url: str) -> None:
    leak = finding("memleak", 7, "i" * 20, "s" * 20)
    with Store.open(database_url) as store:
        fid = store.create_flight("main", Blessing.REAL, REVS, [ANALYSE])
        [job] = store.flight_jobs(fid)
        store.record_findings(job.step_ids[0], [finding("oob", 3, "j" * 20, "t" * 20)])
        store.record_findings(job.step_ids[0], [leak])
        assert store.flight_findings(fid) == [leak]
        assert store.identities_like("iiii") == ["i" * 20]


def test_a_flight_is_compared_with_the_earlier_one_and_triage_follows_a_changed_identity(
    database_url: str,
) -> None:
    with Store.open(database_url) as store:
        first = finished_flight(store, [finding("memleak", 7, "old" + "0" * 17, "snip")])
        store.set_triage("old" + "0" * 17, TriageState.FALSE_POSITIVE, "freed at exit", "ann")
        second = finished_flight(
            store,
            [finding("memleak", 9, "new" + "0" * 17, "snip", "g"), finding("oob", 20, "x", "y")],
        )
        assert store.findings_baseline(second) == first
        assert store.findings_baseline(first) is None
        comparison = flight_comparison(store, second)
        assert comparison.counts() == {"new": 1, "unchanged": 1, "fixed": 0}
        assert [r.finding.rule for r in comparison.blocking] == ["oob"]
        kept = store.triage_of(["new" + "0" * 17])["new" + "0" * 17]
        assert (kept.state, kept.reason, kept.by) == ("false-positive", "freed at exit", "ann")
        assert store.clear_triage("old" + "0" * 17) and not store.clear_triage("old" + "0" * 17)
        culprit = {"tree": "xen", "commit": "c" * 40, "author": "Bob", "email": "b@x",
                   "subject": "add oob"}  # fmt: skip
        store.record_blame(second, "x", culprit, 0.995, [7, 8])
        assert store.blames(second)["x"]["commit"] == "c" * 40
        [new] = flight_comparison(store, second).of("new")
        assert new.blamed is not None and new.blamed["author"] == "Bob"
        assert store.rule_counts("main") == [
            (first, "memleak", 1), (second, "memleak", 1), (second, "oob", 1)
        ]  # fmt: skip
