"""A lab for the review loop's tests: a real git tree under test whose `check.sh` passes, fails
or breaks (the lab's failure) by what its `result` file says, a pinned second tree, and one
GitHub `[[review]]`.

    rl = make_review_lab(tmp_path, database_url, server="http://127.0.0.1:8123")
    sha = rl.propose(7, "fail")          # pull request 7: refs/pull/7/head in the tree's repo
    event = rl.event(7, sha)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gitrepos import GitRepo
from labgate.config import Lab, load_lab
from labgate.review.base import ChangeEvent

CHECK = """#!/bin/sh
case "$(cat xen/result)" in
  pass) echo "all good"; exit 0 ;;
  fail) echo "guest did not start"; exit 1 ;;
  broken) echo "host lost power" > "$LABGATE_BROKEN_FILE"; exit 1 ;;
esac
exit 3
"""

TOKEN_ENV = "LABGATE_TEST_GITHUB_TOKEN"
SECRET_ENV = "LABGATE_TEST_GITHUB_SECRET"
PROJECT = "acme/xen"
WEB_URL = "https://lab.example.org/"


@dataclass
class ReviewLab:
    path: Path
    repo: GitRepo
    tools: GitRepo
    lab: Lab

    def propose(self, number: int, result: str, *, base: str = "master") -> str:
        """A pull request whose head sets `result`: its commit, at refs/pull/<number>/head."""
        self.repo.checkout(base)
        self.repo.git("checkout", "-q", "-B", f"pr-{number}")
        sha = self.repo.commit(f"pr {number}: {result}", files={"result": f"{result}\n"})
        self.repo.git("update-ref", f"refs/pull/{number}/head", sha)
        self.repo.checkout(base)
        return sha

    def event(self, number: int, sha: str, kind: str = "patchset") -> ChangeEvent:
        return ChangeEvent(
            kind="recheck" if kind == "recheck" else "patchset",
            source="gh",
            project=PROJECT,
            change=str(number),
            patchset=sha,
            ref=f"refs/pull/{number}/head",
            revision=sha,
            branch="master",
            url=f"https://github.example/{PROJECT}/pull/{number}",
        )


def make_review_lab(
    tmp_path: Path,
    database_url: str,
    *,
    server: str = "http://127.0.0.1:9",
    retries: int = 2,
    voting: bool = True,
    extra: str = "",
) -> ReviewLab:
    repo = GitRepo.init(tmp_path / "trees" / "xen")
    repo.commit("base", files={"check.sh": CHECK, "result": "pass\n"})
    repo.branch("staging")
    tools = GitRepo.init(tmp_path / "trees" / "tools")
    tools.commit("tools 1", files={"README": "tools\n"})
    tools.branch("stable")
    tools.commit("tools 2 (not the pinned one)", files={"README": "tools 2\n"})
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    text = f"""
[lab]
name = "review-lab"
database = {json.dumps(database_url)}

[[tree]]
name = "xen"
url = {json.dumps(str(repo.path))}

[[tree]]
name = "tools"
url = {json.dumps(str(tools.path))}

[[branch]]
name = "main"
tree = "xen"
pin = {{ tools = "stable" }}

[[host]]
name = "local0"
slots = 2

[[job]]
name = "test"
[[job.step]]
name = "check"
run = "sh xen/check.sh"

[[job]]
name = "doc"
[[job.step]]
name = "html"
run = "true"

[[review]]
name = "gh"
driver = "github"
server = {json.dumps(server)}
project = "{PROJECT}"
branch = "main"
target = "master"
web_url = "{WEB_URL}"
token_env = "{TOKEN_ENV}"
secret_env = "{SECRET_ENV}"
retries = {retries}
voting = {"true" if voting else "false"}
{extra}"""
    (lab_dir / "lab.toml").write_text(text)
    return ReviewLab(lab_dir, repo, tools, load_lab(lab_dir))
