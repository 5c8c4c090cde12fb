"""Reports: osstest-style flight reports, subjects, bisection reports, JSON, history."""

from __future__ import annotations

import json

import pytest

from labgate.model import Blessing, FlightResult
from labgate.report import (
    BisectionSummary,
    bisection_subject,
    render_bisection_report,
    render_flight_report,
    render_history,
    report_subject,
    verdict_json,
)
from labgate.verdict import classify, history_rows, step_flake_rates
from test_verdict import A, B, make_flight, make_job


def baseline() -> FlightResult:
    return make_flight(
        10,
        A,
        make_job("build-amd64", {"compile": "pass"}),
        make_job(
            "test-amd64-xl", {"install": "pass", "guest-start": "pass"}, depends=("build-amd64",)
        ),
        make_job("build-arm64", {"compile": "fail"}),
        make_job("test-arm64-xl", "blocked", depends=("build-arm64",)),
        make_job("test-tempest", {"tempest": ("fail", {"api.t1": "pass", "api.t2": "fail"})}),
    )


def current(xl: str = "fail", tempest_t1: str = "fail", flight_id: int = 12) -> FlightResult:
    return make_flight(
        flight_id,
        B,
        make_job("build-amd64", {"compile": "pass"}),
        make_job("test-amd64-xl", {"install": "pass", "guest-start": xl}, depends=("build-amd64",)),
        make_job("build-arm64", {"compile": "fail"}),
        make_job("test-arm64-xl", "blocked", depends=("build-arm64",)),
        make_job(
            "test-tempest",
            {"tempest": ("fail", {"api.t1": tempest_t1, "api.t2": "fail", "api.t3": "fail"})},
        ),
    )


EXPECTED = """\
flight 12 xen-unstable real [real]
test-lab

Regressions :-(

Tests which did not succeed and are blocking:
 test-amd64-xl  2 guest-start    fail REGR. vs. 10
 test-tempest   1 tempest/api.t1 fail REGR. vs. 10

Tests which did not succeed, but are not blocking:
 build-arm64    1 compile        fail like 10
 test-arm64-xl                   blocked n/a (blocked by build-arm64: fail-like-baseline)
 test-tempest   1 tempest/api.t2 fail like 10
 test-tempest   1 tempest/api.t3 fail never pass

version targeted for testing:
 xen                  bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
baseline version:
 xen                  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa

Last test of basis         10  2026-11-11 10:00:00
Testing same since         12

People who touched revisions under test:
  Alice Example <alice@example.org>

jobs:
 build-amd64                              pass
 test-amd64-xl                            fail
 build-arm64                              fail
 test-arm64-xl                            blocked
 test-tempest                             fail

------------------------------------------------------------
labgate on test-lab

Not pushing. (2 regression(s))
"""


def test_flight_report_with_regressions_reads_like_osstest() -> None:
    base, flight = baseline(), current()
    verdict = classify(flight, base, [base])
    text = render_flight_report(
        flight,
        verdict,
        base,
        pushed=False,
        people=["Alice Example <alice@example.org>"],
        lab_name="test-lab",
        same_since=12,
    )
    assert text == EXPECTED
    assert report_subject(flight, verdict, pushed=False) == (
        "[xen-unstable test] 12: regressions - FAIL"
    )


def test_tolerable_failures_pushed() -> None:
    base, flight = baseline(), current(xl="pass", tempest_t1="pass")
    verdict = classify(flight, base, [base])
    assert report_subject(flight, verdict, pushed=True) == (
        "[xen-unstable test] 12: tolerable FAIL - PUSHED"
    )
    text = render_flight_report(
        flight, verdict, base, pushed=True, pushed_revision="xen " + "b" * 40
    )
    assert "Regressions" not in text
    assert text.endswith("Pushing revision :\n\n xen " + "b" * 40 + "\n")


def test_all_pass_pushed_subject() -> None:
    flight = make_flight(3, A, make_job("build", {"compile": "pass"}))
    verdict = classify(flight, None, [])
    assert (
        report_subject(flight, verdict, pushed=True) == "[xen-unstable test] 3: all pass - PUSHED"
    )


def test_flaky_and_broken_have_their_own_sections() -> None:
    base = baseline()
    retest = current(xl="pass", flight_id=11)
    flight = make_flight(
        12,
        B,
        make_job("build-amd64", {"compile": "pass"}),
        make_job(
            "test-amd64-xl", {"install": "pass", "guest-start": "fail"}, depends=("build-amd64",)
        ),
        make_job("build-arm64", {"compile": "broken"}),
        make_job("test-arm64-xl", "blocked", depends=("build-arm64",)),
    )
    verdict = classify(flight, base, [base, retest])
    text = render_flight_report(flight, verdict, base, pushed=False)
    flaky = text.split("Tests which are failing intermittently (not blocking):\n")[1]
    assert flaky.startswith(" test-amd64-xl  2 guest-start fail pass in 11\n")
    not_run = text.split("Tests which could not be run")[1]
    assert " build-arm64    1 compile     broken not tested: host lost\n" in not_run
    assert "test-arm64-xl                blocked n/a (blocked by build-arm64: broken)" in not_run
    assert "REGR" not in text
    assert "Not pushing. (2 not tested; retest: build-arm64 test-arm64-xl)" in text
    assert report_subject(flight, verdict, pushed=False) == (
        "[xen-unstable test] 12: tolerable trouble: blocked/broken/fail/pass - NOT PUSHED"
    )


def test_non_real_flight_does_not_push_and_no_baseline_is_said() -> None:
    flight = make_flight(5, A, make_job("build", {"compile": "pass"}), blessing=Blessing.ADHOC)
    text = render_flight_report(flight, classify(flight, None, []), None, pushed=None)
    assert "baseline version:\n (none)\n" in text
    assert text.endswith("Not pushing (adhoc flight: only real flights push).\n")


def test_outside_text_is_data_and_cannot_forge_lines() -> None:
    flight = make_flight(
        7, {"xen": "a" * 40}, make_job("test", {"run": ("fail", {"t{0}\nREGR. vs. 1": "fail"})})
    )
    verdict = classify(flight, None, [])
    people = ["Mallory {lab_name} <m@example.org>\nPushing revision :"]
    text = render_flight_report(flight, verdict, None, pushed=False, people=people)
    assert "t{0}\\x0aREGR. vs. 1 fail never pass" in text
    assert "  Mallory {lab_name} <m@example.org>\\x0aPushing revision :" in text
    assert "\nPushing revision" not in text


def test_verdict_json_is_json() -> None:
    base, flight = baseline(), current()
    document = verdict_json(classify(flight, base, [base]))
    round_tripped = json.loads(json.dumps(document))
    assert round_tripped["flight"] == 12
    assert round_tripped["baseline"] == 10
    assert round_tripped["push_allowed"] is False
    assert [(c["job"], c["kind"], c["reason"]) for c in round_tripped["blocking"]] == [
        ("test-amd64-xl", "regression", "REGR. vs. 10"),
        ("test-tempest", "regression", "REGR. vs. 10"),
    ]
    assert set(round_tripped["items"][0]) == {
        "job",
        "step",
        "testcase",
        "kind",
        "outcome",
        "baseline_outcome",
        "reason",
        "flake_rate",
        "retest",
        "flight_ref",
    }


SUMMARY = BisectionSummary(
    job="test-amd64-xl",
    step="guest-start",
    tree="xen",
    commit="c" * 40,
    author="Alice Example",
    email="alice@example.org",
    subject="x86/mm: frob {the} widget",
    confidence=0.9731,
    executions=12,
    flights=(20, 21, 23),
    branch="xen-unstable",
)


def test_bisection_report_names_the_first_bad_commit() -> None:
    text = render_bisection_report(SUMMARY)
    assert f"xen {'c' * 40} is the first bad commit\n" in text
    assert "Author: Alice Example <alice@example.org>\n" in text
    assert "Subject: x86/mm: frob {the} widget\n" in text
    assert "Confidence: 0.973 after 12 runs\n" in text
    assert "Flights used: 20, 21, 23\n" in text
    assert bisection_subject(SUMMARY) == "[xen-unstable bisection] complete test-amd64-xl"


def test_undecided_bisection_says_why() -> None:
    summary = BisectionSummary(
        "test-amd64-xl", "guest-start", None, None, None, None, None, None, 4, (20,),
        reason="the failure did not reproduce",
    )  # fmt: skip
    text = render_bisection_report(summary)
    assert "*** No culprit found ***" in text
    assert "  Reason: the failure did not reproduce\n" in text
    assert "first bad commit" not in text
    assert "Runs: 4\n" in text
    assert bisection_subject(summary) == "[labgate bisection] incomplete test-amd64-xl"


@pytest.mark.parametrize("step", [None, "guest-start"])
def test_history_text(step: str | None) -> None:
    flights = [baseline(), current(xl="pass", flight_id=11), current()]
    rows = history_rows(flights, "test-amd64-xl", step)
    text = render_history("test-amd64-xl", step, rows, step_flake_rates(flights, "test-amd64-xl"))
    lines = text.splitlines()
    assert lines[2].split()[:4] == ["flight", "started", "(UTC)", "blessing"]
    assert lines[3].split()[:6] == ["12", "2026-11-13", "10:00:00", "real", "host1", "fail"]
    assert lines[-1].split() == ["guest-start", "33.3%", "(1", "of", "3", "runs)"]
