"""Static analysis in the push gate, end to end: the real cppcheck (PyPI's cppcheck-py) in a lab
job on a C tree whose staging history shifts, renames, adds and fixes defects; the new finding
blocks the push, is blamed by bisect flights on the commit that added it, mailed to its author
through a real SMTP server (aiosmtpd), listed by `labgate findings`, triaged from the CLI, and
the push goes once it is triaged."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from integration.test_gate_mail import LIST, mail_section
from integration.test_mail import ServerFactory, free_port, smtp_server  # noqa: F401
from labs import labgate
from test_findings import ANALYSE, LEAK, OOB
from test_gate import ANN, BOB, Upstream, cycle, write_gate_lab

BASE = LEAK + "\nint leak2(void)\n{\n    char *q = malloc(8);\n    return q ? 1 : 0;\n}\n"


def staging_history(upstream: Upstream) -> list[str]:
    """master at BASE; staging five commits ahead, Bob's third one adding a defect."""
    base = upstream.commit("base", {"a.c": BASE, "VERSION": "1\n"}, ANN)
    upstream.push(base, "master")
    text = "/* the allocator's tests */\n\n" + BASE
    shas = [upstream.commit("a.c: a header comment", {"a.c": text}, ANN)]
    text = text.replace("int leak(int n)", "int leak_buffer(int n)")
    shas.append(upstream.commit("a.c: rename leak", {"a.c": text}, ANN))
    text += OOB
    shas.append(upstream.commit("a.c: add oob()", {"a.c": text}, BOB))
    shas.append(upstream.commit("b.c: new file", {"b.c": "int b(void) { return 0; }\n"}, ANN))
    text = text.replace("return q ? 1 : 0;", "free(q);\n    return 0;")
    shas.append(upstream.commit("a.c: free q in leak2()", {"a.c": text}, ANN))
    upstream.push(shas[-1], "staging")
    return shas


def findings(lab_dir: Path, flight: int | None) -> tuple[int, dict[str, Any]]:
    assert flight is not None
    done = subprocess.run(
        labgate(lab_dir, "findings", str(flight), "--json"), capture_output=True, text=True
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_a_new_finding_blocks_is_blamed_and_mailed_and_a_triage_lets_the_push_go(
    tmp_path: Path,
    smtp_server: ServerFactory,  # noqa: F811
) -> None:
    port = free_port()
    recorder = smtp_server(port)
    upstream = Upstream(tmp_path)
    shas = staging_history(upstream)
    lab_dir = write_gate_lab(tmp_path, upstream, database=None, extra=mail_section(port))
    with (lab_dir / "lab.toml").open("a") as toml:
        toml.write(ANALYSE)

    first = cycle(lab_dir)
    assert first.action == "not-pushed"
    assert "not pushing: new findings" in first.message
    assert upstream.ref("master") != shas[-1]
    status, listed = findings(lab_dir, first.flight)
    assert status == 1 and listed["baseline"] == first.baseline_flight
    assert listed["counts"] == {"new": 1, "unchanged": 1, "fixed": 1}
    by_state = {f["state"]: f for f in listed["findings"]}
    new = by_state["new"]
    assert (new["rule"], new["path"], new["function"], new["blocks"]) == (
        "arrayIndexOutOfBounds", "xen/a.c", "oob", True
    )  # fmt: skip
    assert new["line"] == 24 and new["revision"] == shas[-1]
    assert new["blamed"]["commit"] == shas[2]
    assert new["blamed"]["author"] == BOB[0] and new["blamed"]["email"] == BOB[1]
    assert by_state["unchanged"]["function"] == "leak_buffer"
    assert (by_state["fixed"]["function"], by_state["fixed"]["line"]) == ("leak2", 15)
    assert "arrayIndexOutOfBounds" in first.report and "introduced by xen" in first.report

    flight_mail, blame_mail = recorder.messages()
    assert flight_mail["To"] == LIST
    assert "arrayIndexOutOfBounds" in flight_mail.get_content()
    assert blame_mail["To"] == f"{BOB[0]} <{BOB[1]}>" and blame_mail["Cc"] == LIST
    body = blame_mail.get_content()
    assert f"xen {shas[2]} is the first bad commit" in body
    assert "new arrayIndexOutOfBounds finding" in body

    triage = subprocess.run(
        labgate(lab_dir, "findings", "triage", new["identity"][:10], "--as", "intentional",
                "--reason", "a test of the checker", "--by", "Ann"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert triage.returncode == 0, triage.stderr
    assert f"{new['identity']}: intentional by Ann: a test of the checker" in triage.stdout
    status, listed = findings(lab_dir, first.flight)
    assert status == 0
    assert listed["findings"][0]["triage"]["by"] == "Ann"

    second = cycle(lab_dir)
    assert second.action == "pushed"
    assert upstream.ref("master") == shas[-1]
    assert len(recorder.messages()) == 3  # the flight report only: a triaged finding is not blamed


def test_a_bad_sarif_file_makes_the_step_broken_naming_it(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path)
    base = upstream.commit("base", {"a.c": BASE, "VERSION": "1\n"}, ANN)
    upstream.push(base, "master")
    upstream.push(base, "staging")
    lab_dir = write_gate_lab(tmp_path, upstream, database=None)
    with (lab_dir / "lab.toml").open("a") as toml:
        toml.write(
            '\n[[job]]\nname = "analyse"\n[[job.step]]\nname = "cppcheck"\n'
            'run = "echo \'{{\\"runs\\": 3}}\' > out.sarif"\nresults = "sarif:out.sarif"\n'
        )
    done = subprocess.run(
        labgate(lab_dir, "flight", "run", "xen-unstable", "--job", "analyse", "--json"),
        capture_output=True, text=True,
    )  # fmt: skip
    flight = json.loads(done.stdout)
    [step] = flight["jobs"][0]["steps"]
    assert step["outcome"] == "broken"
    assert step["reason"].endswith("out.sarif: not a SARIF 2.1.0 log (no 'runs' array)")
