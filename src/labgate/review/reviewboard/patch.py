"""A diff → a commit to test: the diff applied onto its base commit in the tree's mirror, with
``git apply --cached`` on a throwaway index (the mirror is bare; nothing else of it changes).

The commit's author, date and message come from the review request and the diff, so applying
the same diff again (a restart before the flight was planned) makes the same commit. It is kept
at ``refs/labgate/reviewboard/<name>/<request>/<revision>`` in the mirror and pushed there in
the tree's URL, where the pool's workers on other machines fetch it from."""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from labgate.git import Mirrors, ensure_commit, git, push_error, run_git
from labgate.review.base import PatchFailed

log = logging.getLogger("labgate.review.reviewboard")

_HUNK = re.compile(r"^error: patch failed: (?P<file>.+):(?P<line>\d+)$", re.MULTILINE)


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
    the base commit cannot be had; PatchFailed (see :func:`why_not_applied`) when the diff does
    not apply."""
    ensure_commit(mirrors, tree, patch.base)
    git_dir = mirrors.path(tree)
    base = mirrors.resolve(tree, patch.base)
    with tempfile.TemporaryDirectory(prefix="labgate-patch-") as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        diff = Path(tmp) / "patch.diff"
        diff.write_bytes(patch.diff)
        git(["read-tree", base], git_dir=git_dir, env=index)
        applied = run_git(
            ["apply", "--cached", "--whitespace=nowarn", str(diff)], git_dir=git_dir, env=index
        )
        if applied.returncode != 0:
            raise PatchFailed(f"{why_not_applied(applied.stderr)} (on {base[:12]} of {tree})")
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
    publish(mirrors, tree, sha, patch.ref)
    return sha


def publish(mirrors: Mirrors, tree: str, sha: str, ref: str) -> None:
    """Push the commit to ``ref`` of the tree's URL (the remote every controller's mirror
    fetches ``refs/*`` from), so a pool worker on another machine can check it out; without
    it only this machine's mirror has the commit. A push refused (no write access) is logged:
    this machine's controllers still test it."""
    pushed = run_git(["push", "--force", "--quiet", mirrors.urls[tree], f"{sha}:{ref}"],
                     git_dir=mirrors.path(tree))  # fmt: skip
    if pushed.returncode != 0:
        reason, _ = push_error(pushed.stderr)
        log.warning("tree %s: cannot push %s to %s of %s (workers on other machines cannot test "
                    "it): %s", tree, sha[:12], ref, mirrors.urls[tree], reason)  # fmt: skip


def why_not_applied(stderr: str) -> str:
    """git apply's complaint as one line naming the file and hunk: ``README: the hunk at line
    1 does not match``, ``NOPE: does not exist in index``, or its first error."""
    hunk = _HUNK.search(stderr)
    if hunk is not None:
        return f"{hunk['file']}: the hunk at line {hunk['line']} does not match"
    errors = [line.removeprefix("error: ") for line in stderr.splitlines() if line.strip()]
    return errors[0] if errors else "git apply failed without saying why"
