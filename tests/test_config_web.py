"""lab.toml's [web] table: the dashboard's token."""

from __future__ import annotations

import pytest

from test_config import HEAD, job, parse, problem_at

LAB = HEAD + job("build")


def test_no_web_table_means_read_only() -> None:
    lab = parse(LAB)
    assert lab.web_token is None


def test_token_is_read() -> None:
    lab = parse(LAB + '\n[web]\ntoken = "s3cret-s3cret-s3cret"\n')
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
    problem = problem_at(LAB + f"\n[web]\n{table}\n", key)
    assert words in str(problem).lower()
