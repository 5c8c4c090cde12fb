"""The store: everything labgate records, in SQLite (default) or PostgreSQL.

Only this package writes SQL. One module per group of tables, all behind :class:`Store`:

- ``core``: flights, jobs, steps, results, branch state (baselines, pushes, the gate's lease),
  verdicts, bisections, cancel requests, the pool's flights; opening and migrating the store;
- ``hosts``: host state and history (quarantine, reservations, events): ``Store.hosts``;
- ``slots``: host slots shared by controllers (claims under row locks, leases): ``Store.slots``;
- ``review``: the review queue (one vote per run, whatever restarts): ``Store.review``;
- ``dashboard``: the web dashboard's read queries;
- ``schema`` and ``migrations``: the tables and their Alembic migrations.
"""

from labgate.store.core import (
    ACTIVE_FLIGHT_STATES,
    FlightNotFound,
    JobState,
    Store,
    StoredJob,
    StoreError,
    aware,
    finished_flight_ids,
    flight_from_row,
    iso,
    make_engine,
    migrate,
    now,
    owner_is_dead,
    process_owner,
    revisions_of,
    step_from_row,
)

__all__ = [
    "ACTIVE_FLIGHT_STATES",
    "FlightNotFound",
    "JobState",
    "Store",
    "StoreError",
    "StoredJob",
    "aware",
    "finished_flight_ids",
    "flight_from_row",
    "iso",
    "make_engine",
    "migrate",
    "now",
    "owner_is_dead",
    "process_owner",
    "revisions_of",
    "step_from_row",
]
