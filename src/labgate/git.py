"""The one git wrapper: everything labgate does with git goes through the git CLI here.

Each tree gets a bare local mirror under the lab's mirror dir, fetched before a flight is planned;
job work dirs are shared clones of that mirror (``git clone --shared``), cheap to make and safe to
delete with the work dir, even after a crash.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
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


def run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git ARGS`` and return how it went, whatever its exit status: the one place labgate
    starts git. git runs in a session of its own, so a Ctrl-C at the terminal reaches labgate,
    which finishes or undoes its git work itself, instead of killing git halfway. Past
    ``timeout`` seconds git is killed and GitError says so."""
    cmd = ["git"]
    if git_dir is not None:
        cmd += ["--git-dir", str(git_dir)]
    cmd += list(args)
    try:
        return subprocess.run(
            cmd,
            cwd=cwd,
            env={**os.environ, **_GIT_ENV, **(env or {})},
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            check=False,
            start_new_session=True,
            timeout=timeout,
        )
    except FileNotFoundError as error:
        raise GitError("git is not installed (no `git` on PATH)") from error
    except subprocess.TimeoutExpired:
        raise GitError(f"`git {' '.join(args)}` took longer than {timeout:g}s") from None


def git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """Run ``git ARGS`` and return its standard output (stripped of the final newline); a
    failure raises GitError with git's message when ``check``."""
    proc = run_git(args, cwd=cwd, git_dir=git_dir, input=input, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        where = f" (in {git_dir or cwd})" if (git_dir or cwd) else ""
        raise GitError(
            f"`git {' '.join(args)}`{where} failed ({proc.returncode}): {proc.stderr.strip()}"
        )
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


# Each mirror keeps the checkouts of its newest revisions, copied into every job's work dir (see
# Mirrors.checkout), in this directory of the bare repository (git ignores it).
KEPT_CHECKOUTS = "labgate-checkouts"
CHECKOUTS_KEPT = 4  # enough for the flights running at once; each costs a tree of disk
# A kept checkout still being made after this long was left by a controller that died.
_MAKING_S = 3600.0


def _evict(kept: Path, keep: int) -> None:
    """Delete all but the ``keep`` kept checkouts used last, and those a dead controller left
    half made."""
    entries = []
    for entry in kept.iterdir():
        with contextlib.suppress(OSError):
            entries.append((entry.stat().st_mtime, entry))
    made = sorted((e for e in entries if not e[1].name.startswith(".")), reverse=True)
    stale = [e for t, e in entries if e.name.startswith(".") and t < time.time() - _MAKING_S]
    for _, path in made[keep:]:
        shutil.rmtree(path, ignore_errors=True)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


class Mirrors:
    """Bare mirrors of the lab's trees, one per tree, under ``root``."""

    def __init__(
        self, root: Path, urls: dict[str, str], private: frozenset[str] = frozenset()
    ) -> None:
        self.root = root
        self.urls = urls
        self.private = private
        """Trees whose mirrors only the lab's user may read (undisclosed code)."""
        # the tags each job's work tree gets, read once per fetch of the mirror, not per job
        self._tags: dict[str, str] = {}

    def path(self, tree: str) -> Path:
        return self.root / _mirror_name(tree)

    def update(self, tree: str) -> Path:
        """Create or fetch the tree's mirror; returns its path."""
        path = self.path(tree)
        self._tags.pop(tree, None)
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
            if tree in self.private:
                tmp.chmod(0o700)
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
        """Make ``dest`` a git work tree at ``sha`` (detached HEAD) borrowing the mirror's objects.

        A copy of the mirror's kept checkout of ``sha`` (see :meth:`_kept`): a flight's jobs all
        check out the same revisions, and copying files costs far less than a git process that
        inflates every object again (4 ms against 0.7 ms a job for a small tree). The copy's
        index has other file stamps than its files, so git's first command there compares
        contents once and finds the tree clean. Where no kept checkout can be had or copied (a
        controller elsewhere evicted it meanwhile), one is made in place as :meth:`_read_tree`
        does."""
        dest = dest.resolve()
        kept = self._kept(tree, sha)
        if kept is not None:
            try:
                shutil.copytree(kept, dest, symlinks=True)
                # the tags as the mirror has them now (it may have fetched since)
                (dest / ".git" / "packed-refs").write_text(self._tag_text(tree))
                return
            except (OSError, shutil.Error):
                shutil.rmtree(dest, ignore_errors=True)
        self._read_tree(tree, sha, dest)

    def _kept(self, tree: str, sha: str) -> Path | None:
        """The mirror's kept checkout of ``sha`` (inside the mirror: a private tree's stays as
        private as its mirror), made now if there is none; the newest ``CHECKOUTS_KEPT`` per
        tree are kept. None when it cannot be made (no room, say): the caller checks out in
        place. Made under a name of its own and renamed into place, so that controllers making
        it at once each see a whole one."""
        kept = self.path(tree) / KEPT_CHECKOUTS
        path = kept / sha
        if path.is_dir():
            with contextlib.suppress(OSError):
                os.utime(path)  # the newest used is the last evicted
            return path
        making = kept / f".{sha}.{uuid.uuid4().hex[:12]}"
        try:
            kept.mkdir(exist_ok=True)
            self._read_tree(tree, sha, making)
            making.rename(path)
        except (OSError, GitError):
            # another made it first (the rename finds it there), no room, or git cannot check
            # it out (the checkout in place says why, naming the job's work dir)
            shutil.rmtree(making, ignore_errors=True)
            return path if path.is_dir() else None
        except BaseException:
            shutil.rmtree(making, ignore_errors=True)
            raise
        _evict(kept, CHECKOUTS_KEPT)
        return path

    def _read_tree(self, tree: str, sha: str, dest: Path) -> None:
        """Lay the repository out in ``dest`` (HEAD, config, the mirror's objects as an
        alternate, its tags) and fill the work tree with one ``git read-tree``: one process,
        and nothing to undo but deleting ``dest``."""
        mirror = self.path(tree)
        repo = dest / ".git"
        (repo / "objects" / "info").mkdir(parents=True)
        (repo / "refs" / "heads").mkdir(parents=True)
        (repo / "refs" / "tags").mkdir()
        (repo / "objects" / "info" / "alternates").write_text(f"{mirror / 'objects'}\n")
        (repo / "HEAD").write_text(f"{sha}\n")
        (repo / "config").write_text(
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
        )
        (repo / "packed-refs").write_text(self._tag_text(tree))
        git(
            ["read-tree", "-u", "--reset", sha],
            cwd=dest,
            env={"GIT_DIR": str(repo), "GIT_WORK_TREE": str(dest)},
        )

    def _tag_text(self, tree: str) -> str:
        if tree not in self._tags:
            self._tags[tree] = "".join(_tag_lines(self.path(tree)))
        return self._tags[tree]

    def commit(self, tree: str, sha: str) -> Commit:
        out = git(
            ["show", "-s", "--format=%H%x00%an%x00%ae%x00%aI%x00%s", sha],
            git_dir=self.path(tree),
        )
        full, author, email, date, subject = out.split("\x00", 4)
        return Commit(full, author, email, date, subject)

    def fetch_ref(self, tree: str, ref: str) -> str:
        """Fetch one ref from the tree's URL into its mirror and return the full sha it points at:
        a proposed patch (Gerrit's ``refs/changes/34/1234/2``, GitHub's ``refs/pull/7/head``)
        that the mirror's fetch may not bring. It is kept as ``refs/labgate/fetched/<ref>`` until
        the next :meth:`update` prunes it; its commit stays in the mirror for the flight."""
        if not ref.startswith("refs/") or ".." in ref or ref.endswith("/"):
            raise GitError(f"tree {tree!r}: {ref!r} is not a full ref name (refs/...)")
        path = self.path(tree)
        if not (path / "HEAD").exists():
            self.update(tree)
        local = "refs/labgate/fetched/" + ref.removeprefix("refs/")
        try:
            git(["fetch", "--quiet", "--force", self.urls[tree], f"+{ref}:{local}"], git_dir=path)
        except GitError as error:
            raise GitError(f"tree {tree!r}: cannot fetch {ref}: {error}") from error
        return self.resolve(tree, local)


def _tag_lines(mirror: Path) -> list[str]:
    """The mirror's tags as packed-refs lines (so ``git describe`` works in a work tree); a
    loose tag wins over a packed one of the same name, as in git."""
    tags: dict[str, list[str]] = {}
    packed = mirror / "packed-refs"
    if packed.exists():
        name = None
        for line in packed.read_text().splitlines(keepends=True):
            if line.startswith("#"):
                continue
            if line.startswith("^"):
                if name is not None:
                    tags[name].append(line)
                continue
            sha, _, ref = line.strip().partition(" ")
            name = ref if ref.startswith("refs/tags/") else None
            if name is not None:
                tags[name] = [f"{sha} {ref}\n"]
    loose = mirror / "refs" / "tags"
    if loose.is_dir():
        for path in sorted(loose.rglob("*")):
            if path.is_file():
                ref = f"refs/tags/{path.relative_to(loose).as_posix()}"
                tags[ref] = [f"{path.read_text().strip()} {ref}\n"]
    return [line for ref in sorted(tags) for line in tags[ref]]


@dataclass(frozen=True)
class PushResult:
    """How a push of ``sha`` to a ref went: ``pushed``, ``not-fast-forward`` (the ref holds a
    commit that is not an ancestor of ``sha``: never overwritten) or ``error``. ``message`` is
    the whole story (git's own text for an error); ``reason`` says it in one line and ``fix``
    what to do, when labgate knows."""

    status: str
    previous: str | None
    message: str
    reason: str = ""
    fix: str = ""

    @property
    def summary(self) -> str:
        """One line: the reason and the fix (or git's first line when labgate has none)."""
        first = self.reason or next((ln for ln in self.message.splitlines() if ln.strip()), "")
        return f"{first}. Fix: {self.fix}" if self.fix else first


# what git says when a push fails, and what a lab's admin does about it
_PUSH_ERRORS = (
    (
        "refusing to update checked out branch",
        "the tested ref is the checked-out branch of a non-bare repository",
        "point the tree's url at a bare repository, or run "
        "`git config receive.denyCurrentBranch updateInstead` in that repository",
    ),
    (
        "permission denied",
        "the tree's url refused the push (permission denied)",
        "give the lab's user write access to the tree's repository",
    ),
    (
        "does not appear to be a git repository",
        "the tree's url is not a git repository",
        "fix the tree's url in lab.toml",
    ),
    (
        "could not read from remote repository",
        "the tree's url cannot be reached",
        "check the url and the lab's credentials for it",
    ),
    (
        "pre-receive hook declined",
        "the repository's pre-receive hook refused the push",
        "see git's text below for the hook's reason",
    ),
)


def push_error(text: str) -> tuple[str, str]:
    """(reason, fix) for git's text of a failed push; the first error line when unknown."""
    lowered = text.lower()
    for needle, reason, fix in _PUSH_ERRORS:
        if needle in lowered:
            return reason, fix
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "fatal:", "remote: error:"))]
    return ((errors or lines or ["git push failed"])[0], "")


def _remote_ref(mirrors: Mirrors, tree: str, ref: str) -> str | None:
    out = git(["ls-remote", "--", mirrors.urls[tree], ref], check=False)
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


def push_fast_forward(mirrors: Mirrors, tree: str, sha: str, branch_ref: str) -> PushResult:
    """Push exactly ``sha`` to the tree's ``branch_ref`` (``master`` or ``refs/heads/master``),
    fast-forward only, never forced."""
    ref = branch_ref if branch_ref.startswith("refs/") else f"refs/heads/{branch_ref}"
    mirror = mirrors.path(tree)
    previous = _remote_ref(mirrors, tree, ref)
    if previous == sha:
        return PushResult("pushed", previous, f"{ref} already at {sha}")
    if previous is not None:
        # the mirror may not have the commit someone pushed by hand: fetch it to compare
        git(["fetch", "--quiet", mirrors.urls[tree], ref], git_dir=mirror, check=False)
        status = run_git(["merge-base", "--is-ancestor", previous, sha], git_dir=mirror).returncode
        if status != 0:
            return PushResult(
                "not-fast-forward",
                previous,
                f"{ref} is at {previous}, which is not an ancestor of {sha}: it was moved by hand;"
                " not overwriting it",
                f"{ref} was moved by hand to {previous[:12]}, not an ancestor of {sha[:12]}",
                f"put {ref} back on an ancestor of {sha[:12]}, or merge it into staging",
            )
    proc = run_git(["push", "--porcelain", mirrors.urls[tree], f"{sha}:{ref}"], git_dir=mirror)
    if proc.returncode == 0:
        return PushResult("pushed", previous, f"{ref}: {previous or '(new)'} -> {sha}")
    text = (proc.stdout + proc.stderr).strip()
    if "non-fast-forward" in text or "fetch first" in text:
        return PushResult(
            "not-fast-forward", previous, text, f"{ref} moved meanwhile", "look at who pushed it"
        )
    reason, fix = push_error(text)
    return PushResult("error", previous, text, reason, fix)


def authors(mirrors: Mirrors, tree: str, good: str, bad: str) -> list[str]:
    """``Name <email>`` of everyone with a commit in good..bad, in first-seen order."""
    out = git(["log", "--format=%an <%ae>", f"{good}..{bad}"], git_dir=mirrors.path(tree))
    return list(dict.fromkeys(line for line in out.splitlines() if line))


def subjects(mirrors: Mirrors, tree: str, shas: list[str]) -> dict[str, str]:
    """The subject line of each commit."""
    if not shas:
        return {}
    out = git(["show", "-s", "--format=%H %s", *shas], git_dir=mirrors.path(tree), check=False)
    result = {}
    for line in out.splitlines():
        sha, _, subject = line.partition(" ")
        result[sha] = subject
    return result


def ensure_commit(mirrors: Mirrors, tree: str, sha: str) -> None:
    """Make sure the tree's mirror has ``sha``, fetching it when the mirror is missing or older
    than the flight (a flight planned with explicit revisions, a resumed one)."""
    path = mirrors.path(tree)
    if (path / "HEAD").exists():
        present = run_git(["cat-file", "-e", f"{sha}^{{commit}}"], git_dir=path)
        if present.returncode == 0:
            return
    mirrors.update(tree)
