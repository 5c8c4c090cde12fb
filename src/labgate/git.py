"""The one git wrapper: everything labgate does with git goes through the git CLI here.

Each tree gets a bare local mirror under the lab's mirror dir, fetched before a flight is planned;
job work dirs are shared clones of that mirror (``git clone --shared``), cheap to make and safe to
delete with the work dir, even after a crash.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
}


class GitError(Exception):
    """A git command failed; the message says which and what git said."""


class UnknownRevision(GitError):
    def __init__(self, tree: str, rev: str) -> None:
        super().__init__(f"tree {tree!r}: unknown revision {rev!r} (not a commit git can find)")
        self.tree = tree
        self.rev = rev


def git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``git ARGS`` and return its standard output (stripped of the final newline)."""
    cmd = ["git"]
    if git_dir is not None:
        cmd += ["--git-dir", str(git_dir)]
    cmd += list(args)
    full_env = {**os.environ, **_GIT_ENV, **(env or {})}
    proc = subprocess.run(
        cmd, cwd=cwd, env=full_env, input=input, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise GitError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.rstrip("\n")


def _mirror_name(tree: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", tree) + ".git"


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    email: str
    date: str
    subject: str


class Mirrors:
    """Bare mirrors of the lab's trees, one per tree, under ``root``."""

    def __init__(self, root: Path, urls: dict[str, str]) -> None:
        self.root = root
        self.urls = urls

    def path(self, tree: str) -> Path:
        return self.root / _mirror_name(tree)

    def update(self, tree: str) -> Path:
        """Create or fetch the tree's mirror; returns its path."""
        path = self.path(tree)
        url = self.urls[tree]
        if not (path / "HEAD").exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            if tmp.exists():
                git(["worktree", "prune"], git_dir=tmp, check=False)
                shutil.rmtree(tmp, ignore_errors=True)
            try:
                git(["clone", "--mirror", "--quiet", url, str(tmp)])
            except GitError as error:
                raise GitError(f"tree {tree!r}: cannot clone {url}: {error}") from error
            tmp.rename(path)
        else:
            try:
                git(["fetch", "--prune", "--quiet", "--force", url, "+refs/*:refs/*"], git_dir=path)
            except GitError as error:
                raise GitError(f"tree {tree!r}: cannot fetch {url}: {error}") from error
        return path

    def resolve(self, tree: str, rev: str) -> str:
        """The full sha of ``rev`` in the tree's mirror (a ref, a sha, ``ref~2``...)."""
        out = git(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
            git_dir=self.path(tree),
            check=False,
        )
        if not re.fullmatch(r"[0-9a-f]{40,64}", out):
            raise UnknownRevision(tree, rev)
        return out

    def checkout(self, tree: str, sha: str, dest: Path) -> None:
        """Make ``dest`` a shared clone of the mirror with ``sha`` checked out (detached)."""
        mirror = self.path(tree)
        git(["clone", "--shared", "--no-checkout", "--quiet", str(mirror), str(dest)])
        git(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", sha], cwd=dest)

    def commit(self, tree: str, sha: str) -> Commit:
        out = git(
            ["show", "-s", "--format=%H%x00%an%x00%ae%x00%aI%x00%s", sha],
            git_dir=self.path(tree),
        )
        full, author, email, date, subject = out.split("\x00", 4)
        return Commit(full, author, email, date, subject)
