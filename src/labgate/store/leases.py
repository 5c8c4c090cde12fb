"""Leases: the one rule by which a controller holds a row of the store (a branch's gate, a review
run, a host slot) against every other controller.

A lease is an owner and a time it lasts until. It is **free** when it has no time (nobody holds
it), when its time has passed (its holder stopped renewing: killed, or cut off from the store),
or when the asker already holds it; a row with no owner but a time to come is held back until
then (a review run whose vote could not be posted waits before it is tried again). Its holder
**renews** it by heartbeat, every third of its length (:func:`labgate.heartbeat.renew_every`),
and **releases** it when done; an owner known to be gone (a process of this machine that no
longer exists) can be **expired** at once. Every write is a conditional ``UPDATE`` on the row,
so two controllers never both take one lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_

from labgate.store import schema as t


@dataclass(frozen=True)
class LeaseColumns:
    """The owner and lease-end columns of one table's leases."""

    owner: Any
    until: Any

    def free(self, owner: str, stamp: datetime) -> ColumnElement[bool]:
        """Rows ``owner`` may take now."""
        return or_(self.until.is_(None), self.until < stamp, self.owner == owner)

    def held_by(self, owner: str) -> ColumnElement[bool]:
        return self.owner == owner  # type: ignore[no-any-return]

    def expired(self, stamp: datetime) -> ColumnElement[bool]:
        """Rows held under a lease that ran out."""
        return self.owner.is_not(None) & (self.until < stamp)  # type: ignore[no-any-return]

    def take(self, owner: str, lease_s: float, stamp: datetime) -> dict[str, Any]:
        """The values that give the row to ``owner`` for ``lease_s`` seconds."""
        return {self.owner.key: owner, self.until.key: stamp + timedelta(seconds=lease_s)}

    def renew(self, lease_s: float, stamp: datetime) -> dict[str, Any]:
        return {self.until.key: stamp + timedelta(seconds=lease_s)}

    def cleared(self) -> dict[str, Any]:
        """The values of a row nobody holds."""
        return {self.owner.key: None, self.until.key: None}


GATE = LeaseColumns(t.branch_state.c.gate_owner, t.branch_state.c.gate_lease_until)
REVIEW_RUN = LeaseColumns(t.review_run.c.owner, t.review_run.c.lease_until)
SLOT = LeaseColumns(t.slot_lease.c.owner, t.slot_lease.c.lease_until)
