"""The shared fixtures themselves: both stores really store, git histories are what was asked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from gitrepos import CommitSpec, GitRepo, make_repo


def test_database_url_stores_and_reads_back(database_url: str) -> None:
    metadata = sa.MetaData()
    hosts = sa.Table(
        "hosts",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
    )
    engine = sa.create_engine(database_url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(hosts.insert(), [{"name": "cubietruck-1"}, {"name": "albana0"}])
        with engine.connect() as conn:
            names = conn.scalars(sa.select(hosts.c.name).order_by(hosts.c.name)).all()
        assert names == ["albana0", "cubietruck-1"]
        assert engine.dialect.name == database_url.split(":")[0].split("+")[0]
    finally:
        engine.dispose()


def test_database_url_starts_empty(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_git_repo_history_with_branches_and_merge(
    git_repo_factory: Callable[[str], GitRepo],
) -> None:
    repo = git_repo_factory("xen")
    base = repo.commit("base", files={"README": "xen\n"})
    repo.branch("topic", at=base)
    repo.checkout("topic")
    topic = repo.commit("topic work", files={"a.c": "int a;\n"}, author=("Ann", "ann@example.org"))
    repo.checkout("master")
    main = repo.commit("main work", files={"b.c": "int b;\n", "README": None})
    merge = repo.merge("topic", message="Merge topic")
    staging = repo.branch("staging", at=merge)

    assert all(len(sha) == 40 for sha in (base, topic, main, merge))
    assert staging == merge == repo.rev("master")
    assert repo.parents(merge) == [main, topic]
    graph = repo.git("rev-list", "--parents", "staging").splitlines()
    assert sorted(graph) == sorted(
        [f"{merge} {main} {topic}", f"{topic} {base}", f"{main} {base}", base]
    )
    author = repo.git("log", "-1", "--format=%an <%ae>|%s", topic)
    assert author == "Ann <ann@example.org>|topic work"
    assert repo.git("show", "--format=", "--name-status", main).splitlines() == [
        "D\tREADME",
        "A\tb.c",
    ]
    assert (repo.path / "a.c").read_text() == "int a;\n"


def test_make_repo_is_reproducible(tmp_path: Path) -> None:
    commits = [CommitSpec("one", {"f": "1\n"}), "two", CommitSpec("three", {"d/g": b"\x00\x01"})]
    first, shas = make_repo(tmp_path / "a", commits)
    second, again = make_repo(tmp_path / "b", commits)

    assert shas == again
    assert first.git("rev-list", "--reverse", "master").splitlines() == shas
    assert first.git("log", "--format=%s", "master").splitlines() == ["three", "two", "one"]
    assert first.git("log", "-1", "--format=%aI", shas[0]) == "2024-01-01T00:01:00+00:00"
    assert (second.path / "d" / "g").read_bytes() == b"\x00\x01"
