"""What every part of the store shares: its errors, the values it hands out, the clock and the
lease holder's name."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from labgate.model import (
    JobSpec,
    Outcome,
)


class StoreError(Exception):
    """A problem with the store a user can act on (unreachable database, unknown flight)."""


class FlightNotFound(StoreError):
    def __init__(self, flight_id: int) -> None:
        super().__init__(f"flight {flight_id} does not exist in this lab's store")
        self.flight_id = flight_id


@dataclass(frozen=True)
class JobState:
    """Where a job stands, without its steps (moving a flight along)."""

    id: int
    name: str
    outcome: Outcome
    requires: frozenset[str]
    depends: tuple[str, ...]
    attempt: int


@dataclass(frozen=True)
class StoredJob:
    """A job as the runner needs it: its id, its plan (as stored) and where it stands."""

    id: int
    spec: JobSpec
    outcome: Outcome
    attempt: int
    step_ids: tuple[int, ...]


def now() -> datetime:
    return datetime.now(UTC)


def process_owner() -> str:
    """This process as the holder of a lease: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(owner: str) -> bool:
    """Whether a lease holder (``host:pid``, maybe followed by ``:tag``) is a process of this
    machine that no longer exists (a controller killed here): only then can its leases be cut
    short safely."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


ACTIVE_FLIGHT_STATES = ("queued", "running")


def aware(value: datetime) -> datetime:
    """A stored time with its time zone (SQLite gives naive datetimes back, stored as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def iso(value: datetime | None) -> str | None:
    """A stored time as ISO 8601 text (UTC), or None."""
    if value is None:
        return None
    return aware(value).isoformat(timespec="seconds")


def autocommit(engine: Engine) -> Engine:
    """``engine`` for what one statement does alone (a read, or a write that is one statement):
    no transaction around it, which on PostgreSQL saves the BEGIN and the COMMIT (or ROLLBACK)
    round trips. Never for several statements that must see or make one state."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


class Tables:
    """The base of each group of tables' methods: they share the store's engine (:class:`Store`
    is made of these groups), and its :func:`autocommit` twin ``reader``."""

    engine: Engine
    reader: Engine
