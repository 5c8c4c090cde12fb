"""The store: everything labgate records, in SQLite (default) or PostgreSQL.

Only this package writes SQL. One module per group of tables, all behind :class:`Store`:

- ``core``: opening and migrating the store, and :class:`Store`, made of the groups below;
- ``flights``: flights, jobs, steps, test cases, a branch's history, cancel requests;
- ``branches``: baselines, the gate's lease, pushes, verdicts;
- ``bisections``: bisections, their culprits and graphs;
- ``pool``: the lab's hosts as recorded, the pool's flights and their jobs' states;
- ``values``: what they share (errors, the values handed out, the clock, lease holders);
- ``leases``: the one rule of every lease;
- ``hosts``: host state and history (quarantine, reservations, events): ``Store.hosts``;
- ``slots``: host slots shared by controllers (claims under row locks, leases): ``Store.slots``;
- ``review``: the review queue (one vote per run, whatever restarts): ``Store.review``;
- ``dashboard``: the web dashboard's read queries;
- ``schema`` and ``migrations``: the tables and their Alembic migrations.
"""

from labgate.store.core import Store, make_engine, migrate
from labgate.store.flights import (
    finished_flight_ids,
    flight_from_row,
    revisions_of,
    step_from_row,
)
from labgate.store.values import (
    ACTIVE_FLIGHT_STATES,
    FlightNotFound,
    JobState,
    StoredJob,
    StoreError,
    aware,
    iso,
    now,
    owner_is_dead,
    process_owner,
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
