"""Lab directories for tests: git trees made with `GitRepo` and a lab.toml written from text.

    lab = write_lab(
        tmp_path / "lab",
        trees={"xen": {"build.sh": "#!/bin/sh\\necho built\\n"}},
        hosts=local_host("h0", slots=2),
        jobs=job("build", step("build", "sh xen/build.sh")),
        database=database_url,
    )
    proc = subprocess.run(labgate(lab.path, "flight", "run", lab.branch), ...)

The first tree is the one under test: the branch (`main` by default) tests its `staging` ref and
pushes to `master`; both point at the tree's one commit. Other trees are taken at their HEAD.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gitrepos import Files, GitRepo


@dataclass(frozen=True)
class LabDir:
    """A lab written by `write_lab`: its directory, its trees and the branch it tests."""

    path: Path
    trees: Mapping[str, GitRepo]
    branch: str

    @property
    def toml(self) -> Path:
        return self.path / "lab.toml"


def toml_str(value: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML for any text we write)."""
    return json.dumps(value)


def local_host(name: str = "local0", *, slots: int = 1, flags: Sequence[str] = ()) -> str:
    """A `[[host]]` table of a local host."""
    flag_list = ", ".join(toml_str(f) for f in flags)
    return f"[[host]]\nname = {toml_str(name)}\nflags = [{flag_list}]\nslots = {slots}\n"


def step(name: str, run: str, *, timeout: float | None = None) -> str:
    """A `[[job.step]]` table."""
    text = f"[[job.step]]\nname = {toml_str(name)}\nrun = {toml_str(run)}\n"
    return text + (f"timeout = {timeout}\n" if timeout is not None else "")


def job(name: str, *steps: str, depends: Sequence[str] = ()) -> str:
    """A `[[job]]` table followed by its steps (made with `step`)."""
    text = f"[[job]]\nname = {toml_str(name)}\n"
    if depends:
        text += f"depends = [{', '.join(toml_str(d) for d in depends)}]\n"
    return text + "".join(steps)


def make_tree(path: Path, files: Files) -> GitRepo:
    """A repository with one commit of `files`, on both `master` and `staging`."""
    repo = GitRepo.init(path)
    repo.commit("initial", files=files)
    repo.branch("staging")
    return repo


def write_lab(
    path: Path,
    *,
    trees: Mapping[str, Files],
    jobs: str,
    hosts: str | None = None,
    database: str | None = None,
    branch: str = "main",
    lab_keys: str = "",
) -> LabDir:
    """Make a lab at `path`: each tree a repository under `path/trees/`, and a lab.toml with one
    branch testing the first tree, then `hosts` (default: one local host of one slot) and `jobs`
    (TOML text; see `job` and `step`). `database` is a SQLAlchemy URL (default: the lab's own
    SQLite file); `lab_keys` more lines of the `[lab]` table."""
    if not trees:
        raise ValueError("a lab needs at least one tree")
    path.mkdir(parents=True, exist_ok=True)
    repos = {name: make_tree(path / "trees" / name, files) for name, files in trees.items()}
    lines = ["[lab]", 'name = "test-lab"']
    if database is not None:
        lines.append(f"database = {toml_str(database)}")
    if lab_keys:
        lines.append(lab_keys)
    for name, repo in repos.items():
        lines += ["", "[[tree]]", f"name = {toml_str(name)}", f"url = {toml_str(str(repo.path))}"]
    lines += [
        "",
        "[[branch]]",
        f"name = {toml_str(branch)}",
        f"tree = {toml_str(next(iter(repos)))}",
    ]
    text = "\n".join(lines) + "\n\n" + (hosts or local_host()) + "\n" + jobs
    (path / "lab.toml").write_text(text)
    return LabDir(path, repos, branch)


def labgate_exe() -> str:
    """The console script of this Python (not a PATH shim, which adds its own start-up)."""
    script = Path(sys.executable).parent / "labgate"
    return str(script) if script.exists() else shutil.which("labgate") or "labgate"


@contextmanager
def resident_controller(directory: Path) -> Iterator[None]:
    """A resident controller of this process's own (its socket in ``directory``, which
    ``LABGATE_RESIDENT_DIR`` names from now on), started here and stopped on leaving."""
    os.environ["LABGATE_RESIDENT_DIR"] = str(directory)
    subprocess.run([labgate_exe(), "resident", "start"], stdout=subprocess.DEVNULL, check=True)
    try:
        yield
    finally:
        subprocess.run([labgate_exe(), "resident", "stop"], stdout=subprocess.DEVNULL)


def labgate(lab_dir: Path, *args: str) -> list[str]:
    """The command line of `labgate --lab LAB_DIR ...`-style calls (see :func:`labgate_exe`),
    with `--lab` after the subcommand."""
    return [labgate_exe(), *args, "--lab", str(lab_dir)]
