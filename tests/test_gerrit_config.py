"""lab.toml keys of the Gerrit and GitHub connectors: the SSH key files of `gerrit stream-events`
(relative to the lab dir) and how GitHub results are posted (`report`)."""

from __future__ import annotations

import pytest

from labgate.config import ConfigError
from labgate.review.gerrit.settings import gerrit_settings
from labgate.review.github.settings import github_settings
from test_config_review import GERRIT, GITHUB, parse
from test_config_review import LAB as BASE

KEYS = """identity_file = "keys/gerrit_ed25519"
known_hosts_file = "/etc/labgate/known_hosts"
"""
LAB = BASE + GERRIT + KEYS + GITHUB


def test_ssh_key_files_are_resolved_against_the_lab_dir() -> None:
    gerrit, _ = parse(LAB).reviews
    assert gerrit_settings(gerrit).identity_file == "/srv/lab/keys/gerrit_ed25519"
    assert gerrit_settings(gerrit).known_hosts_file == "/etc/labgate/known_hosts"
    without = parse(BASE + GERRIT + GITHUB).reviews[0]
    assert gerrit_settings(without).identity_file is None
    assert gerrit_settings(without).known_hosts_file is None


def test_github_reports_statuses_unless_told() -> None:
    assert github_settings(parse(LAB).reviews[1]).report == ("status",)
    both = LAB + 'report = ["check_run", "status", "check_run"]\n'
    assert github_settings(parse(both).reviews[1]).report == ("check_run", "status")


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ('["email"]', "review[1].report[0]"),
        ("[]", "review[1].report"),
        ('"status"', "review[1].report"),
    ],
)
def test_a_wrong_report_names_its_key(value: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(LAB + f"report = {value}\n")
    assert [p.key for p in info.value.problems] == [key]
