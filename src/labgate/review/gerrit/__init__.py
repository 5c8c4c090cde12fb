"""Gerrit: events from ``gerrit stream-events`` over SSH, votes through the REST API.

UNTESTED AGAINST A REAL GERRIT SERVER. No Gerrit server can be had in this workplace (its Maven
Central serves no ``com.google.gerrit`` artifact), so only what can be checked without one is
here: parsing stream-events lines (:mod:`.events`) and building and reading REST requests
(:mod:`.rest`), unit-tested against Gerrit's documented JSON shapes. The SSH connection, its
reconnects and the REST calls themselves are not written yet, and the Gerrit connector is not
done: ``labgate review run`` says so for a ``driver = "gerrit"`` entry.
"""

from labgate.review.drivers import ReviewDriver, register

register(
    ReviewDriver(
        "gerrit",
        unavailable=(
            "the Gerrit connector is not done: its event stream and REST calls have never run "
            "against a Gerrit server (none can be had here), so it does not vote; only its event "
            "parsing and request building exist (labgate.review.gerrit)"
        ),
    )
)
