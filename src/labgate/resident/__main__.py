"""``python -m labgate.resident``: the resident controller (``labgate resident start``)."""

from labgate.resident import run_resident

run_resident()
