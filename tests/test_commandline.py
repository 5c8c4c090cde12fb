"""What planning commands share: `flight run` and `host queue` read --rev, --job and --blessing
alike, and refuse a bad one with one clear line and exit status 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from labs import job, labgate, step, write_lab


@pytest.mark.parametrize("command", [["flight", "run"], ["host", "queue"]])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["main", "--rev", "t"], "--rev 't': expected TREE=REV"),
        (["main", "--rev", "=x"], "--rev '=x': expected TREE=REV"),
        (["main", "--rev", "t=nope"], "tree 't': unknown revision 'nope'"),
        (["nobranch"], "unknown branch 'nobranch'"),
    ],
)
def test_planning_commands_refuse_bad_options_alike(
    tmp_path: Path, command: list[str], args: list[str], message: str
) -> None:
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=job("a", step("s", "true")))
    proc = subprocess.run(labgate(lab_dir.path, *command, *args), capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_host_queue_plans_the_revision_asked_for(tmp_path: Path) -> None:
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=job("a", step("s", "true")))
    first = lab_dir.trees["t"].commit("second", files={"f": "y"})
    lab_dir.trees["t"].commit("third", files={"f": "z"})
    queued = subprocess.run(
        labgate(lab_dir.path, "host", "queue", "main", "--rev", f"t={first}", "--job", "a"),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    shown = subprocess.run(
        labgate(lab_dir.path, "flight", "show", queued.stdout.strip(), "--json"),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    flight = json.loads(shown.stdout)
    assert flight["revisions"] == {"t": first}
    assert [j["name"] for j in flight["jobs"]] == ["a"]
