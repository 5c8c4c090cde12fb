"""The connectors of a lab's ``[[review]]`` entries, by name, from the registered drivers
(:mod:`labgate.review.drivers`)."""

from __future__ import annotations

from labgate.config import Lab
from labgate.model import ReviewSpec
from labgate.review.base import Connector
from labgate.review.drivers import DRIVERS, load_drivers


class NotAvailable(Exception):
    """A ``[[review]]`` whose driver cannot run (it says why)."""


def connector_for(spec: ReviewSpec) -> Connector:
    load_drivers()
    driver = DRIVERS.get(spec.driver)
    if driver is None:
        known = ", ".join(sorted(DRIVERS))
        raise NotAvailable(f"[[review]] {spec.name}: no driver {spec.driver!r} (drivers: {known})")
    if driver.connector is None:
        raise NotAvailable(f"[[review]] {spec.name}: {driver.unavailable}")
    return driver.connector(spec)


def connectors_for(lab: Lab) -> tuple[dict[str, Connector], list[str]]:
    """The usable connectors by ``[[review]]`` name, and why each other entry is left out."""
    usable: dict[str, Connector] = {}
    left_out: list[str] = []
    for spec in lab.reviews:
        try:
            usable[spec.name] = connector_for(spec)
        except NotAvailable as why:
            left_out.append(str(why))
    return usable, left_out
