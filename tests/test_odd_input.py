"""Odd input on the command line and in lab.toml: a clear error, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from labs import job, labgate, step, write_lab
from test_config import HEAD, JOBS, problem_at


@pytest.mark.parametrize("command", [["flight", "show"], ["flight", "log"]])
def test_a_flight_id_past_the_stores_range_is_a_usage_error(
    tmp_path: Path, command: list[str]
) -> None:
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=job("a", step("s", "true")))
    args = [*command, "99999999999999999999", *(["a"] if command[1] == "log" else [])]
    proc = subprocess.run(labgate(lab_dir.path, *args), capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "99999999999999999999 is not in the range 1<=x<=9223372036854775807" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("branch[0].staging", 'staging = "--upload-pack=touch /tmp/pwned"'),
        ("branch[0].tested", 'tested = "-master"'),
        ("branch[0].staging", 'staging = "stag ing"'),
        ("branch[0].pin", 'pin = { linux = "--upload-pack=x" }'),
    ],
)
def test_a_ref_git_would_read_as_an_option_is_refused(key: str, line: str) -> None:
    name = line.partition(" ")[0]
    lines = [x for x in HEAD.splitlines() if not x.startswith(f"{name} =")]
    text = "\n".join(lines).replace('tree = "xen"', f'tree = "xen"\n{line}', 1) + JOBS
    problem = problem_at(text, key)
    assert "is not a ref name" in problem.message and "option" in problem.message
