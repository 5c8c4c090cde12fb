"""lab.toml's [[review]] and [[disable]] (labgate.config), and how a disabled test leaves the
plan (labgate.flight.without_disabled)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labgate.config import ConfigError, Lab, parse_lab, render_matrix
from labgate.flight import without_disabled
from labgate.model import DisabledTest, JobSpec, ReviewSpec, StepSpec
from labgate.review.gerrit.settings import GerritSettings
from labgate.review.github.settings import GitHubSettings, github_settings

LAB = """
[lab]
name = "xen-lab"

[[tree]]
name = "xen"
url = "https://xenbits.example/xen.git"

[[branch]]
name = "xen-unstable"
tree = "xen"

[[host]]
name = "h0"

[[job]]
name = "build"
[[job.step]]
name = "make"
run = "make"

[[job]]
name = "test-{arch}"
matrix = { arch = ["amd64", "arm64"] }
depends = ["build"]
[[job.step]]
name = "guest-start"
run = "start"
[[job.step]]
name = "migrate"
run = "migrate"
"""

GERRIT = """
[[review]]
name = "xen-gerrit"
driver = "gerrit"
server = "https://review.example.org/"
project = "xen"
branch = "xen-unstable"
target = "master"
user = "labgate-ci"
password_env = "GERRIT_HTTP_PASSWORD"
ssh = "labgate-ci@review.example.org:29418"
ci_accounts = ["other-ci"]
"""

GITHUB = """
[[review]]
name = "xen-github"
driver = "github"
project = "xen-project/xen"
branch = "xen-unstable"
voting = false
recheck = "^/retest$"
web_url = "https://lab.example.org"
token_env = "GITHUB_TOKEN"
secret_env = "GITHUB_WEBHOOK_SECRET"
"""


def parse(text: str) -> Lab:
    return parse_lab(text, file=Path("lab.toml"), lab_dir=Path("/srv/lab"))


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return [(p.key, p.message) for p in info.value.problems]


def test_without_review_or_disable_the_lab_has_none() -> None:
    lab = parse(LAB)
    assert lab.reviews == ()
    assert lab.disabled == ()


def test_review_entries_become_specs_with_defaults() -> None:
    lab = parse(LAB + GERRIT + GITHUB)
    gerrit, github = lab.reviews
    assert gerrit == ReviewSpec(
        name="xen-gerrit",
        driver="gerrit",
        server="https://review.example.org",
        project="xen",
        branch="xen-unstable",
        target="master",
        settings=GerritSettings(
            user="labgate-ci",
            password_env="GERRIT_HTTP_PASSWORD",
            ssh="labgate-ci@review.example.org:29418",
        ),
        ci_accounts=("other-ci",),
    )
    assert gerrit.voting and gerrit.recheck == "^recheck( labgate)?$" and gerrit.retries == 2
    assert github.server == "https://api.github.com"
    assert not github.voting
    assert github.recheck == "^/retest$"
    assert github.settings == GitHubSettings("GITHUB_TOKEN", "GITHUB_WEBHOOK_SECRET")
    assert github_settings(github).context == "labgate"
    assert github.web_url == "https://lab.example.org"


def test_disable_entries() -> None:
    lab = parse(
        LAB
        + '[[disable]]\njob = "test-arm64"\nreason = "no arm64 host"\nbug = "https://bugs/1"\n'
        + '[[disable]]\njob = "test-*"\nstep = "migrate"\nreason = "flaky"\n'
    )
    assert lab.disabled == (
        DisabledTest("test-arm64", "*", "no arm64 host", "https://bugs/1"),
        DisabledTest("test-*", "migrate", "flaky", None),
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            GERRIT.replace('branch = "xen-unstable"', 'branch = "xen-unstabel"'),
            ("review[0].branch", 'no [[branch]] named "xen-unstabel" (did you mean'),
        ),
        (GERRIT.replace('user = "labgate-ci"\n', ""), ("review[0].user", "is required")),
        (
            GITHUB.replace('secret_env = "GITHUB_WEBHOOK_SECRET"\n', ""),
            ("review[0].secret_env", ""),
        ),
        (GITHUB.replace("xen-project/xen", "xen"), ("review[0].project", "is not a GitHub")),
        (GITHUB.replace('"^/retest$"', '"(unclosed"'), ("review[0].recheck", "is not a regular")),
        (
            GITHUB.replace('driver = "github"', 'driver = "gitlab"'),
            ("review[0].driver", 'unknown driver "gitlab"'),
        ),
        (GITHUB + 'password = "x"\n', ("review[0].password", "unknown key")),
        (GITHUB + GITHUB, ("review[1].name", "duplicate review name")),
        ('[[disable]]\njob = "tset-*"\nreason = "r"\n', ("disable[0].job", "matches no job")),
        (
            '[[disable]]\njob = "test-*"\nstep = "boot"\nreason = "r"\n',
            ("disable[0].step", "matches no step"),
        ),
        ('[[disable]]\njob = "build"\n', ("disable[0].reason", "is required")),
    ],
)
def test_problems_name_the_key(extra: str, expected: tuple[str, str]) -> None:
    found = problems(LAB + extra)
    key, message = expected
    assert any(k == key and message in m for k, m in found), found


def test_unknown_top_level_key_lists_review_and_disable() -> None:
    with pytest.raises(ConfigError) as info:
        parse(LAB + "[reviews]\n")
    assert "[[review]]" in str(info.value) and "[[disable]]" in str(info.value)


def job(name: str, *steps: str, depends: tuple[str, ...] = ()) -> JobSpec:
    return JobSpec(name, tuple(StepSpec(s, "true") for s in steps), depends=depends)


def test_a_disabled_job_leaves_the_plan_with_its_dependants() -> None:
    jobs = [
        job("test", "run", depends=("build",)),  # a dependant listed before its dependency
        job("build", "make"),
        job("doc", "html"),
        job("deep", "x", depends=("test",)),
    ]
    kept = without_disabled(jobs, [DisabledTest("build", reason="broken toolchain")])
    assert [j.name for j in kept] == ["doc"]


def test_a_disabled_step_leaves_its_job_with_the_other_steps() -> None:
    jobs = [job("test-amd64", "guest-start", "migrate", "stop"), job("test-arm64", "migrate")]
    kept = without_disabled(jobs, [DisabledTest("test-*", "migrate", "flaky")])
    assert [(j.name, [s.name for s in j.steps]) for j in kept] == [
        ("test-amd64", ["guest-start", "stop"])
    ]


def test_nothing_disabled_keeps_every_job() -> None:
    jobs = [job("a", "s"), job("b", "s", depends=("a",))]
    assert without_disabled(jobs, []) == jobs


def test_labgate_check_shows_reviews_and_disabled_tests() -> None:
    lab = parse(LAB + GITHUB + '[[disable]]\njob = "build"\nreason = "r"\nbug = "https://b/1"\n')
    text = render_matrix(lab)
    assert (
        "review xen-github: github https://api.github.com xen-project/xen -> branch "
        "xen-unstable, comments only, recheck /^/retest$/" in text
    )
    assert "disabled tests (not run)\n  build / *: r [https://b/1]\n" in text
