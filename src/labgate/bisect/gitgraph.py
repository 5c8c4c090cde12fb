"""Reading a bisection range from a git repository with the git CLI.

``git`` here is a thin adapter over ``labgate.git.run_git``, the one place labgate starts git.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labgate.bisect.engine import BisectError, TreeRange
from labgate.git import GitError, git, run_git

__all__ = ["GitError", "commit_info", "is_ancestor", "read_range", "resolve", "toplevel"]


@dataclass(frozen=True)
class CommitInfo:
    """What a person needs to recognise a commit."""

    sha: str
    author: str
    date: str
    subject: str


def toplevel(path: Path) -> Path:
    """The root of the working tree containing ``path``; BisectError outside a repository."""
    done = run_git(["rev-parse", "--show-toplevel"], cwd=path)
    if done.returncode != 0:
        raise BisectError(f"{path} is not inside a git repository")
    return Path(done.stdout.strip())


def resolve(repo: Path, rev: str) -> str:
    """The full sha of the commit ``rev`` names; BisectError when it names none."""
    done = run_git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"], cwd=repo
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise BisectError(f"unknown revision {rev!r}: it names no commit in {repo}")
    return done.stdout.strip()


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    """True when ``ancestor`` is reachable from ``descendant`` (or is it)."""
    done = run_git(["merge-base", "--is-ancestor", ancestor, descendant], cwd=repo)
    if done.returncode not in (0, 1):
        raise GitError(f"git merge-base --is-ancestor: {done.stderr.strip()}")
    return done.returncode == 0


def read_range(repo: Path, good: Sequence[str], bad: str, *, tree: str = "") -> TreeRange:
    """The range to search: every commit reachable from ``bad`` and from no ``good``, with its
    parents (parents outside the range included, as git lists them).

    ``good`` and ``bad`` are revisions as a user types them; each good must be an ancestor of bad.
    """
    if not good:
        raise BisectError("at least one --good revision is needed")
    bad_sha = resolve(repo, bad)
    resolved = [(rev, resolve(repo, rev)) for rev in good]
    for rev, sha in resolved:
        if sha == bad_sha:
            raise BisectError(f"good revision {rev!r} is the bad revision {bad!r}")
        if not is_ancestor(repo, sha, bad_sha):
            raise BisectError(
                f"good revision {rev!r} ({sha[:12]}) is not an ancestor of bad revision {bad!r} "
                f"({bad_sha[:12]}): the range between them is not a regression"
            )
    good_shas = tuple(dict.fromkeys(sha for _, sha in resolved))
    listing = git(["rev-list", "--parents", bad_sha, *(f"^{sha}" for sha in good_shas)], cwd=repo)
    parents: dict[str, tuple[str, ...]] = {}
    for line in listing.splitlines():
        commit, *rest = line.split()
        parents[commit] = tuple(rest)
    if not parents:
        raise BisectError(f"no commit between good {list(good)} and bad {bad!r}")
    return TreeRange(tree=tree, parents=parents, good=good_shas, bad=bad_sha)


def commit_info(repo: Path, sha: str) -> CommitInfo:
    """Author, date and subject of ``sha``."""
    shown = git(["show", "-s", "--format=%an <%ae>%x00%ad%x00%s", "--date=iso", sha], cwd=repo)
    author, date, subject = shown.split("\x00", 2)
    return CommitInfo(sha=sha, author=author, date=date, subject=subject)
