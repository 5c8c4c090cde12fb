"""What lab.toml names outside itself, checked where it can be reached: every tree's url answers
as a git repository, and every ref a branch tests, pushes to or pins a tree at exists there
(``labgate check``; ``--offline`` skips it)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from labgate.config import UNPINNED_REF, Lab, Problem
from labgate.git import run_git

SHA = re.compile(r"[0-9a-f]{7,40}")
OFFLINE_FIX = "or pass --offline to check the file alone"


def remote_refs(url: str) -> tuple[dict[str, str] | None, str]:
    """The refs a git url advertises (ref → sha), or None with git's first error line."""
    proc = run_git(["ls-remote", "--", url])
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        return None, (lines[0] if lines else f"git ls-remote exited {proc.returncode}")
    refs = {}
    for line in proc.stdout.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    return refs, ""


def has_ref(refs: Mapping[str, str], ref: str) -> bool:
    """Whether ``ref`` (a branch, a tag, a full ref or a commit sha) can be taken from a tree with
    these refs; a sha that is no ref's tip is taken on trust (it may be any commit)."""
    if ref == UNPINNED_REF or SHA.fullmatch(ref):
        return True
    return any(r in refs for r in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}"))


def check_remotes(lab: Lab) -> list[Problem]:
    """Every problem with the trees' urls and the refs the branches name, with its key path."""
    problems: list[Problem] = []
    refs_of: dict[str, dict[str, str]] = {}
    for index, (name, spec) in enumerate(lab.trees.items()):
        refs, error = remote_refs(spec.url)
        if refs is None:
            problems.append(
                Problem(
                    lab.file,
                    f"tree[{index}].url",
                    f"{spec.url}: not a git repository that can be read ({error})",
                    f"give the url (or path) of tree {name!r}'s repository, {OFFLINE_FIX}",
                )
            )
        else:
            refs_of[name] = refs
    for index, (name, branch) in enumerate(lab.branches.items()):
        wanted = [("staging", branch.tree, branch.staging), ("tested", branch.tree, branch.tested)]
        wanted += [(f"pin.{tree}", tree, ref) for tree, ref in branch.pin]
        for key, tree, ref in wanted:
            refs = refs_of.get(tree)
            if refs is None or has_ref(refs, ref):
                continue
            known = sorted(
                r.removeprefix("refs/heads/") for r in refs if r.startswith("refs/heads/")
            )
            problems.append(
                Problem(
                    lab.file,
                    f"branch[{index}].{key}",
                    f"{ref!r}: no such branch, tag or ref in tree {tree!r} (branch {name})",
                    f"use one of its branches ({', '.join(known) or 'none'}), {OFFLINE_FIX}",
                )
            )
    return problems
