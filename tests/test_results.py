"""Results: JUnit XML and TAP files into test cases; malformed files name themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labgate.model import Outcome, TestCaseResult
from labgate.results import ResultsError, collect_results, parse_junit, parse_tap

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites>
  <testsuite name="api" tests="4">
    <testcase classname="tests.api" name="test_ok" time="0.25"/>
    <testcase classname="tests.api" name="test_bad" time="1.5">
      <failure message="assert 1 == 2">Traceback: boom</failure>
    </testcase>
    <testcase classname="tests.api" name="test_later"><skipped message="not today"/></testcase>
    <testcase name="test_error"><error message="fixture exploded"/></testcase>
  </testsuite>
</testsuites>
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def outcomes(cases: tuple[TestCaseResult, ...]) -> list[tuple[str, Outcome]]:
    return [(c.name, c.outcome) for c in cases]


# --- JUnit ---------------------------------------------------------------------------------


def test_junit_cases_with_outcomes_durations_and_messages(tmp_path: Path) -> None:
    cases = parse_junit(write(tmp_path / "r.xml", JUNIT))
    assert outcomes(cases) == [
        ("tests.api.test_ok", Outcome.PASS),
        ("tests.api.test_bad", Outcome.FAIL),
        ("tests.api.test_later", Outcome.SKIP),
        ("test_error", Outcome.FAIL),
    ]
    assert cases[0].duration_s == 0.25
    assert cases[1].message == "assert 1 == 2\nTraceback: boom"
    assert cases[2].message == "not today"


def test_junit_single_testsuite_root(tmp_path: Path) -> None:
    text = '<testsuite name="s"><testcase name="a"/><testcase name="b"/></testsuite>'
    assert outcomes(parse_junit(write(tmp_path / "r.xml", text))) == [
        ("a", Outcome.PASS),
        ("b", Outcome.PASS),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "<testsuite><testcase",
        "<html><body/></html>",
        '<testsuite><testcase name="a" time="soon"/></testsuite>',
        "",
    ],
)
def test_malformed_junit_names_the_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "out" / "bad.xml", text)
    with pytest.raises(ResultsError, match=r"out/bad\.xml"):
        parse_junit(path)


# --- TAP -----------------------------------------------------------------------------------

TAP = """TAP version 14
1..7
ok 1 - boots
not ok 2 - migrates
  ---
  message: guest lost
  severity: fail
  ...
ok 3 - saves # SKIP no disk
not ok 4 - resumes # TODO not written yet
ok 5 - escapes \\# a hash # todo
# a comment
ok 6
    # Subtest: nested
    ok 1 - inner
    1..1
ok 7 - nested
"""


def test_tap_points_directives_and_diagnostics(tmp_path: Path) -> None:
    cases = parse_tap(write(tmp_path / "t.tap", TAP))
    assert outcomes(cases) == [
        ("boots", Outcome.PASS),
        ("migrates", Outcome.FAIL),
        ("saves", Outcome.SKIP),
        ("resumes", Outcome.SKIP),
        ("escapes # a hash", Outcome.PASS),
        ("#6", Outcome.PASS),
        ("nested", Outcome.PASS),
    ]
    assert cases[1].message == "message: guest lost\nseverity: fail"
    assert cases[2].message == "no disk"
    assert cases[3].message == "TODO not written yet"


def test_tap_plan_at_the_end_and_without_numbers(tmp_path: Path) -> None:
    cases = parse_tap(write(tmp_path / "t.tap", "ok\nnot ok - second\n1..2\n"))
    assert outcomes(cases) == [("#1", Outcome.PASS), ("second", Outcome.FAIL)]


def test_tap_bail_out_is_a_failure_with_its_reason(tmp_path: Path) -> None:
    cases = parse_tap(write(tmp_path / "t.tap", "1..3\nok 1 - a\nBail out! disk full\nok 2\n"))
    assert outcomes(cases) == [("a", Outcome.PASS), ("(bail out)", Outcome.FAIL)]
    assert cases[-1].message == "disk full"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1..3\nok 1\nok 2\n", "planned 3 tests, ran 2"),
        ("ok 1\nok 2\n", "no plan: the run stopped early"),
        ("", "no plan: the run stopped early"),
    ],
)
def test_tap_run_that_stopped_early_fails(tmp_path: Path, text: str, message: str) -> None:
    cases = parse_tap(write(tmp_path / "t.tap", text))
    assert cases[-1] == TestCaseResult("(plan)", Outcome.FAIL, message=message)


def test_tap_skip_all_plan(tmp_path: Path) -> None:
    assert parse_tap(write(tmp_path / "t.tap", "TAP version 13\n1..0 # SKIP no hardware\n")) == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1..2\nok 1\n1..2\nok 2\n", "line 3: a second plan"),
        ("ok 1\n1..2\nok 2\n", "line 3: a test point after the plan"),
        ("1..2\nok 1\nok 3\n", "line 3: test number 3 out of sequence"),
        ("TAP version 12\n1..0\n", "line 1: unexpected version line"),
        ("1..1\nTAP version 13\nok 1\n", "line 2: unexpected version line"),
    ],
)
def test_malformed_tap_names_file_and_line(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path / "t.tap", text)
    with pytest.raises(ResultsError) as error:
        parse_tap(path)
    assert str(error.value).startswith(f"{path}: {problem}")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(["", " # SKIP why", " # TODO later"])),
        max_size=20,
    )
)
def test_tap_round_trip(
    tmp_path_factory: pytest.TempPathFactory, points: list[tuple[bool, str]]
) -> None:
    lines = [f"1..{len(points)}"]
    lines += [f"{'ok' if ok else 'not ok'} {n} - t{n}{d}" for n, (ok, d) in enumerate(points, 1)]
    path = tmp_path_factory.mktemp("tap") / "t.tap"
    cases = parse_tap(write(path, "\n".join(lines) + "\n"))
    assert len(cases) == len(points)
    for case, (ok, directive) in zip(cases, points, strict=True):
        if "SKIP" in directive or ("TODO" in directive and not ok):
            assert case.outcome is Outcome.SKIP
        else:
            assert case.outcome is (Outcome.PASS if ok else Outcome.FAIL)


# --- collect -------------------------------------------------------------------------------


def test_collect_reads_every_matching_file_in_order_and_unique_names(tmp_path: Path) -> None:
    write(tmp_path / "out" / "b.tap", "1..1\nok 1 - same\n")
    write(tmp_path / "out" / "a.tap", "1..2\nok 1 - same\nnot ok 2 - other\n")
    write(tmp_path / "out" / "ignored.txt", "not tap")
    cases = collect_results("tap:out/*.tap", tmp_path)
    assert outcomes(cases) == [
        ("same", Outcome.PASS),
        ("other", Outcome.FAIL),
        ("same #2", Outcome.PASS),
    ]


def test_collect_junit_recursive_glob(tmp_path: Path) -> None:
    write(tmp_path / "a" / "b" / "junit.xml", JUNIT)
    assert len(collect_results("junit:**/junit.xml", tmp_path)) == 4


def test_collect_without_matching_files_is_empty(tmp_path: Path) -> None:
    assert collect_results("junit:nothing/*.xml", tmp_path) == ()


@pytest.mark.parametrize("spec", ["xml:*.xml", "junit", "junit:", "tap:/etc/*", "tap:../x/*.tap"])
def test_bad_specs_are_results_errors(tmp_path: Path, spec: str) -> None:
    with pytest.raises(ResultsError, match="results"):
        collect_results(spec, tmp_path)


def test_collect_malformed_file_names_it(tmp_path: Path) -> None:
    write(tmp_path / "out" / "r.xml", "<testsuite>")
    with pytest.raises(ResultsError, match=r"out/r\.xml"):
        collect_results("junit:out/*.xml", tmp_path)
