"""``labgate bisect``: a better ``git bisect run`` for any git repository."""

import click


@click.group("bisect")
def bisect_group() -> None:
    """Find the commit that made a test fail, even when the test is flaky."""
