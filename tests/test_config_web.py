"""lab.toml's [web] table: the dashboard's token."""

from __future__ import annotations

from pathlib import Path

import pytest

from labgate.config import ConfigError, Lab, parse_lab

LAB = """
[lab]
name = "web-lab"

[[tree]]
name = "xen"
url = "https://xenbits.example/xen.git"

[[branch]]
name = "xen-unstable"
tree = "xen"

[[host]]
name = "h0"
flags = []

[[job]]
name = "build"
[[job.step]]
name = "build"
run = "true"
"""


def parse(extra: str) -> Lab:
    return parse_lab(LAB + extra, file=Path("lab.toml"), lab_dir=Path("/srv/lab"))


def test_no_web_table_means_read_only() -> None:
    lab = parse("")
    assert lab.web_token is None


def test_token_is_read() -> None:
    lab = parse('\n[web]\ntoken = "s3cret-s3cret-s3cret"\n')
    assert lab.web_token == "s3cret-s3cret-s3cret"


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('token = "short"', "web.token", "at least 16"),
        ("token = 12345678901234567", "web.token", "string"),
        ('tokn = "s3cret-s3cret-s3cret"', "web.tokn", "unknown"),
    ],
)
def test_bad_web_table(table: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f"\n[web]\n{table}\n")
    problems = [p for p in caught.value.problems if p.key == key]
    assert problems, str(caught.value)
    assert words in str(problems[0]).lower()
