"""One convention for every ``labgate`` command, checked by walking the click tree itself: a new
command has to say whether it shows results (then it takes ``--json``) or why not.

- ``--json`` alone (or ``--json -``) prints the JSON document alone on stdout; ``--json PATH``
  writes it to PATH and prints the text form;
- a usage or configuration error is one line ``labgate: ...`` on stderr and exit status 2;
- Ctrl-C exits 130 (``serve`` included, with no ``Aborted!``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from labgate.cli import TopGroup, main
from labgate.commandline import JsonOption, json_args
from labs import job, labgate, labgate_exe, local_host, step, write_lab
from reviewlab import SECRET_ENV, TOKEN_ENV, make_review_lab

# every command that shows results; `bisect run` takes --json PATH|- of its own (its tests check
# it), until the bisection's engineer moves it to labgate.commandline.json_option
SHOWS_RESULTS = {
    "check",
    "flight run",
    "flight resume",
    "flight show",
    "flight list",
    "gate",
    "history",
    "perf metrics",
    "perf history",
    "host list",
    "host show",
    "host check",
    "host queue",
    "review run",
    "review discrepancies",
    "user list",
    "embargo audit",
    "findings show",
    "findings trend",
    "access list",
    "access queue",
    "resident status",
}
OWN_JSON = {"bisect run"}
# commands that act or stream, and why they print no JSON document
NO_RESULT = {
    "flight log": "prints the step logs themselves",
    "demo": "tells a story on a terminal",
    "serve": "serves the JSON API; its log lines on stderr are JSON already",
    "host quarantine": "an action: one confirmation line",
    "host release": "an action: one confirmation line",
    "host reserve": "an action: one confirmation line",
    "host power": "prints the power command's own output",
    "host worker": "a daemon: runs the pool's jobs",
    "perf changepoints": "a filter: JSON lines in on stdin, JSON lines out, always",
    "user add": "an action: one confirmation line",
    "user join": "an action: one confirmation line",
    "user leave": "an action: one confirmation line",
    "user remove": "an action: one confirmation line",
    "token create": "prints the new token alone on stdout, for a script to take",
    "token revoke": "an action: one confirmation line",
    "embargo lift": "an action: the flights it made public, on one line",
    "findings triage": "an action: one confirmation line",
    "findings untriage": "an action: one confirmation line",
    "access approve": "prints the new user's token alone on stdout, for a script to take",
    "access refuse": "an action: one confirmation line",
    "resident start": "an action: one confirmation line",
    "resident stop": "an action: one confirmation line",
}


def commands(group: click.Group = main, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    """Every leaf command of the tree, as ``"flight run"``, loading the lazy groups."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} ")
        else:
            yield path, command


ALL = dict(commands())


def test_every_command_is_classified() -> None:
    assert set(ALL) == SHOWS_RESULTS | OWN_JSON | set(NO_RESULT)
    assert not SHOWS_RESULTS & set(NO_RESULT)


@pytest.mark.parametrize("path", sorted(SHOWS_RESULTS))
def test_commands_that_show_results_take_the_shared_json_option(path: str) -> None:
    assert any(isinstance(p, JsonOption) for p in ALL[path].params), path


@pytest.mark.parametrize("path", sorted(NO_RESULT))
def test_commands_without_a_result_have_no_json_option(path: str) -> None:
    assert not any("--json" in getattr(p, "opts", ()) for p in ALL[path].params), path


def test_lazy_commands_are_summarised_as_their_own_help_says() -> None:
    ctx = click.Context(main)
    for name, (_, summary) in TopGroup.LAZY.items():
        command = main.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(limit=1000) == summary


def _dummy_args(command: click.Command) -> list[str]:
    """Values for a command's required arguments and options: enough to get past the parser."""
    args = []
    for param in command.params:
        if isinstance(param, click.Option) and param.required:
            choice = isinstance(param.type, click.Choice)
            args += [param.opts[0], str(param.type.choices[0]) if choice else "x"]
        elif isinstance(param, click.Argument) and param.required:
            if isinstance(param.type, click.Choice):
                args.append(str(param.type.choices[0]))
            else:
                args.append("1")
    return args


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main.main(args, prog_name="labgate")
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


WITH_LAB = sorted(p for p, c in ALL.items() if any(x.name == "lab_dir" for x in c.params))


@pytest.mark.parametrize("path", WITH_LAB)
def test_a_missing_lab_is_one_line_and_exit_2(
    path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*path.split(), *_dummy_args(ALL[path]), "--lab", str(tmp_path / "nowhere")]
    status, out, err = _run(args, capsys)
    assert status == 2, (out, err)
    assert err.startswith("labgate: ") and err.count("\n") == 1, err
    assert "nowhere" in err


@pytest.mark.parametrize("path", sorted(set(ALL) - OWN_JSON))
def test_a_usage_error_is_one_line_and_exit_2(
    path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run([*path.split(), "--no-such-option"], capsys)
    assert status == 2, (out, err)
    assert err.startswith("labgate: No such option '--no-such-option' (see"), err
    assert f"labgate {path} --help" in err
    assert "Usage:" not in err and "Traceback" not in err


def testjson_args_take_a_path_only_when_it_cannot_be_an_argument() -> None:
    assert json_args(["--json", "12"], True) == ["--json=-", "12"]
    assert json_args(["--json", "out.json", "12"], True) == ["--json=out.json", "12"]
    assert json_args(["--json", "./out", "12"], True) == ["--json=./out", "12"]
    assert json_args(["--json", "-", "12"], True) == ["--json=-", "12"]
    assert json_args(["--json", "--lab", "x"], False) == ["--json=-", "--lab", "x"]
    assert json_args(["--json", "--"], False) == ["--json=-", "--"]
    assert json_args(["--json"], False) == ["--json=-"]
    assert json_args(["--json", "out"], False) == ["--json=out"]
    assert json_args(["--", "--json", "x"], True) == ["--", "--json", "x"]


# --- --json on every command that shows results, against a real lab --------------------------


HEALTHY_HOST = local_host("h0", slots=2) + 'health = "true"\n'


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A lab with one finished flight, and a review lab with its (empty) queue."""
    root = tmp_path_factory.mktemp("conventions")
    made = write_lab(
        root / "lab", trees={"t": {"f": "x"}}, hosts=HEALTHY_HOST, jobs=job("a", step("s", "true"))
    )
    ran = subprocess.run(
        labgate(made.path, "flight", "run", "main", "--json"), capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    review = make_review_lab(root / "review", f"sqlite:///{root / 'review.db'}")
    return {
        "lab": str(made.path),
        "flight": str(json.loads(ran.stdout)["id"]),
        "review": str(review.path),
    }


def _invocation(path: str, lab: dict[str, str]) -> list[str]:
    flight = lab["flight"]
    args = {
        "check": [],
        "flight run": ["main"],
        "flight resume": [flight],
        "flight show": [flight],
        "flight list": [],
        "gate": ["main", "--once"],
        "history": ["main", "a"],
        "perf metrics": [flight],
        "perf history": ["main", "a", "s", "time"],
        "host list": [],
        "host show": ["h0"],
        "host check": ["h0"],
        "host queue": ["main"],
        "review run": ["--once"],
        "review discrepancies": [],
        "user list": [],
        "embargo audit": ["security"],
        "findings show": [flight],
        "findings trend": ["main"],
        "access list": [],
        "access queue": [],
        "resident status": [],
    }[path]
    if path.startswith("resident"):  # this user's, not a lab's: no --lab
        return [labgate_exe(), *path.split(), *args]
    where = lab["review"] if path.startswith("review") else lab["lab"]
    return labgate(Path(where), *path.split(), *args)


ENV = {TOKEN_ENV: "t0ken", SECRET_ENV: "s3cret"}


def _proc(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **ENV})


@pytest.mark.parametrize("path", sorted(SHOWS_RESULTS))
def test_json_alone_prints_only_json_on_stdout(path: str, lab: dict[str, str]) -> None:
    proc = _proc([*_invocation(path, lab), "--json"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    json.loads(proc.stdout)  # the whole of stdout is the document


@pytest.mark.parametrize("path", sorted(SHOWS_RESULTS))
def test_json_path_writes_a_file_and_prints_text(
    path: str, lab: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "out.json"
    proc = _proc([*_invocation(path, lab), "--json", str(target)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = json.loads(target.read_text())
    try:
        printed = json.loads(proc.stdout)
    except json.JSONDecodeError:
        printed = None
    assert printed != document  # stdout has the text form, not the document


def test_json_dash_and_json_equals_path(lab: dict[str, str], tmp_path: Path) -> None:
    shown = _proc(labgate(Path(lab["lab"]), "flight", "show", "--json", "-", lab["flight"]))
    assert json.loads(shown.stdout)["id"] == int(lab["flight"])
    target = tmp_path / "flight"
    argv = labgate(Path(lab["lab"]), "flight", "show", f"--json={target}", lab["flight"])
    written = _proc(argv)
    assert written.returncode == 0, written.stderr
    assert json.loads(target.read_text())["id"] == int(lab["flight"])
    assert f"flight {lab['flight']}" in written.stdout


def test_json_before_an_argument_is_a_flag(lab: dict[str, str]) -> None:
    proc = _proc(labgate(Path(lab["lab"]), "flight", "show", "--json", lab["flight"]))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"] == int(lab["flight"])
    assert not (Path.cwd() / lab["flight"]).exists()


# --- Ctrl-C -----------------------------------------------------------------------------------


def test_serve_stops_on_ctrl_c_with_130(lab: dict[str, str]) -> None:
    argv = labgate(Path(lab["lab"]), "serve", "--listen", "127.0.0.1:0")
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) as server:
        assert server.stderr is not None
        assert "serving" in server.stderr.readline()  # bound and listening
        server.send_signal(signal.SIGINT)
        rest = server.stderr.read()
        assert server.wait(timeout=30) == 130
    assert "Aborted" not in rest and "Traceback" not in rest
