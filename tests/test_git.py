"""The git wrapper: mirrors, work trees that borrow the mirror's objects, fast-forward pushes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gitrepos import GitRepo
from labgate.git import Mirrors, UnknownRevision, ensure_commit, push_fast_forward


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
