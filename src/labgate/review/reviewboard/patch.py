"""A diff → a commit to test: the diff applied onto its base commit in the tree's mirror, with
``git apply --cached`` on a throwaway index (the mirror is bare; nothing else of it changes).

The commit's author, date and message come from the review request and the diff, so applying
the same diff again (a restart before the flight was planned) makes the same commit."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from labgate.git import GitError, Mirrors, ensure_commit, git


@dataclass(frozen=True)
class Patch:
    """A diff revision of a review request and what its commit says."""

    diff: bytes
    base: str
    subject: str
    author: str
    email: str
    date: str
    """ISO 8601, the diff's upload time."""
    trailer: str
    """The last paragraph of the message: where the diff comes from."""
    ref: str
    """Where the commit is kept in the mirror (``refs/labgate/...``)."""


def apply_patch(mirrors: Mirrors, tree: str, patch: Patch) -> str:
    """The sha of ``patch`` applied onto its base commit, in the tree's mirror. GitError when
    the base commit cannot be had or the diff does not apply (git's message says where)."""
    ensure_commit(mirrors, tree, patch.base)
    git_dir = mirrors.path(tree)
    base = mirrors.resolve(tree, patch.base)
    with tempfile.TemporaryDirectory(prefix="labgate-patch-") as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        diff = Path(tmp) / "patch.diff"
        diff.write_bytes(patch.diff)
        git(["read-tree", base], git_dir=git_dir, env=index)
        try:
            git(["apply", "--cached", "--whitespace=nowarn", str(diff)], git_dir=git_dir, env=index)
        except GitError as error:
            raise GitError(
                f"tree {tree!r}: the diff does not apply to {base[:12]}: {error}"
            ) from None
        files = git(["write-tree"], git_dir=git_dir, env=index)
    person = {
        "GIT_AUTHOR_NAME": patch.author,
        "GIT_AUTHOR_EMAIL": patch.email,
        "GIT_AUTHOR_DATE": patch.date,
        "GIT_COMMITTER_NAME": patch.author,
        "GIT_COMMITTER_EMAIL": patch.email,
        "GIT_COMMITTER_DATE": patch.date,
    }
    message = f"{patch.subject}\n\n{patch.trailer}\n"
    sha = git(["commit-tree", files, "-p", base], git_dir=git_dir, env=person, input=message)
    git(["update-ref", patch.ref, sha], git_dir=git_dir)
    return sha
