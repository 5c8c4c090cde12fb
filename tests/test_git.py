"""The git wrapper: mirrors, work trees that borrow the mirror's objects, fast-forward pushes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gitrepos import GitRepo
from labgate.git import (
    CHECKOUTS_KEPT,
    KEPT_CHECKOUTS,
    GitError,
    Mirrors,
    UnknownRevision,
    ensure_commit,
    push_fast_forward,
)


def test_a_work_tree_is_a_clean_detached_checkout_with_the_tags(tmp_path: Path) -> None:
    repo = GitRepo.init(tmp_path / "xen")
    first = repo.commit("first", files={"a": "1\n", "dir/b": "2\n"})
    repo.git("tag", "-a", "RELEASE-4.18", "-m", "4.18")
    second = repo.commit("second", files={"a": "2\n"})
    mirrors = Mirrors(tmp_path / "mirrors", {"xen": str(repo.path)})
    mirrors.update("xen")  # packs the tags it clones
    repo.git("tag", "lightweight", second)
    mirrors.update("xen")  # a fetched tag may be loose
    dest = tmp_path / "work" / "xen"
    dest.parent.mkdir()
    mirrors.checkout("xen", second, dest)
    work = GitRepo(dest)
    assert (dest / "a").read_text() == "2\n" and (dest / "dir" / "b").read_text() == "2\n"
    assert work.git("status", "--porcelain") == ""
    assert work.rev("HEAD") == second
    assert work.git("describe", "--tags", "--exact-match") == "lightweight"
    described = work.git("describe", "--tags", "--match", "RELEASE-*")
    assert described == f"RELEASE-4.18-1-g{second[:7]}"
    assert work.git("log", "--format=%H", "-2").split() == [second, first]


def test_resolve_refuses_unknown_revisions_and_ensure_fetches_new_commits(tmp_path: Path) -> None:
    repo = GitRepo.init(tmp_path / "xen")
    repo.commit("first", files={"a": "1\n"})
    mirrors = Mirrors(tmp_path / "mirrors", {"xen": str(repo.path)})
    mirrors.update("xen")
    with pytest.raises(UnknownRevision, match="unknown revision 'nope'"):
        mirrors.resolve("xen", "nope")
    later = repo.commit("later", files={"a": "2\n"})
    ensure_commit(mirrors, "xen", later)
    assert mirrors.resolve("xen", later) == later


def test_push_is_fast_forward_only(tmp_path: Path) -> None:
    bare = tmp_path / "up.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    dev = GitRepo.init(tmp_path / "dev")
    base = dev.commit("base", files={"a": "1\n"})
    dev.git("push", "-q", str(bare), f"{base}:refs/heads/master")
    ahead = dev.commit("ahead", files={"a": "2\n"})
    dev.git("push", "-q", str(bare), f"{ahead}:refs/heads/staging")
    mirrors = Mirrors(tmp_path / "mirrors", {"xen": str(bare)})
    mirrors.update("xen")
    upstream = GitRepo(bare)
    result = push_fast_forward(mirrors, "xen", ahead, "master")
    assert (result.status, result.previous) == ("pushed", base)
    assert upstream.rev("master") == ahead
    dev.git("checkout", "-q", base)
    other = dev.commit("by hand", files={"b": "1\n"})
    dev.git("push", "-q", "--force", str(bare), f"{other}:refs/heads/master")
    refused = push_fast_forward(mirrors, "xen", ahead, "master")
    assert refused.status == "not-fast-forward" and refused.previous == other
    assert upstream.rev("master") == other


def test_a_second_checkout_of_a_revision_is_a_copy_that_git_finds_the_same(
    tmp_path: Path,
) -> None:
    repo = GitRepo.init(tmp_path / "xen")
    repo.commit("first", files={"a": "1\n", "dir/b": "2\n"})
    (repo.path / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (repo.path / "run.sh").chmod(0o755)
    (repo.path / "link").symlink_to("dir/b")
    repo.git("add", "run.sh", "link")
    sha = repo.commit("second", files={"a": "2\n"})
    mirrors = Mirrors(tmp_path / "mirrors", {"xen": str(repo.path)})
    mirrors.update("xen")
    first, second = tmp_path / "job1" / "xen", tmp_path / "job2" / "xen"
    mirrors.checkout("xen", sha, first)
    kept = mirrors.path("xen") / KEPT_CHECKOUTS / sha
    assert (kept / "a").read_text() == "2\n"
    (kept / "a").write_text("from the kept checkout\n")  # so the copy can be told from git's
    repo.git("tag", "later", sha)
    mirrors.update("xen")  # a tag fetched after the checkout was kept
    mirrors.checkout("xen", sha, second)
    assert (second / "a").read_text() == "from the kept checkout\n"
    (kept / "a").write_text("2\n")
    (second / "a").write_text("2\n")
    work = GitRepo(second)
    assert work.git("status", "--porcelain") == ""
    assert work.rev("HEAD") == sha
    assert work.git("describe", "--tags", "--exact-match") == "later"
    assert (second / "run.sh").stat().st_mode & 0o111
    assert (second / "link").is_symlink() and (second / "link").read_text() == "2\n"
    (second / "new").write_text("a step's output\n")
    assert not (first / "new").exists() and not (kept / "new").exists()


def test_kept_checkouts_are_the_newest_few_and_a_missing_one_is_made_again(
    tmp_path: Path,
) -> None:
    repo = GitRepo.init(tmp_path / "xen")
    shas = [repo.commit(f"c{i}", files={"a": f"{i}\n"}) for i in range(CHECKOUTS_KEPT + 2)]
    mirrors = Mirrors(tmp_path / "mirrors", {"xen": str(repo.path)})
    mirrors.update("xen")
    for i, sha in enumerate(shas):
        mirrors.checkout("xen", sha, tmp_path / f"job{i}" / "xen")
        assert (tmp_path / f"job{i}" / "xen" / "a").read_text() == f"{i}\n"
    kept = mirrors.path("xen") / KEPT_CHECKOUTS
    assert sorted(p.name for p in kept.iterdir()) == sorted(shas[-CHECKOUTS_KEPT:])
    shutil.rmtree(kept)  # evicted by another controller, say
    mirrors.checkout("xen", shas[0], tmp_path / "again" / "xen")
    assert GitRepo(tmp_path / "again" / "xen").rev("HEAD") == shas[0]
    with pytest.raises(GitError, match="none/xen"):  # git's error, naming the job's work dir
        mirrors.checkout("xen", "0" * 40, tmp_path / "none" / "xen")
    assert [p.name for p in kept.iterdir()] == [shas[0]]  # nothing half made is left
