"""Test case results a step leaves behind: JUnit XML (read with junitparser) and TAP 13/14.

A step declares them in lab.toml as ``results = "junit:<glob>"`` or ``"tap:<glob>"``, the glob
relative to the job's work dir (``"sarif:<glob>"`` declares static analysis findings instead:
`collect_findings`, see `labgate.findings`). `collect_results` reads every matching file, in
name order, into `labgate.model.TestCaseResult` values; a file that cannot be read raises
`ResultsError` naming it (the runner then marks the step broken with that message).

Outcomes: a JUnit ``<failure>`` or ``<error>`` is ``fail`` (an error is the code under test
erroring, not the lab), ``<skipped>`` is ``skip``. In TAP, ``not ok`` is ``fail``; ``# SKIP`` is
``skip`` (even on ``not ok``); a failing ``# TODO`` is ``skip`` (expected to fail, never a failure)
and a passing one is ``pass``.

Names are ``classname.name`` for JUnit and the description for TAP (``#<number>`` without one);
a name seen again gets `` #2``, `` #3``... so every test case of a step has its own history.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from junitparser import Error, Failure, JUnitXml, JUnitXmlError, Skipped

from labgate.model import Outcome, TestCaseResult

if TYPE_CHECKING:
    from labgate.findings.model import Finding

__all__ = ["ResultsError", "collect_findings", "collect_results", "parse_junit", "parse_tap"]


class ResultsError(Exception):
    """A results spec or file labgate cannot read; the message names the file and the problem."""


# --- JUnit ---------------------------------------------------------------------------------


def parse_junit(path: Path) -> tuple[TestCaseResult, ...]:
    """The test cases of a JUnit XML file (``<testsuites>`` or a single ``<testsuite>``)."""
    try:
        document = JUnitXml.fromfile(str(path))
        return tuple(_junit_case(case) for suite in document for case in suite)
    except (ET.ParseError, JUnitXmlError, ValueError, TypeError, AttributeError) as error:
        raise ResultsError(f"{path}: not a readable JUnit XML file: {error}") from error
    except OSError as error:
        raise ResultsError(f"{path}: cannot read: {error.strerror or error}") from error


def _junit_case(case: object) -> TestCaseResult:
    classname = getattr(case, "classname", None)
    name = getattr(case, "name", None)
    if not name:
        raise ValueError("a <testcase> has no name attribute")
    results = list(getattr(case, "result", []))
    outcome, message = Outcome.PASS, None
    for result in results:
        if isinstance(result, Failure | Error):
            outcome = Outcome.FAIL
            message = _message(result.message, result.text)
            break
        if isinstance(result, Skipped):
            outcome, message = Outcome.SKIP, _message(result.message, result.text)
    duration = getattr(case, "time", None)
    return TestCaseResult(
        name=f"{classname}.{name}" if classname else str(name),
        outcome=outcome,
        duration_s=float(duration) if duration is not None else None,
        message=message,
    )


def _message(message: str | None, text: str | None) -> str | None:
    parts = [p.strip() for p in (message, text) if p and p.strip()]
    return "\n".join(parts) or None


# --- TAP -----------------------------------------------------------------------------------

_VERSION = re.compile(r"^TAP version (\d+)\s*$", re.IGNORECASE)
_PLAN = re.compile(r"^1\.\.(\d+)\s*(?:#\s*(.*))?$")
_TEST = re.compile(r"^(not ok|ok)\b\s*(\d+)?\s*(?:-\s*)?(.*)$")
_BAIL = re.compile(r"^Bail out!\s*(.*)$", re.IGNORECASE)
_DIRECTIVE = re.compile(r"^\s*(skip|todo)\S*(?:\s+(.*))?$", re.IGNORECASE | re.DOTALL)
_UNESCAPED_HASH = re.compile(r"(?<!\\)((?:\\\\)*)#")


@dataclass
class _TapPoint:
    ok: bool
    description: str
    directive: str | None  # "skip" or "todo"
    explanation: str
    diagnostics: list[str]


def parse_tap(path: Path) -> tuple[TestCaseResult, ...]:
    """The test points of a TAP 13/14 stream.

    Read: an optional ``TAP version 13|14`` first line, the plan (``1..N``, first or last; ``1..0``
    is a run that skipped everything), test points with SKIP/TODO directives and ``\\#`` escapes,
    YAML diagnostics (kept as the failure's message, unparsed) and ``Bail out!``. Indented lines
    (TAP 14 subtests and their ``# Subtest`` comments) are ignored: the parent test point that
    follows a subtest carries its outcome. Comments, pragmas and unknown lines are ignored, as TAP
    says.

    A run that stopped early is reported as a failing pseudo test case: ``(bail out)`` with the
    reason, or ``(plan)`` when the plan is missing or the count differs from it. A document that
    breaks TAP's grammar (a second plan, a plan amid test points, a bad version line, a test number
    out of sequence) raises `ResultsError`.
    """
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise ResultsError(f"{path}: cannot read: {error.strerror or error}") from error
    try:
        return _parse_tap_lines(lines)
    except _TapError as error:
        raise ResultsError(f"{path}: line {error.line}: {error.message}") from None


class _TapError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


def _parse_tap_lines(lines: list[str]) -> tuple[TestCaseResult, ...]:
    points: list[_TapPoint] = []
    plan: int | None = None
    plan_after_points = False
    bailed: str | None = None
    in_yaml = False
    for number, line in enumerate(lines, start=1):
        if in_yaml:
            if line.strip() == "...":
                in_yaml = False
            else:
                points[-1].diagnostics.append(line[2:] if line.startswith("  ") else line.lstrip())
            continue
        if line[:1].isspace():
            if points and line.startswith("  ---") and line.strip() == "---":
                in_yaml = True
            continue
        line = line.rstrip()
        if (version := _VERSION.match(line)) is not None:
            if number != 1 or version.group(1) not in ("13", "14"):
                raise _TapError(number, f"unexpected version line {line!r} (TAP 13 or 14, first)")
            continue
        if (plan_match := _PLAN.match(line)) is not None:
            if plan is not None:
                raise _TapError(number, "a second plan")
            plan = int(plan_match.group(1))
            plan_after_points = bool(points)
            continue
        if (test := _TEST.match(line)) is not None:
            if plan_after_points:
                raise _TapError(number, "a test point after the plan that ended the stream")
            given = test.group(2)
            if given is not None and int(given) != len(points) + 1:
                raise _TapError(
                    number, f"test number {given} out of sequence (expected {len(points) + 1})"
                )
            points.append(_tap_point(test.group(1) == "ok", test.group(3)))
            continue
        if (bail := _BAIL.match(line)) is not None:
            bailed = bail.group(1).strip() or "no reason given"
            break
        # Comments (#), pragmas and anything else: ignored, as TAP says.
    return _tap_results(points, plan, bailed)


def _tap_point(ok: bool, rest: str) -> _TapPoint:
    match = _UNESCAPED_HASH.search(rest)
    description, directive, explanation = rest, None, ""
    if match is not None:
        description = rest[: match.start()] + match.group(1)
        found = _DIRECTIVE.match(rest[match.end() :])
        if found is not None:
            directive, explanation = found.group(1).lower(), (found.group(2) or "").strip()
    description = description.strip().replace("\\#", "#").replace("\\\\", "\\")
    return _TapPoint(ok, description, directive, explanation, [])


def _tap_results(
    points: list[_TapPoint], plan: int | None, bailed: str | None
) -> tuple[TestCaseResult, ...]:
    results = []
    for index, point in enumerate(points, start=1):
        name = point.description or f"#{index}"
        diagnostics = "\n".join(point.diagnostics).strip() or None
        if point.directive == "skip":
            results.append(TestCaseResult(name, Outcome.SKIP, message=point.explanation or None))
        elif point.directive == "todo":
            outcome = Outcome.PASS if point.ok else Outcome.SKIP
            results.append(
                TestCaseResult(name, outcome, message=f"TODO {point.explanation}".strip())
            )
        else:
            outcome = Outcome.PASS if point.ok else Outcome.FAIL
            results.append(TestCaseResult(name, outcome, message=diagnostics))
    if bailed is not None:
        results.append(TestCaseResult("(bail out)", Outcome.FAIL, message=bailed))
    elif plan is None:
        results.append(
            TestCaseResult("(plan)", Outcome.FAIL, message="no plan: the run stopped early")
        )
    elif plan != len(points):
        message = f"planned {plan} tests, ran {len(points)}"
        results.append(TestCaseResult("(plan)", Outcome.FAIL, message=message))
    return tuple(results)


# --- collecting ----------------------------------------------------------------------------

_PARSERS = {"junit": parse_junit, "tap": parse_tap}


def collect_results(spec: str, root: Path) -> tuple[TestCaseResult, ...]:
    """The test cases of every file matching ``spec`` (``"junit:<glob>"`` or ``"tap:<glob>"``,
    the glob relative to ``root``), files in name order. No matching file gives ``()``: the step's
    own outcome says whether it ran. A ``"sarif:<glob>"`` spec has no test cases: ``()``."""
    kind, pattern = _split(spec)
    if kind == SARIF:
        return ()
    parse = _PARSERS[kind]
    cases: list[TestCaseResult] = []
    for path in _files(root, pattern):
        cases += parse(path)
    return _unique(cases)


SARIF = "sarif"


def collect_findings(spec: str, root: Path, job: str, step: str) -> list[Finding] | None:
    """The static analysis findings of every SARIF file matching ``spec`` (``"sarif:<glob>"``,
    relative to ``root``, the job's work dir, whose files give each finding's snippet), files in
    name order; None for a spec of another kind."""
    kind, pattern = _split(spec)
    if kind != SARIF:
        return None
    from labgate.findings.sarif import SarifError, parse_sarif

    findings: list[Finding] = []
    for path in _files(root, pattern):
        try:
            findings += parse_sarif(path, root, job, step)
        except SarifError as error:
            raise ResultsError(str(error)) from error
    return findings


def _split(spec: str) -> tuple[str, str]:
    kind, sep, pattern = spec.partition(":")
    if not sep or (kind not in _PARSERS and kind != SARIF) or not pattern:
        raise ResultsError(
            f"results {spec!r}: expected 'junit:<glob>', 'tap:<glob>' or 'sarif:<glob>'"
        )
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise ResultsError(f"results {spec!r}: the glob must stay inside the job's work dir")
    return kind, pattern


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.glob(pattern) if p.is_file())


def _unique(cases: list[TestCaseResult]) -> tuple[TestCaseResult, ...]:
    seen: dict[str, int] = {}
    unique = []
    for case in cases:
        count = seen[case.name] = seen.get(case.name, 0) + 1
        if count > 1:
            case = TestCaseResult(
                f"{case.name} #{count}", case.outcome, case.duration_s, case.message
            )
        unique.append(case)
    return tuple(unique)
