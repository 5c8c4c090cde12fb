"""A community member's tree, fetched into the lab's mirror within ``[access]`` limits.

The fetch goes first into a quarantine: a bare repository beside the mirror that borrows the
mirror's objects (so only what is new comes over the wire), fetched under ``fetch_timeout``
and measured against ``max_fetch_mb``. Only a fetch within both is copied into the mirror, as
``refs/labgate/ondemand/<key>`` (pruned by the mirror's next update, as a review's fetched ref
is; its commit stays for the flight). The quarantine is deleted whatever happens, so a refused
fetch leaves nothing behind.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from labgate.access.settings import AccessSettings
from labgate.git import GitError, Mirrors, git, run_git

REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}")
# what a tree URL may use: never ext:: (a command) or fd::
PROTOCOLS = "file:git:http:https:ssh"


class Refused(Exception):
    """An on-demand request refused by one rule (``rule``), with the HTTP status that says so."""

    def __init__(self, rule: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, str]:
        return {"error": self.message, "rule": self.rule}


@dataclass(frozen=True)
class Fetched:
    """A commit brought into the tree's mirror, and the mirror's ref that holds it."""

    tree: str
    sha: str
    ref: str

    def drop(self, mirrors: Mirrors) -> None:
        """Delete the ref (the request it was fetched for was refused after all)."""
        git(["update-ref", "-d", self.ref], git_dir=mirrors.path(self.tree), check=False)


def check_url(url: str, settings: AccessSettings) -> None:
    """Refused unless ``[access] allow_urls`` has a glob that matches the URL."""
    allowed = settings.allow_urls
    if url.startswith("-") or not any(fnmatch.fnmatchcase(url, g) for g in allowed):
        shown = ", ".join(allowed) if allowed else "none: no tree may be fetched"
        raise Refused(
            "allow_urls", f"tree URL {url!r} is not allowed ([access] allow_urls: {shown})", 403
        )


def check_ref(ref: str) -> None:
    if not REF.fullmatch(ref) or ".." in ref or ref.endswith(("/", ".lock", ".")):
        raise Refused("ref", f"ref {ref!r} is not a git ref name (e.g. my-fix, refs/heads/x)")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def fetch_tree(
    mirrors: Mirrors, tree: str, url: str, ref: str, settings: AccessSettings, key: str
) -> Fetched:
    """Fetch ``ref`` of ``url`` into the tree's mirror (see the module docs); Refused names the
    rule a fetch broke: allow_urls, ref (unknown or not a ref), fetch_timeout, max_fetch_mb."""
    check_url(url, settings)
    check_ref(ref)
    mirror = mirrors.path(tree)
    if not (mirror / "HEAD").exists():
        mirrors.update(tree)
    quarantine = Path(tempfile.mkdtemp(prefix="ondemand-", dir=mirrors.root))
    env = {"GIT_ALLOW_PROTOCOL": PROTOCOLS}
    try:
        git(["init", "--bare", "--quiet", str(quarantine)])
        (quarantine / "objects" / "info" / "alternates").write_text(f"{mirror / 'objects'}\n")
        before = _size(quarantine / "objects")
        try:
            proc = run_git(
                ["fetch", "--quiet", "--no-tags", "--end-of-options", url, f"+{ref}:refs/fetched"],
                git_dir=quarantine,
                env=env,
                timeout=settings.fetch_timeout,
            )
        except GitError as error:
            if "took longer than" not in str(error):
                raise
            raise Refused(
                "fetch_timeout",
                f"fetching {ref} from {url} took longer than [access] fetch_timeout "
                f"({settings.fetch_timeout:g}s)",
            ) from None
        if proc.returncode != 0:
            said = proc.stderr.strip().splitlines()
            if any("couldn't find remote ref" in line for line in said):
                raise Refused("ref", f"unknown ref {ref!r} at {url}")
            raise Refused("fetch", f"cannot fetch {ref} from {url}: {' '.join(said[-2:])}")
        size = _size(quarantine / "objects") - before
        if size > settings.max_fetch_mb * 1024 * 1024:
            raise Refused(
                "max_fetch_mb",
                f"{ref} of {url} brings {size / 1024 / 1024:.1f} MB of new objects; "
                f"[access] max_fetch_mb allows {settings.max_fetch_mb:g}",
                413,
            )
        sha = git(["rev-parse", "--verify", "refs/fetched^{commit}"], git_dir=quarantine)
        local = f"refs/labgate/ondemand/{key}"
        git(["fetch", "--quiet", "--no-tags", str(quarantine), f"+refs/fetched:{local}"],
            git_dir=mirror)  # fmt: skip
        return Fetched(tree, sha, local)
    finally:
        shutil.rmtree(quarantine, ignore_errors=True)
