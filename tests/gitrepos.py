"""Real git repositories with a chosen history, for tests.

    repo = GitRepo.init(tmp_path / "xen")
    base = repo.commit("base", files={"README": "xen\\n"})
    fix = repo.commit("fix", files={"a.c": "int a;\\n"}, author=("Ann", "ann@example.org"))
    repo.branch("staging", at=fix)
    merge = repo.merge("topic", message="Merge topic")

Every commit gets a fixed date (one minute after the previous one in this repository), and git
reads no global or system configuration, so the same history gives the same shas on any machine.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULT_AUTHOR = ("Lab Tester", "tester@example.org")
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

# None deletes the file; bytes are written as they are.
Files = Mapping[str, str | bytes | None]


class GitError(RuntimeError):
    """A git command failed; the message holds its output."""


@dataclass
class GitRepo:
    """A git working tree made for one test; methods return full shas."""

    path: Path
    _clock: int = field(default=0, repr=False)

    @classmethod
    def init(cls, path: Path, branch: str = "master") -> GitRepo:
        path.mkdir(parents=True, exist_ok=True)
        repo = cls(path)
        repo.git("-c", f"init.defaultBranch={branch}", "init", "-q")
        repo.git("config", "user.name", DEFAULT_AUTHOR[0])
        repo.git("config", "user.email", DEFAULT_AUTHOR[1])
        repo.git("config", "commit.gpgsign", "false")
        return repo

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def git(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        """Run git in the repository and return its stdout, stripped."""
        full_env = {
            **os.environ,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
            **(env or {}),
        }
        result = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env=full_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise GitError(
                f"git {' '.join(args)} exited with {result.returncode} in {self.path}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout.strip()

    def _identity(self, author: tuple[str, str] | None) -> dict[str, str]:
        self._clock += 1
        date = (EPOCH + timedelta(minutes=self._clock)).isoformat()
        name, email = author or DEFAULT_AUTHOR
        return {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": DEFAULT_AUTHOR[0],
            "GIT_COMMITTER_EMAIL": DEFAULT_AUTHOR[1],
            "GIT_COMMITTER_DATE": date,
        }

    def write(self, files: Files) -> None:
        """Write (or delete, for None) files in the working tree and stage them."""
        for name, content in files.items():
            target = self.path / name
            if content is None:
                self.git("rm", "-q", "--", name)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
            self.git("add", "--", name)

    def commit(
        self,
        message: str,
        files: Files | None = None,
        author: tuple[str, str] | None = None,
    ) -> str:
        """Commit `files` (path -> content) on the current branch; empty commits are allowed."""
        self.write(files or {})
        self.git("commit", "-q", "--allow-empty", "-m", message, env=self._identity(author))
        return self.rev("HEAD")

    def branch(self, name: str, at: str = "HEAD") -> str:
        """Create or move branch `name` to `at` (without checking it out)."""
        self.git("branch", "-f", name, at)
        return self.rev(name)

    def checkout(self, ref: str) -> None:
        self.git("checkout", "-q", ref)

    def merge(
        self,
        ref: str,
        into: str | None = None,
        message: str | None = None,
        author: tuple[str, str] | None = None,
    ) -> str:
        """Merge `ref` into `into` (default: the current branch) with a merge commit."""
        if into is not None:
            self.checkout(into)
        self.git(
            "merge",
            "-q",
            "--no-ff",
            "-m",
            message or f"Merge {ref}",
            ref,
            env=self._identity(author),
        )
        return self.rev("HEAD")

    def rev(self, ref: str) -> str:
        """The full sha of the commit `ref` names."""
        return self.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")

    def parents(self, ref: str = "HEAD") -> list[str]:
        return self.git("rev-list", "--parents", "-n", "1", ref).split()[1:]


@dataclass(frozen=True)
class CommitSpec:
    """One commit for `make_repo`."""

    message: str
    files: Files = field(default_factory=dict)
    author: tuple[str, str] | None = None


def make_repo(path: Path, commits: Iterable[CommitSpec | str]) -> tuple[GitRepo, list[str]]:
    """A repository with a linear history on master; returns it and the shas, oldest first."""
    repo = GitRepo.init(path)
    shas = []
    for spec in commits:
        if isinstance(spec, str):
            spec = CommitSpec(spec)
        shas.append(repo.commit(spec.message, files=spec.files, author=spec.author))
    return repo, shas
