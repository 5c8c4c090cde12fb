"""Opening the store (the engine, the migrations) and :class:`Store`, made of one group of
methods per group of tables: ``flights``, ``branches``, ``bisections``, ``pool``, ``findings``
(and, reached from it, ``hosts``, ``slots`` and ``review``).

SQLAlchemy 2 Core over the tables in ``schema``; the schema is created and upgraded by the Alembic
migrations in ``migrations`` (beside this file) when a store is opened. Every write is one
transaction, so a controller killed at any point leaves the store consistent: a flight's jobs and
steps are created with the flight, and later only their outcomes change in place.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.sql import Executable

from labgate.model import HostSpec, Outcome
from labgate.store.bisections import BisectionTables
from labgate.store.branches import BranchTables
from labgate.store.findings import FindingTables
from labgate.store.flights import FlightTables, StepEnd, set_job_and_steps
from labgate.store.metrics import MetricTables
from labgate.store.pool import PoolTables
from labgate.store.values import StoreError, autocommit, now

if TYPE_CHECKING:
    from labgate.store.hosts import HostRegistry
    from labgate.store.review import ReviewQueue
    from labgate.store.slots import Allocator


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url)
    event.listen(engine, "checkin", _mark_idle)
    event.listen(engine, "checkout", functools.partial(_ping_if_idle, engine.dialect))
    return engine


PING_IDLE_S = 10.0
"""A pooled connection idle this long is tested before use (a server restarted meanwhile has
closed it); one used more recently is not: testing every checkout, as ``pool_pre_ping`` does,
costs a round trip on every transaction of the controller's hot path."""


def _mark_idle(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dialect: Any, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_IDLE_S:
        return
    try:
        dialect.do_ping(dbapi_connection)
    except Exception as error:
        # the pool drops this connection and checks out another (SQLAlchemy's documented
        # "pessimistic disconnect handling" with a checkout event)
        raise DisconnectionError(f"a pooled connection is gone: {error}") from error


MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
_REVISION = re.compile(r"^(down_revision|revision)\s*=\s*['\"]?([^'\"\s]+)['\"]?", re.MULTILINE)


def head_revision() -> str | None:
    """The newest migration's revision, read from the migration files (without Alembic)."""
    revisions, parents = set(), set()
    for path in MIGRATIONS.glob("*.py"):
        found: dict[str, str] = {m[1]: m[2] for m in _REVISION.finditer(path.read_text())}
        if "revision" in found:
            revisions.add(found["revision"])
            if found.get("down_revision") not in (None, "None"):
                parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


_MIGRATE_LOCK = 0x6C616267617465  # "labgate": the advisory lock PostgreSQL migrations hold


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (creating it in an empty database). A store
    already at the newest one is left alone without loading Alembic (start-up time)."""
    head = head_revision()
    if head is not None and _current_revision(engine) == head:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "labgate.store:migrations")
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # a migration that must copy a table (SQLite alters little in place) drops the old
            # one: with foreign keys enforced, that would delete every row referring to it
            # (ON DELETE CASCADE). The pragma only changes outside a transaction.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            # one process migrates at a time; the others wait for it, then find the schema at
            # head (three commands started at once on a fresh store made its tables together)
            if sqlite:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise StoreError(f"a migration broke {len(broken)} reference(s): {broken[:3]}")
            connection.commit()
        finally:
            if sqlite:
                connection.rollback()
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")


class Store(FlightTables, BranchTables, BisectionTables, PoolTables, FindingTables, MetricTables):
    """Reads and writes everything labgate records. Open one with :meth:`open`; close it when
    done."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reader = autocommit(engine)

    @classmethod
    def open(cls, url: str) -> Store:
        engine = make_engine(url)
        try:
            migrate(engine)
        except Exception as error:
            engine.dispose()
            raise StoreError(
                f"cannot open the store at {make_url(url).render_as_string(hide_password=True)}:"
                f" {error}"
            ) from error
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def remote(self) -> bool:
        """Whether each statement is a round trip to a server (PostgreSQL), not a call into
        this process (SQLite)."""
        return self.engine.dialect.name != "sqlite"

    @functools.cached_property
    def hosts(self) -> HostRegistry:
        """Host state and history (quarantine, reservations, events)."""
        from labgate.store.hosts import HostRegistry

        return HostRegistry(self.engine)

    @functools.cached_property
    def review(self) -> ReviewQueue:
        """The review queue."""
        from labgate.store.review import ReviewQueue

        return ReviewQueue(self)

    def end_job(
        self,
        job_id: int,
        outcome: Outcome,
        reason: str | None,
        *,
        host: str,
        attempt: int,
        quarantine_after: int,
        in_history: bool = True,
        data: Mapping[str, Any] | None = None,
        queue_again: str | None = None,
        last_step: StepEnd | None = None,
    ) -> None:
        """Attempt ``attempt`` of a job the pool gave ``host`` ended, in one transaction: its
        ``last_step``'s end when given (nothing ran between them), its outcome (only while
        that attempt is still the job's live one, see :meth:`finish_job`), then the slots it
        held given back, and (``in_history``) the job in the host's history (see
        ``HostRegistry.record_job``). With ``queue_again`` (why), a job whose host was lost is
        queued again for another host at once: nobody sees its lost attempt's outcome as the
        job's."""
        from labgate.store.flights import END_STEP
        from labgate.store.hosts import event_values
        from labgate.store.slots import release_slots

        step_values = last_step.values() if last_step is not None else {}
        if (
            self.engine.dialect.name == "postgresql"
            and in_history
            and queue_again is None
            and outcome is not Outcome.BROKEN
            and self.hosts.known(host)
        ):
            # the commonest end, in one round trip instead of seven (BEGIN, five statements,
            # COMMIT): one statement is atomic without a transaction of its own
            stamp = now()
            data = dict(data) if data else None
            streak_ends = outcome.finished and outcome is not Outcome.CANCELLED
            with self.reader.connect() as conn:
                conn.execute(
                    _job_end_in_one(streak_ends, last_step is not None),
                    {
                        **step_values,
                        "f_job": job_id,
                        "f_outcome": str(outcome),
                        "f_reason": reason,
                        "f_at": stamp,
                        "f_attempt": attempt,
                        **event_values(host, "job", job_id, attempt, outcome, reason, data),
                        "s_host": host,
                        "s_at": stamp,
                    },
                )
            return
        with self.engine.begin() as conn:
            if last_step is not None:
                conn.execute(END_STEP, step_values)
            if self.finish_job(job_id, outcome, reason, attempt=attempt, conn=conn):
                release_slots(conn, job_id)
                if queue_again is not None:
                    set_job_and_steps(conn, job_id, Outcome.QUEUED, queue_again, finished=None)
            if in_history:
                self.hosts.record_job(
                    host, job_id, attempt, outcome, reason,
                    quarantine_after=quarantine_after, data=data, conn=conn,
                )  # fmt: skip

    def slots(self, hosts: Sequence[HostSpec], owner: str, **options: Any) -> Allocator:
        """The host slots this lab's controllers share, as controller ``owner`` claims them
        (see :class:`labgate.store.slots.Allocator` for the options)."""
        from labgate.store.slots import Allocator

        return Allocator(self.engine, hosts, owner, **options)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@functools.cache
def _job_end_in_one(streak_ends: bool, with_step: bool) -> Executable:
    """``Store.end_job``'s usual path as one PostgreSQL statement (data-modifying CTEs, which
    SQLite does not have): (``with_step``) its last step's end, the attempt's outcome while it
    is the live one, its allocation and slots given back only then, its event in the host's
    history, and (``streak_ends``) the host's broken streak ended. Built once: a flight ends a
    job every few steps."""
    from sqlalchemy import bindparam, select, update

    from labgate.store import schema as t
    from labgate.store.flights import END_STEP, FINISH_LIVE_JOB
    from labgate.store.hosts import ADD_EVENT, STREAK_ENDS
    from labgate.store.leases import SLOT

    done = FINISH_LIVE_JOB.returning(t.job.c.id).cte("done")
    ended = select(done.c.id).scalar_subquery()
    released = (
        update(t.allocation)
        .where(t.allocation.c.job_id == ended, t.allocation.c.released.is_(None))
        .values(released=bindparam("f_at", type_=t.allocation.c.released.type))
        .cte("released")
    )
    freed = (
        update(t.slot_lease)
        .where(t.slot_lease.c.job_id == ended)
        .values(job_id=None, **SLOT.cleared())
        .cte("freed")
    )
    ctes = [done, released, freed] + ([END_STEP.cte("step_ended")] if with_step else [])
    if streak_ends:
        return STREAK_ENDS.add_cte(*ctes, ADD_EVENT.cte("event"))
    return ADD_EVENT.add_cte(*ctes)
