"""Odd input on the command line and in lab.toml: a clear error, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from labs import job, labgate, step, write_lab
from test_config import HEAD, JOBS, parse, problem_at


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


def _matrix_job(vars: int, values: int) -> str:
    matrix = ", ".join(f"v{i} = [{', '.join(str(n) for n in range(values))}]" for i in range(vars))
    name = "t" + "".join(f"-{{v{i}}}" for i in range(vars))
    step = '[[job.step]]\nname = "s"\nrun = "true"\n'
    return f'\n[[job]]\nname = "{name}"\nmatrix = {{ {matrix} }}\n{step}'


def test_a_matrix_of_a_billion_jobs_is_refused_before_it_is_expanded() -> None:
    text = HEAD + _matrix_job(9, 10)
    problem = problem_at(text, "job[0] (t-{v0}-{v1}-{v2}-{v3}-{v4}-{v5}-{v6}-{v7}-{v8}).matrix")
    assert "expands to 1,000,000,000 jobs" in problem.message
    assert "over the limit of 10,000 jobs" in problem.message
    assert "max_jobs" in (problem.fix or "")


def test_the_limit_counts_every_job_and_is_configurable() -> None:
    text = HEAD + _matrix_job(2, 60) + _matrix_job(1, 7000)  # 3,600 + 7,000
    problem = problem_at(text, "job[1] (t-{v0}).matrix")
    assert "expands to 7,000 jobs (10,600 with the jobs before it)" in problem.message
    raised = text.replace('name = "xen-lab"\n', 'name = "xen-lab"\nmax_jobs = 20000\n', 1)
    assert len(parse(raised).jobs) == 10_600
    lowered = HEAD.replace('name = "xen-lab"\n', 'name = "xen-lab"\nmax_jobs = 4\n', 1)
    assert (
        "limit of 4 jobs"
        in problem_at(lowered + JOBS + _matrix_job(1, 1), "job[2] (t-{v0}).matrix").message
    )


def test_labgate_check_refuses_a_huge_matrix_in_one_line(tmp_path: Path) -> None:
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=_matrix_job(9, 10))
    proc = subprocess.run(
        labgate(lab_dir.path, "check"), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert (
        "job[0] (t-{v0}-{v1}-{v2}-{v3}-{v4}-{v5}-{v6}-{v7}-{v8}).matrix" in proc.stderr
        and "1,000,000,000 jobs" in proc.stderr
    )
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
