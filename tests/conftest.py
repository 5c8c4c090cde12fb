"""Fixtures shared by every test: both stores, real git repositories, an artifact directory.

- `database_url`: each test that takes it runs twice, ids `sqlite` and `postgresql`, on an empty
  database of its own.
- `postgres_server`: an admin URL for a real PostgreSQL server, from LABGATE_TEST_POSTGRES (as
  .ci/run sets it) or a throwaway cluster started for the session. Without PostgreSQL binaries the
  PostgreSQL cases are skipped, except under CI where they fail.
- `git_repo_factory`: `make("xen")` gives a fresh `GitRepo` (see gitrepos.py).
- `artifact_dir`: test-artifacts/<test> in the repository root, kept after the run for CI to upload.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gitrepos import GitRepo
from pg import PostgresUnavailable, scratch_database, start_cluster

# hermetic: no test's `labgate` goes to a resident controller the machine's user may be running
# (test_resident.py starts its own), and none is started by a test that uses a terminal
os.environ["LABGATE_RESIDENT"] = "0"

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_ROOT = REPO_ROOT / "test-artifacts"
POSTGRES_ENV = "LABGATE_TEST_POSTGRES"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """An admin SQLAlchemy URL (superuser, database `postgres`) of a running server."""
    configured = os.environ.get(POSTGRES_ENV, "").strip()
    if configured:
        yield configured
        return
    try:
        cluster = start_cluster()
    except PostgresUnavailable as error:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"PostgreSQL is required under CI: {error}", pytrace=False)
        pytest.skip(f"PostgreSQL not available: {error}")
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_admin(postgres_server: str) -> Iterator[sa.Engine]:
    """An autocommit engine on the admin database, for CREATE/DROP DATABASE."""
    engine = sa.create_engine(
        postgres_server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def postgres_database(postgres_admin: sa.Engine) -> Iterator[str]:
    """The URL of a fresh, empty database on the test server, dropped after the test."""
    with scratch_database(postgres_admin.url.render_as_string(hide_password=False)) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each store in turn: SQLite in tmp_path, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/labgate.db"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
def git_repo_factory(tmp_path: Path) -> Callable[[str], GitRepo]:
    """`make(name)` initialises an empty repository at tmp_path/name on branch master."""

    def make(name: str = "repo") -> GitRepo:
        return GitRepo.init(tmp_path / name)

    return make


@pytest.fixture
def artifact_dir(request: pytest.FixtureRequest) -> Path:
    """test-artifacts/<test id>: screenshots, logs and the like, kept after the run."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")
    path = ARTIFACTS_ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.iterdir():
        if stale.is_file():
            stale.unlink()
    return path
