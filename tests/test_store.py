"""The store on SQLite and on a real PostgreSQL server: every write read back as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from labgate.model import (
    Blessing,
    FlightState,
    HostSpec,
    JobSpec,
    Outcome,
    StepSpec,
    TestCaseResult,
)
from labgate.store import FlightNotFound, Store, StoreError

BUILD = JobSpec(
    name="build-amd64",
    steps=(StepSpec("build", "make", 60.0), StepSpec("package", "make dist")),
    requires=("arch-amd64",),
    runvars=(("arch", "amd64"), ("kconfig", "defconfig")),
)
TEST = JobSpec(
    name="test-amd64-xl",
    steps=(StepSpec("guest-start", "./start", None, "junit:out/*.xml"),),
    requires=("arch-amd64",),
    depends=("build-amd64",),
    exclusive=True,
)
REVS = {"xen": "a" * 40, "linux": "b" * 40}


def test_a_new_flight_holds_every_job_and_step_queued(database_url: str) -> None:
    with Store.open(database_url) as store:
        fid = store.create_flight("xen-unstable", Blessing.REAL, REVS, [BUILD, TEST])
        flight = store.get_flight(fid)
    assert flight.state is FlightState.QUEUED and flight.outcome is None
    assert flight.revisions == REVS
    assert [j.name for j in flight.jobs] == ["build-amd64", "test-amd64-xl"]
    assert flight.jobs[0].runvars == {"arch": "amd64", "kconfig": "defconfig"}
    assert flight.jobs[1].depends == ("build-amd64",) and flight.jobs[1].exclusive
    assert [s.name for s in flight.jobs[0].steps] == ["build", "package"]
    assert all(s.outcome is Outcome.QUEUED for j in flight.jobs for s in j.steps)


def test_the_planned_jobs_come_back_exactly(database_url: str) -> None:
    with Store.open(database_url) as store:
        fid = store.create_flight("b", Blessing.ADHOC, REVS, [BUILD, TEST])
        stored = store.flight_jobs(fid)
    assert [s.spec for s in stored] == [BUILD, TEST]
    assert all(s.attempt == 0 for s in stored)


def test_outcomes_durations_and_test_cases_are_recorded(database_url: str) -> None:
    with Store.open(database_url) as store:
        fid = store.create_flight("b", Blessing.ADHOC, REVS, [BUILD, TEST])
        build, test = store.flight_jobs(fid)
        store.set_flight_state(fid, FlightState.RUNNING)
        assert store.start_job(build.id, "italia0") == 1
        store.start_step(build.step_ids[0], "1/build-amd64/build.log", job_running=build.id)
        assert store.get_flight(fid).jobs[0].outcome is Outcome.RUNNING
        store.finish_step(
            build.step_ids[0], Outcome.PASS, exit_status=0, duration_s=1.5,
            then_start=(build.step_ids[1], "1/build-amd64/package.log"),
        )  # fmt: skip
        assert store.get_flight(fid).jobs[0].steps[1].outcome is Outcome.RUNNING
        cases = [
            TestCaseResult("unit.a", Outcome.PASS, 0.1),
            TestCaseResult("unit.b", Outcome.FAIL, 0.2, "assert 1 == 2 <script>"),
        ]
        store.finish_step(
            build.step_ids[1],
            Outcome.FAIL,
            exit_status=2,
            duration_s=0.25,
            reason="exit status 2",
            testcases=cases,
        )
        store.finish_job(build.id, Outcome.FAIL, "step package: exit status 2")
        store.block_job(test.id, "dependency did not pass: build-amd64 fail")
        store.set_flight_state(fid, FlightState.FINISHED, Outcome.FAIL)
        flight = store.get_flight(fid)
    assert flight.state is FlightState.FINISHED and flight.outcome is Outcome.FAIL
    assert flight.started is not None and flight.finished is not None
    b, t = flight.jobs
    assert (b.outcome, b.host, b.reason) == (Outcome.FAIL, "italia0", "step package: exit status 2")
    assert [(s.outcome, s.exit_status, s.duration_s) for s in b.steps] == [
        (Outcome.PASS, 0, 1.5),
        (Outcome.FAIL, 2, 0.25),
    ]
    assert b.steps[1].log == "1/build-amd64/package.log"
    assert b.steps[1].testcases == tuple(cases)
    assert t.outcome is Outcome.BLOCKED and all(s.outcome is Outcome.BLOCKED for s in t.steps)


def test_reset_unfinished_requeues_only_interrupted_jobs(database_url: str) -> None:
    with Store.open(database_url) as store:
        fid = store.create_flight("b", Blessing.ADHOC, REVS, [BUILD, TEST])
        build, test = store.flight_jobs(fid)
        store.start_job(build.id, "h")
        store.finish_job(build.id, Outcome.PASS)
        store.start_job(test.id, "h")
        store.start_step(test.step_ids[0], "log", job_running=test.id)
        assert store.reset_unfinished(fid) == ["test-amd64-xl"]
        again = {s.spec.name: s for s in store.flight_jobs(fid)}
        assert again["build-amd64"].outcome is Outcome.PASS
        assert again["test-amd64-xl"].outcome is Outcome.QUEUED
        assert again["test-amd64-xl"].attempt == 1
        assert store.start_job(test.id, "h") == 2
        with store.engine.connect() as conn:
            open_allocations = conn.execute(
                sa.text("SELECT count(*) FROM allocation WHERE released IS NULL")
            ).scalar()
        assert open_allocations == 1


def test_listing_filters_by_branch_and_pages_newest_first(database_url: str) -> None:
    with Store.open(database_url) as store:
        ids = [store.create_flight(b, Blessing.REAL, REVS, [BUILD]) for b in ("x", "y", "x", "x")]
        assert [f.id for f in store.list_flights("x")] == [ids[3], ids[2], ids[0]]
        assert [f.id for f in store.list_flights("x", limit=1, before=ids[3])] == [ids[2]]
        assert store.list_flights("x")[0].revisions == REVS


def test_last_hosts_gives_the_host_that_ran_each_job_last(database_url: str) -> None:
    with Store.open(database_url) as store:
        for host in ("a", "b"):
            fid = store.create_flight("x", Blessing.REAL, REVS, [BUILD])
            store.start_job(store.flight_jobs(fid)[0].id, host)
        other = store.create_flight("y", Blessing.REAL, REVS, [BUILD])
        store.start_job(store.flight_jobs(other)[0].id, "c")
        assert store.last_hosts("x", ["build-amd64", "nope"]) == {"build-amd64": "b"}


def test_hosts_are_synced_from_the_lab(database_url: str) -> None:
    with Store.open(database_url) as store:
        store.sync_hosts([HostSpec("h1", frozenset({"a"}), 2)])
        store.sync_hosts([HostSpec("h1", frozenset({"a", "b"}), 4), HostSpec("h2", frozenset())])
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT name, flags, slots FROM host ORDER BY name")).all()
    assert [tuple(r) for r in rows] == [("h1", '["a", "b"]', 4), ("h2", "[]", 1)]


def test_reopening_keeps_everything_and_migrations_are_idempotent(database_url: str) -> None:
    with Store.open(database_url) as store:
        fid = store.create_flight("x", Blessing.REAL, REVS, [BUILD, TEST])
    with Store.open(database_url) as store:
        assert [j.name for j in store.get_flight(fid).jobs] == ["build-amd64", "test-amd64-xl"]


def test_unknown_flight_is_a_clear_error(database_url: str) -> None:
    with Store.open(database_url) as store, pytest.raises(FlightNotFound, match="flight 42"):
        store.get_flight(42)


def test_an_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot open the store at postgresql"):
        Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_the_head_read_from_the_files_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from labgate.store.core import head_revision

    config = Config()
    config.set_main_option("script_location", "labgate.store:migrations")
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


def test_a_store_at_the_newest_schema_opens_without_loading_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/labgate.db"
    Store.open(url).close()
    probe = (
        "import sys; from labgate.store import Store; Store.open(sys.argv[1]).close(); "
        "print('alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, url], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_controllers_starting_together_sync_the_hosts_without_a_conflict(
    database_url: str,
) -> None:
    import threading

    hosts = [HostSpec(f"h{i}", frozenset({"x86"}), 2) for i in range(20)]
    stores = [Store.open(database_url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def sync(store: Store) -> None:
        barrier.wait()
        try:
            store.sync_hosts(hosts)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=sync, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        with stores[0].engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM host")).scalar() == 20
    finally:
        for store in stores:
            store.close()


def test_a_pooled_connection_the_server_closed_is_replaced_after_idling(
    postgres_database: str, postgres_admin: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool tests a connection only when it idled (not on every transaction); a server
    that dropped it meanwhile (restarted, or an admin killed it) costs no failed call."""
    from labgate.store import core

    store = Store.open(postgres_database)
    try:
        store.list_flights()
        database = sa.make_url(postgres_database).database
        with postgres_admin.connect() as admin:
            killed = admin.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            ).scalar()
        assert killed == 1  # the store's one pooled connection
        monkeypatch.setattr(core, "PING_IDLE_S", 0.0)
        assert store.list_flights() == []
    finally:
        store.close()


def test_upgrading_an_old_sqlite_store_keeps_every_row(tmp_path: Path) -> None:
    """Each migration from the first on, with a flight, its job, step and verdict stored before:
    a migration that copies a table must not cascade its drop to the rows that refer to it."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from labgate.store.core import make_engine

    url = f"sqlite:///{tmp_path}/old.db"
    config = Config()
    config.set_main_option("script_location", "labgate.store:migrations")
    engine = make_engine(url)  # as the store connects: foreign keys enforced
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0010")
        conn.execute(
            text(
                "INSERT INTO flight (id, branch, blessing, state, created) "
                "VALUES (1, 'main', 'real', 'finished', '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO job (id, flight_id, seq, name, outcome, requires, depends, "
                "exclusive, attempt) VALUES (1, 1, 0, 'build', 'pass', '[]', '[]', 0, 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO step (id, job_id, seq, name, command, outcome) "
                "VALUES (1, 1, 0, 'make', 'make', 'pass')"
            )
        )
        conn.execute(text("INSERT INTO verdict VALUES (1, NULL, 0, '{}', '2026-01-01 00:00:00')"))
    engine.dispose()
    with Store.open(url) as store, store.engine.connect() as conn:
        counts = [
            conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
            for table in ("flight", "job", "step", "verdict")
        ]
        assert counts == [1, 1, 1, 1]
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1  # enforced again
