"""`labgate findings` on a lab whose flights ran the real cppcheck: the text and JSON lists,
triage by an identity's prefix, untriage, the per-rule trend, and the errors a user can make."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from labs import labgate, local_host, write_lab
from test_findings import ANALYSE, LEAK, OOB


def run(lab: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(labgate(lab, *args), capture_output=True, text=True)


def test_findings_listed_triaged_and_trended_from_the_command_line(tmp_path: Path) -> None:
    lab = write_lab(tmp_path / "lab", trees={"xen": {"a.c": LEAK}}, hosts=local_host(),
                    jobs=ANALYSE)  # fmt: skip
    assert run(lab.path, "flight", "run", "main", "--blessing", "real").returncode == 0
    repo = lab.trees["xen"]
    sha = repo.commit("add oob()", files={"a.c": "/* moved */\n" + LEAK + OOB})
    repo.branch("staging")
    assert run(lab.path, "flight", "run", "main", "--blessing", "real").returncode == 0

    text = run(lab.path, "findings", "2")
    assert text.returncode == 1  # a new error-level finding blocks
    lines = text.stdout.splitlines()
    assert lines[0] == (
        "findings of flight 2 against baseline flight 1: 1 new (1 blocking), 0 fixed, 1 unchanged"
    )
    assert lines[1].startswith("  new   ")
    assert f"arrayIndexOutOfBounds (error) xen/a.c:16 @ {sha[:12]}:" in lines[1]
    assert lines[1].endswith("[blocks]") and len(lines) == 2

    listed = json.loads(run(lab.path, "findings", "2", "--json").stdout)
    new = next(f for f in listed["findings"] if f["state"] == "new")
    unchanged = next(f for f in listed["findings"] if f["state"] == "unchanged")
    assert (unchanged["rule"], unchanged["line"], unchanged["revision"]) == ("memleak", 8, sha)

    short = run(lab.path, "findings", "triage", new["identity"][:5], "--as", "intentional",
                "--reason", "r", "--by", "me")  # fmt: skip
    assert short.returncode == 2 and "give at least 8 characters" in short.stderr
    none = run(lab.path, "findings", "triage", "0123456789", "--as", "intentional",
               "--reason", "r", "--by", "me")  # fmt: skip
    assert none.returncode == 2 and "no finding in the store starts with it" in none.stderr
    done = run(lab.path, "findings", "triage", new["identity"][:8], "--as", "false-positive",
               "--reason", "index 4 is the sentinel", "--by", "Ann")  # fmt: skip
    assert done.returncode == 0, done.stderr
    after = run(lab.path, "findings", "2")
    assert after.returncode == 0
    assert "[false-positive by Ann: index 4 is the sentinel]" in after.stdout
    assert run(lab.path, "findings", "untriage", new["identity"]).returncode == 0
    again = run(lab.path, "findings", "untriage", new["identity"])
    assert again.returncode == 1 and "has no triage" in again.stderr
    assert run(lab.path, "findings", "2").returncode == 1

    trend = json.loads(run(lab.path, "findings", "trend", "main", "--json").stdout)
    assert trend == [
        {"flight": 1, "rule": "memleak", "count": 1},
        {"flight": 2, "rule": "arrayIndexOutOfBounds", "count": 1},
        {"flight": 2, "rule": "memleak", "count": 1},
    ]
    missing = run(lab.path, "findings", "99")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "labgate: flight 99 does not exist in this lab's store"
    assert run(lab.path, "findings", "trend", "nope").returncode == 2
