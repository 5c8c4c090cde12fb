"""What a new user meets in the first hour of ``labgate``: what a flight tests, history's columns,
answers to typos, output that scripts and terminals get whole, and where the demo writes."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from gitrepos import GitRepo
from labgate.model import Blessing, FlightResult, FlightState, Outcome
from labgate.text import flights_table, print_table
from labs import LabDir, job, labgate, local_host, step, write_lab

LONG_BRANCH = "xen-unstable-smoke-with-a-branch-name-longer-than-any-column-" + "x" * 20


def run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env})


@pytest.fixture
def lab(tmp_path: Path) -> LabDir:
    return write_lab(
        tmp_path / "lab",
        trees={"xen": {"f": "x"}, "linux": {"VERSION": "6.6\n"}},
        jobs=job("a", step("s", "true")),
        branch=LONG_BRANCH,
    )


def test_flight_run_says_which_revisions_it_tests_before_it_runs(lab: LabDir) -> None:
    proc = run(*labgate(lab.path, "flight", "run", LONG_BRANCH))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    xen = lab.trees["xen"].git("rev-parse", "staging")
    linux = lab.trees["linux"].git("rev-parse", "HEAD")
    assert lines[0] == f"flight 1: branch {LONG_BRANCH}, blessing adhoc, 1 jobs, testing:"
    assert lines[1].split() == ["linux", linux, "(HEAD)"]
    assert lines[2].split() == ["xen", xen, "(staging)"]
    assert lines[3] == "flight 1: pass a on local0"


def test_flight_run_with_json_says_it_on_stderr(lab: LabDir) -> None:
    proc = run(*labgate(lab.path, "flight", "run", LONG_BRANCH, "--rev", "xen=master", "--json"))
    assert proc.returncode == 0, proc.stderr
    master = lab.trees["xen"].git("rev-parse", "master")
    assert f"xen    {master}  (master)" in proc.stderr
    assert json.loads(proc.stdout)["revisions"]["xen"] == master


def test_output_off_a_terminal_is_never_wrapped_or_cut(lab: LabDir) -> None:
    run(*labgate(lab.path, "flight", "run", LONG_BRANCH))
    shown = run(*labgate(lab.path, "flight", "show", "1", "--json"))
    finished = json.loads(shown.stdout)["finished"]
    listed = run(*labgate(lab.path, "flight", "list"), COLUMNS="40")
    row = next(line for line in listed.stdout.splitlines() if LONG_BRANCH in line)
    assert finished in row and row.split()[1] == "1"


def _flight(branch: str) -> FlightResult:
    return FlightResult(
        id=7,
        branch=branch,
        blessing=Blessing.REAL,
        revisions={"xen": "0" * 40},
        state=FlightState.FINISHED,
        outcome=Outcome.PASS,
        started="2026-12-01T22:59:41+00:00",
        finished="2026-12-01T23:01:02+00:00",
        jobs=(),
    )


def test_a_table_wider_than_the_terminal_becomes_records_of_whole_values() -> None:
    out = io.StringIO()
    terminal = Console(file=out, force_terminal=True, width=40, color_system=None)
    print_table(terminal, flights_table([_flight(LONG_BRANCH)]))
    assert out.getvalue().splitlines() == [
        "flight 7",
        f"  branch: {LONG_BRANCH}",
        "  blessing: real",
        "  state: finished",
        "  outcome: pass",
        "  started: 2026-12-01T22:59:41+00:00",
        "  finished: 2026-12-01T23:01:02+00:00",
    ]


def test_a_table_that_fits_stays_a_table() -> None:
    out = io.StringIO()
    terminal = Console(file=out, force_terminal=True, width=120, color_system=None)
    print_table(terminal, flights_table([_flight("main")]))
    header = out.getvalue().splitlines()[1].split()
    assert header == ["┃", "flight", "┃", "branch", "┃", "blessing", "┃", "state", "┃", "outcome",
                      "┃", "started", "┃", "finished", "┃"]  # fmt: skip


def test_the_quick_bound_on_a_tables_width_is_never_below_its_measured_width() -> None:
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    from labgate.text import _width_at_most

    console = Console(file=io.StringIO(), width=10**6, color_system=None)
    table = Table(title="a title longer than every column put together, by far")
    for header in ("job", "outcome", "名前", "reason"):
        table.add_column(header)
    table.add_row("build-amd64", "[green]pass[/]", "ビルド", "")
    table.add_row("x", Text("broken", style="red"), "", "host lost: 漢字 " * 3)
    measured = Measurement.get(console, console.options.update(max_width=10**6), table).maximum
    assert measured <= _width_at_most(table) <= measured + len("[green][/]")
    table.add_row("y", "z", Table(), "")  # a cell that is not text: measured, not bounded
    assert _width_at_most(table) > 10**6


def _console(out: io.StringIO, *, width: int, terminal: bool, soft_wrap: bool) -> Console:
    return Console(
        file=out, force_terminal=terminal, width=width, color_system=None, soft_wrap=soft_wrap
    )


def _rich_rendering(table: Table, **kind: Any) -> str:
    out = io.StringIO()
    _console(out, **kind).print(table)
    return out.getvalue()


def _printed(table: Table, **kind: Any) -> str:
    out = io.StringIO()
    print_table(_console(out, **kind), table)
    return out.getvalue()


@pytest.mark.parametrize("seed", range(40))
def test_a_table_printed_without_rich_has_richs_own_characters(seed: int) -> None:
    """print_table's plain rendering (no colour) against rich's, on tables of random shapes:
    empty cells and columns, wide characters, markup, a title shorter or longer than the
    table, no rows."""
    import random

    from rich.text import Text

    from labgate.text import _plain_rendering

    rng = random.Random(seed)
    words = ["", "x", "pass", "[green]pass[/]", "[red]broken[/]", "ビルド", "名前 漢字", "a b  c",
             "s0:pass(0.05s) s1:fail(1.20s)", "gone: x", "[bold]b[/bold] c", "~/x [y]"]  # fmt: skip
    title = rng.choice([None, "t", "flight 7  branch main  blessing real  finished: pass",
                        "a title " * 12])  # fmt: skip
    table = Table(title=title, title_justify="left")
    for i in range(rng.randint(1, 6)):
        table.add_column(rng.choice(words[1:]) + str(i))
    for _ in range(rng.randint(0, 8)):
        cells = [rng.choice(words) for _ in table.columns]
        if rng.random() < 0.2:
            table.add_row(*cells[:-1], Text(cells[-1], style="red"))
        else:
            table.add_row(*cells)
    for terminal, soft_wrap in itertools.product((False, True), (False, True)):
        kind = {"width": 500, "terminal": terminal, "soft_wrap": soft_wrap}
        console = _console(io.StringIO(), **kind)
        plain = _plain_rendering(console, table)
        rich = _rich_rendering(table, **kind)
        table_width = len(rich.splitlines()[-1])  # its bottom rule
        if title is None or len(title) <= table_width:
            assert plain is not None
            assert plain + "\n" == rich
        else:  # rich wraps the title to the table's width
            assert plain is None
        assert _printed(table, **kind) == rich


def test_a_table_with_colour_or_a_cell_of_several_lines_is_left_to_rich() -> None:
    from labgate.text import _plain_rendering

    table = Table()
    table.add_column("job")
    table.add_row("build")
    coloured = Console(file=io.StringIO(), force_terminal=True, color_system="standard")
    assert _plain_rendering(coloured, table) is None
    plain = Console(file=io.StringIO(), width=200, color_system=None)
    assert _plain_rendering(plain, table) is not None
    table.add_row("two\nlines")
    assert _plain_rendering(plain, table) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuchbranch", "a"], "unknown branch 'nosuchbranch' (branches: main)"),
        (["main", "nosuchjob"], "branch 'main' has no job 'nosuchjob' (jobs: a)"),
        (["main", "a", "nosuchstep"], "job 'a' has no step 'nosuchstep' (steps: s)"),
    ],
)
def test_history_of_something_the_lab_does_not_have_is_a_usage_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    made = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=job("a", step("s", "true")))
    proc = run(*labgate(made.path, "history", *args))
    assert proc.returncode == 2
    assert proc.stderr == f"labgate: {message}\n"


def test_history_has_column_headers_and_dates(tmp_path: Path) -> None:
    jobs = job("a", step("s", "true"))
    made = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=jobs)
    run(*labgate(made.path, "flight", "run", "main"))
    shown = run(*labgate(made.path, "flight", "show", "1", "--json"))
    started = json.loads(shown.stdout)["started"]
    lines = run(*labgate(made.path, "history", "main", "a")).stdout.splitlines()
    assert lines[2].split() == ["flight", "started", "(UTC)", "blessing", "host", "outcome",
                                "revisions"]  # fmt: skip
    assert lines[3].split()[:6] == ["1", *started[:19].split("T"), "adhoc", "local0", "pass"]


def test_host_release_says_whether_the_host_was_out_of_service(tmp_path: Path) -> None:
    jobs = job("a", step("s", "true"))
    made = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, hosts=local_host("h0"), jobs=jobs)
    in_service = run(*labgate(made.path, "host", "release", "h0"))
    assert in_service.returncode == 0
    assert in_service.stdout == (
        "host h0 was in service (neither quarantined nor reserved): no change\n"
    )
    run(*labgate(made.path, "host", "quarantine", "h0", "--reason", "disk"))
    released = run(*labgate(made.path, "host", "release", "h0"))
    assert released.stdout.startswith("host h0 released (ended: quarantine (disk (by ")


FLIGHT_LINE = re.compile(r"^flight (\d+): (pass|fail|broken|blocked|skip|cancelled) \S+ on \S+$")


def test_demo_without_dir_writes_nothing_in_the_current_repository(tmp_path: Path) -> None:
    repo = GitRepo.init(tmp_path / "work")
    repo.commit("base", files={"README": "mine\n"})
    temp = tmp_path / "temp"
    temp.mkdir()
    script = labgate(tmp_path, "demo")[:-2]
    proc = subprocess.run(
        script, cwd=repo.path, capture_output=True, text=True,
        env={**os.environ, "TMPDIR": str(temp), "COLUMNS": "60"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in repo.path.iterdir()) == [".git", "README"]
    (made,) = temp.iterdir()
    assert made.name.startswith("labgate-demo-") and (made / "lab.toml").is_file()
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"Making a demo lab in {made} (a new temporary directory")
    # every job's line names its flight: the bisection runs two flights at once
    job_lines = [m for line in lines if (m := FLIGHT_LINE.match(line.strip()))]
    assert len({m[1] for m in job_lines}) >= 4
    assert not [line for line in lines if re.match(r"^\s*(pass|fail) \S+ on ", line)]
    # what to try next: each command whole on its line, whatever COLUMNS says
    assert f"  cd {made}" in lines
    log_line = re.compile(r"  labgate flight log \d+ test-amd64-xl +# its logs")
    assert any(log_line.fullmatch(line) for line in lines)
