"""The one heartbeat: a lease's holder renews it every third of its length, so that two missed
renewals still leave it held (see :mod:`labgate.store.leases`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def renew_every(lease_s: float, renew: Callable[[], object], *, floor_s: float = 0.0) -> None:
    """Call ``renew`` (in a thread: it writes to the store) every ``lease_s / 3`` seconds (at
    least ``floor_s``) until cancelled."""
    while True:
        await asyncio.sleep(max(lease_s / 3, floor_s))
        await asyncio.to_thread(renew)
