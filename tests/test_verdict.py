"""Verdicts: flight + baseline + history → classification of jobs, steps and test cases."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from fnmatch import fnmatch
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labgate.model import (
    AllowedFailure,
    Blessing,
    FlightResult,
    FlightState,
    JobResult,
    Outcome,
    StepResult,
    TestCaseResult,
    flight_outcome,
)
from labgate.verdict import (
    FlakeRate,
    Kind,
    classify,
    flake_evidence,
    flake_rate,
    flake_rates,
    history_rows,
    step_flake_rates,
)

A = {"xen": "a" * 40}
B = {"xen": "b" * 40}
C = {"xen": "c" * 40}

StepDef = str | tuple[str, Mapping[str, str]]


def make_job(
    name: str,
    steps: Mapping[str, StepDef] | str,
    *,
    depends: tuple[str, ...] = (),
    host: str | None = "host1",
) -> JobResult:
    """``steps``: step name → outcome (or (outcome, {testcase: outcome})); a bare string is a job
    without steps in that outcome (``"blocked"``)."""
    if isinstance(steps, str):
        return JobResult(id=0, name=name, outcome=Outcome(steps), host=host, depends=depends)
    results = []
    for index, (step, spec) in enumerate(steps.items()):
        outcome, cases = (spec, {}) if isinstance(spec, str) else spec
        results.append(
            StepResult(
                id=index,
                name=step,
                outcome=Outcome(outcome),
                reason="host lost" if outcome == "broken" else None,
                testcases=tuple(TestCaseResult(c, Outcome(o)) for c, o in cases.items()),
            )
        )
    outcomes = [s.outcome for s in results]
    outcome = Outcome.BROKEN if Outcome.BROKEN in outcomes else flight_outcome(outcomes)
    return JobResult(
        id=0, name=name, outcome=outcome, host=host, steps=tuple(results), depends=depends
    )


def make_flight(
    flight_id: int,
    revisions: Mapping[str, str],
    *jobs: JobResult,
    blessing: Blessing = Blessing.REAL,
) -> FlightResult:
    return FlightResult(
        id=flight_id,
        branch="xen-unstable",
        blessing=blessing,
        revisions=dict(revisions),
        state=FlightState.FINISHED,
        outcome=flight_outcome([j.outcome for j in jobs]),
        started=f"2026-11-{flight_id % 28 + 1:02d} 10:00:00",
        finished=None,
        jobs=jobs,
    )


def one_step(flight_id: int, revisions: Mapping[str, str], outcome: str) -> FlightResult:
    return make_flight(flight_id, revisions, make_job("test", {"boot": "pass", "run": outcome}))


# --- the kinds -----------------------------------------------------------------------------


def test_all_pass_allows_the_push() -> None:
    base = one_step(10, A, "pass")
    verdict = classify(one_step(11, B, "pass"), base, [base])
    assert verdict.push_allowed
    assert verdict.details == verdict.blocking == verdict.not_tested == ()
    assert {c.kind for c in verdict.items} == {Kind.PASS}


def test_fail_after_baseline_pass_is_a_regression_that_blocks() -> None:
    base = one_step(10, A, "pass")
    verdict = classify(one_step(11, B, "fail"), base, [base])
    [regression] = verdict.blocking
    assert (regression.job, regression.step, regression.kind) == ("test", "run", Kind.REGRESSION)
    assert regression.reason == "REGR. vs. 10"
    assert regression.baseline_outcome is Outcome.PASS
    assert regression.flight_ref == 10
    assert verdict.item("test").kind is Kind.REGRESSION
    assert verdict.item("test").reason == "run: REGR. vs. 10"
    assert not verdict.push_allowed
    assert verdict.retest == ()


def test_fail_like_baseline_does_not_block() -> None:
    base = one_step(10, A, "fail")
    verdict = classify(one_step(11, B, "fail"), base, [one_step(5, C, "pass"), base])
    [item] = verdict.details
    assert (item.kind, item.reason) == (Kind.FAIL_LIKE_BASELINE, "like 10")
    assert verdict.push_allowed


def test_fail_never_passed_does_not_block() -> None:
    base = make_flight(10, A, make_job("build", {"compile": "pass"}))
    verdict = classify(one_step(13, B, "fail"), base, [base, one_step(12, C, "fail")])
    [item] = verdict.details
    assert (item.kind, item.reason) == (Kind.FAIL_NEVER_PASSED, "never pass")
    assert verdict.push_allowed


def test_fail_then_pass_on_the_same_tuple_is_a_flake_not_code() -> None:
    base = one_step(10, A, "pass")
    earlier_same_tuple = one_step(11, B, "pass")
    verdict = classify(one_step(12, B, "fail"), base, [base, earlier_same_tuple])
    [item] = verdict.details
    assert (item.kind, item.reason, item.retest) == (Kind.FLAKY, "pass in 11", False)
    assert verdict.push_allowed


def flaky_history() -> list[FlightResult]:
    """Five tuples each failing once and then passing: a step that flakes a lot."""
    flights = []
    for n in range(5):
        revs = {"xen": f"{n:040d}"}
        flights += [one_step(100 + 2 * n, revs, "fail"), one_step(101 + 2 * n, revs, "pass")]
    return flights


def test_learned_flake_rate_asks_for_a_retest_before_blocking() -> None:
    history = flaky_history()
    base = history[-1]
    first = classify(one_step(200, B, "fail"), base, history)
    [item] = first.details
    assert item.kind is Kind.FLAKY
    assert item.retest
    assert item.flake_rate == pytest.approx((5 + 1) / (10 + 20))
    assert first.retest == ("test",)
    assert not first.blocking
    assert not first.push_allowed

    # The retest failed again on the same tuple, with no pass: now it is a regression.
    second = classify(one_step(201, B, "fail"), base, [*history, one_step(200, B, "fail")])
    assert [c.kind for c in second.blocking] == [Kind.REGRESSION]
    # The retest passed: the first failure was a flake.
    third = classify(one_step(200, B, "fail"), base, [*history, one_step(201, B, "pass")])
    assert third.details[0].reason == "pass in 201"
    assert third.push_allowed


def test_a_higher_threshold_turns_the_flaky_fail_into_a_regression() -> None:
    history = flaky_history()
    verdict = classify(one_step(200, B, "fail"), history[-1], history, flake_threshold=0.5)
    assert [c.kind for c in verdict.blocking] == [Kind.REGRESSION]


def test_broken_is_not_tested_and_retested_never_a_regression() -> None:
    base = one_step(10, A, "pass")
    verdict = classify(one_step(11, B, "broken"), base, [base])
    assert verdict.blocking == ()
    [item] = verdict.not_tested
    assert (item.step, item.kind, item.reason) == ("run", Kind.BROKEN, "not tested: host lost")
    assert verdict.retest == ("test",)
    assert verdict.item("test").kind is Kind.BROKEN
    assert not verdict.push_allowed


def test_cancelled_job_is_not_tested() -> None:
    flight = make_flight(11, B, make_job("test", "cancelled"))
    verdict = classify(flight, None, [])
    assert [c.kind for c in verdict.not_tested] == [Kind.BROKEN]
    assert not verdict.push_allowed


def build_and_test(flight_id: int, revisions: Mapping[str, str], build: str) -> FlightResult:
    test = (
        make_job("test", {"boot": "pass"}, depends=("build",))
        if build == "pass"
        else make_job("test", "blocked", depends=("build",))
    )
    return make_flight(flight_id, revisions, make_job("build", {"compile": build}), test)


def test_a_job_blocked_by_a_regression_is_not_itself_one() -> None:
    base = build_and_test(10, A, "pass")
    verdict = classify(build_and_test(11, B, "fail"), base, [base])
    assert [(c.job, c.kind) for c in verdict.blocking] == [("build", Kind.REGRESSION)]
    blocked = verdict.item("test")
    assert blocked.kind is Kind.BLOCKED
    assert blocked.reason == "n/a (blocked by build: regression)"
    assert not blocked.retest
    assert blocked in verdict.details
    assert blocked not in verdict.not_tested


def test_a_job_blocked_by_a_broken_one_is_not_tested_and_retested_with_it() -> None:
    base = build_and_test(10, A, "pass")
    verdict = classify(build_and_test(11, B, "broken"), base, [base])
    assert verdict.blocking == ()
    assert [c.job for c in verdict.not_tested] == ["build", "test"]
    assert verdict.retest == ("build", "test")


def test_a_job_blocked_by_a_tolerated_failure_does_not_block() -> None:
    base = build_and_test(10, A, "fail")
    verdict = classify(build_and_test(11, B, "fail"), base, [base])
    assert [c.kind for c in verdict.details] == [Kind.FAIL_LIKE_BASELINE, Kind.BLOCKED]
    assert verdict.push_allowed


def test_allowed_failures_match_globs_with_their_reason() -> None:
    base = one_step(10, A, "pass")
    allowed = [AllowedFailure(job="te*", step="run", reason="known bug #12")]
    verdict = classify(one_step(11, B, "fail"), base, [base], allowed=allowed)
    [item] = verdict.details
    assert (item.kind, item.reason) == (Kind.ALLOWED, "allowed: known bug #12")
    assert verdict.push_allowed


def test_a_step_allowance_does_not_excuse_the_lab_breaking() -> None:
    base = one_step(10, A, "pass")
    allowed = [AllowedFailure(job="test", step="run", reason="known bug")]
    verdict = classify(one_step(11, B, "broken"), base, [base], allowed=allowed)
    assert [c.kind for c in verdict.not_tested] == [Kind.BROKEN]


def test_a_whole_job_allowance_covers_broken_and_blocked() -> None:
    base = build_and_test(10, A, "pass")
    allowed = [AllowedFailure(job="*", step="*", reason="new platform")]
    verdict = classify(build_and_test(11, B, "broken"), base, [base], allowed=allowed)
    assert {c.kind for c in verdict.details} == {Kind.ALLOWED}
    assert verdict.push_allowed


# --- test cases ----------------------------------------------------------------------------


def with_cases(
    flight_id: int, revisions: Mapping[str, str], cases: Mapping[str, str]
) -> FlightResult:
    step = "fail" if "fail" in cases.values() else "pass"
    return make_flight(flight_id, revisions, make_job("test", {"suite": (step, cases)}))


def test_a_new_never_passing_test_case_does_not_make_its_step_a_regression() -> None:
    base = with_cases(10, A, {"t1": "pass"})
    verdict = classify(with_cases(11, B, {"t1": "pass", "t2": "fail"}), base, [base])
    [item] = verdict.details
    assert (item.testcase, item.kind) == ("t2", Kind.FAIL_NEVER_PASSED)
    assert verdict.item("test", "suite").kind is Kind.FAIL_NEVER_PASSED
    assert verdict.push_allowed


def test_a_test_case_regresses_inside_a_step_that_failed_before() -> None:
    base = with_cases(10, A, {"t1": "pass", "t2": "fail"})
    verdict = classify(with_cases(11, B, {"t1": "fail", "t2": "fail"}), base, [base])
    assert [(c.testcase, c.kind) for c in verdict.details] == [
        ("t1", Kind.REGRESSION),
        ("t2", Kind.FAIL_LIKE_BASELINE),
    ]
    assert [c.testcase for c in verdict.blocking] == ["t1"]
    assert verdict.item("test", "suite").reason == "t1: REGR. vs. 10"


def test_a_test_case_regression_counts_even_when_its_step_exited_zero() -> None:
    base = with_cases(10, A, {"t1": "pass"})
    current = make_flight(11, B, make_job("test", {"suite": ("pass", {"t1": "fail"})}))
    verdict = classify(current, base, [base])
    assert [(c.testcase, c.kind) for c in verdict.blocking] == [("t1", Kind.REGRESSION)]
    assert verdict.item("test").kind is Kind.REGRESSION


def test_skipped_and_todo_test_cases_are_quiet() -> None:
    base = with_cases(10, A, {"t1": "pass", "t2": "pass"})
    verdict = classify(with_cases(11, B, {"t1": "skip", "t2": "pass"}), base, [base])
    assert verdict.details == ()
    assert verdict.item("test", "suite", "t1").kind is Kind.SKIP


# --- baseline evidence ---------------------------------------------------------------------


def test_baseline_tuple_pass_in_a_retest_overrides_the_baseline_flake() -> None:
    base = one_step(10, A, "fail")
    retest_of_base = one_step(12, A, "pass")
    verdict = classify(one_step(13, B, "fail"), base, [base, retest_of_base])
    [item] = verdict.blocking
    assert item.reason == "REGR. vs. 12"


def test_baseline_untested_falls_back_to_earlier_flights() -> None:
    earlier = one_step(8, C, "pass")
    base = make_flight(10, A, make_job("test", {"boot": "broken"}))
    verdict = classify(one_step(11, B, "fail"), base, [earlier, base])
    assert verdict.blocking[0].reason == "REGR. vs. 8"


def test_pass_only_after_the_baseline_still_counts_as_baseline_untested_regression() -> None:
    base = make_flight(10, A, make_job("build", {"compile": "pass"}))
    later = one_step(11, C, "pass")
    verdict = classify(one_step(12, B, "fail"), base, [base, later])
    assert verdict.blocking[0].reason == "REGR. vs. 11 (baseline untested)"


def test_no_baseline_and_no_pass_is_never_passed() -> None:
    verdict = classify(one_step(1, A, "fail"), None, [])
    assert verdict.details[0].kind is Kind.FAIL_NEVER_PASSED
    assert verdict.baseline is None


def test_the_flight_itself_in_history_is_ignored() -> None:
    base = one_step(10, A, "pass")
    current = one_step(11, B, "fail")
    assert classify(current, base, [base, current]) == classify(current, base, [base])


def test_a_flight_without_jobs_does_not_push() -> None:
    assert not classify(make_flight(1, A), None, []).push_allowed


# --- flake rates and history ---------------------------------------------------------------


def test_flake_rate_without_history_is_the_prior_mean() -> None:
    assert flake_rate([], "test", "run") == pytest.approx(0.05)


def test_flake_rate_counts_failures_at_tuples_that_passed() -> None:
    history = [
        one_step(1, A, "fail"),
        one_step(2, A, "pass"),
        one_step(3, B, "pass"),
        one_step(4, C, "fail"),  # never shown good: not counted
    ]
    assert flake_rate(history, "test", "run") == pytest.approx((1 + 1) / (3 + 20))
    assert flake_rate(history, "test") == pytest.approx((1 + 1) / (3 + 20))
    # the evidence: 1 failure in the 3 runs at A and B (which passed it); boot never failed
    assert step_flake_rates(history, "test") == {"boot": FlakeRate(0, 4), "run": FlakeRate(1, 3)}
    rates = flake_rates(history, "test")
    assert rates == {"": FlakeRate(1, 3), "boot": FlakeRate(0, 4), "run": FlakeRate(1, 3)}
    assert rates["run"].estimate == pytest.approx(2 / 23)  # what the gate judges with
    assert rates["boot"].estimate == pytest.approx(1 / 24)
    assert str(rates["boot"]) == "0.0% (0 of 4 runs)"  # a deterministic step shows no 4%
    assert str(rates["run"]) == "33.3% (1 of 3 runs)"


def test_a_flake_rate_without_evidence_is_unknown() -> None:
    history = [one_step(1, A, "fail"), one_step(2, B, "fail")]  # never passed anywhere
    rate = flake_evidence(history, "test", "run")
    assert not rate.known and str(rate).startswith("unknown")
    assert rate.to_json() == {"flakes": 0, "runs": 0, "rate": None, "estimate": 0.05}
    assert flake_evidence(history, "test", "no-such-step") == FlakeRate(0, 0)


def test_a_changed_step_command_starts_a_new_history() -> None:
    def ran(
        flight_id: int, revisions: Mapping[str, str], outcome: str, command: str
    ) -> FlightResult:
        flight = one_step(flight_id, revisions, outcome)
        job = flight.jobs[0]
        steps = tuple(replace(st, command=command) if st.name == "run" else st for st in job.steps)
        return replace(flight, jobs=(replace(job, steps=steps),))

    old = [
        ran(1, A, "fail", "make old"),
        ran(2, A, "pass", "make old"),
        ran(3, B, "pass", "make old"),
    ]
    assert flake_evidence(old, "test", "run") == FlakeRate(1, 3)
    new = [*old, ran(4, C, "pass", "make -j4"), ran(5, C, "pass", "make -j4")]
    assert flake_evidence(new, "test", "run") == FlakeRate(0, 2)  # the old command's runs are gone
    assert flake_evidence(new, "test", "boot") == FlakeRate(0, 5)  # another step keeps its own


def test_history_rows_newest_first_with_hosts_and_revisions() -> None:
    history = [one_step(1, A, "pass"), one_step(3, C, "broken"), one_step(2, B, "fail")]
    rows = history_rows(history, "test")
    assert [(r.flight, r.outcome) for r in rows] == [
        (3, Outcome.BROKEN),
        (2, Outcome.FAIL),
        (1, Outcome.PASS),
    ]
    assert rows[0].host == "host1"
    assert rows[0].revisions == C
    assert rows[0].steps == (("boot", Outcome.PASS), ("run", Outcome.BROKEN))
    step_rows = history_rows(history, "test", "run")
    assert (step_rows[0].outcome, step_rows[0].reason) == (Outcome.BROKEN, "host lost")
    assert history_rows(history, "nope") == ()


# --- properties ----------------------------------------------------------------------------

SEVERITY = [
    Kind.PASS,
    Kind.SKIP,
    Kind.BLOCKED,
    Kind.ALLOWED,
    Kind.FAIL_NEVER_PASSED,
    Kind.FAIL_LIKE_BASELINE,
    Kind.FLAKY,
    Kind.BROKEN,
    Kind.REGRESSION,
]
STEP_OUTCOMES = st.sampled_from(["pass", "pass", "fail", "skip", "broken"])
CASE_OUTCOMES = st.sampled_from(["pass", "fail", "skip"])
TUPLES = st.sampled_from([A, B, C])


@st.composite
def steps_strategy(draw: st.DrawFn) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    stopped = False
    for name in ("install", "suite", "stop"):
        if stopped:
            steps[name] = "blocked"
            continue
        outcome = draw(STEP_OUTCOMES)
        if name == "suite" and outcome != "broken" and draw(st.booleans()):
            cases = {c: draw(CASE_OUTCOMES) for c in ("c1", "c2")}
            steps[name] = (outcome, cases)
        else:
            steps[name] = outcome
        stopped = outcome in ("fail", "broken")
    return steps


@st.composite
def flights_strategy(draw: st.DrawFn, flight_id: int) -> FlightResult:
    build = make_job("build", draw(steps_strategy()))
    jobs = [build]
    for name in ("test-a", "test-b"):
        if build.outcome is Outcome.PASS:
            jobs.append(make_job(name, draw(steps_strategy()), depends=("build",)))
        else:
            jobs.append(make_job(name, "blocked", depends=("build",)))
    return make_flight(flight_id, draw(TUPLES), *jobs)


@st.composite
def histories(draw: st.DrawFn) -> list[FlightResult]:
    count = draw(st.integers(min_value=0, max_value=4))
    return [draw(flights_strategy(flight_id=n)) for n in range(1, count + 1)]


def same_flight(flight: FlightResult, flight_id: int) -> FlightResult:
    return make_flight(flight_id, flight.revisions, *flight.jobs)


@settings(max_examples=200, deadline=None)
@given(base=flights_strategy(flight_id=50), history=histories())
def test_a_flight_identical_to_its_baseline_never_regresses(
    base: FlightResult, history: list[FlightResult]
) -> None:
    verdict = classify(same_flight(base, 60), base, [*history, base])
    assert verdict.blocking == ()
    assert Kind.REGRESSION not in {c.kind for c in verdict.details}


@settings(max_examples=200, deadline=None)
@given(base=st.one_of(st.none(), flights_strategy(flight_id=50)), history=histories())
def test_a_pass_everywhere_always_allows_a_push(
    base: FlightResult | None, history: list[FlightResult]
) -> None:
    jobs = [make_job(n, {"install": "pass", "suite": "pass"}) for n in ("build", "test-a")]
    verdict = classify(make_flight(60, B, *jobs), base, [*history, *([base] if base else [])])
    assert verdict.push_allowed


@settings(max_examples=200, deadline=None)
@given(
    current=flights_strategy(flight_id=60),
    base=st.one_of(st.none(), flights_strategy(flight_id=50)),
    history=histories(),
    allowed=st.lists(
        st.builds(
            AllowedFailure,
            job=st.sampled_from(["build", "test-*", "*"]),
            step=st.sampled_from(["install", "suite", "suite/c1", "*"]),
            reason=st.just("known"),
        ),
        max_size=2,
    ),
)
def test_verdict_invariants(
    current: FlightResult,
    base: FlightResult | None,
    history: list[FlightResult],
    allowed: list[AllowedFailure],
) -> None:
    verdict = classify(current, base, history, allowed=allowed)
    whole = {
        j.name for j in current.jobs for a in allowed if a.step == "*" and fnmatch(j.name, a.job)
    }
    for job in current.jobs:
        if job.name in whole:
            assert all(c.job != job.name for c in (*verdict.blocking, *verdict.not_tested))
        elif job.outcome is Outcome.BROKEN:
            # A broken job never yields a regression: it is not tested and retested.
            assert all(c.job != job.name for c in verdict.blocking)
            assert job.name in verdict.retest
            assert any(c.job == job.name for c in verdict.not_tested)
        elif job.outcome is Outcome.BLOCKED:
            assert verdict.item(job.name).kind is Kind.BLOCKED
    if verdict.blocking or verdict.not_tested or verdict.retest:
        assert not verdict.push_allowed
    assert all(c.kind is Kind.REGRESSION for c in verdict.blocking)
    assert all(c.outcome is not Outcome.PASS for c in verdict.details)
    # Every job's kind is its most severe detail (or pass/skip when it has none).
    for job_item in verdict.jobs():
        details = [c for c in verdict.details if c.job == job_item.job]
        if details:
            assert job_item.kind is max((c.kind for c in details), key=SEVERITY.index)
        else:
            assert job_item.kind in (Kind.PASS, Kind.SKIP)
