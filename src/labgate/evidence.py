"""A branch's evidence, and the one way a flight is judged against it.

Only ``real`` and ``bisect`` flights are a branch's evidence: they test revisions of the branch.
A ``review`` flight tests a patch that is not on the branch, and an ``adhoc`` or ``play`` flight
whatever someone asked; they never count for others. A flight of another blessing is judged with
the earlier flights of its own exact revision tuple too (a pass there proves a failure flaky).
The gate and the review loop both judge with :func:`judge`, under the branch's ``allow`` list and
the lab's ``flake_threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence

from labgate.config import Lab
from labgate.model import Blessing, FlightResult
from labgate.store import Store
from labgate.verdict import Verdict, classify

EVIDENCE = (Blessing.REAL, Blessing.BISECT)
HISTORY_LOOKBACK = 300  # flights of a branch read as its history


def branch_evidence(
    store: Store, branch: str, flight: FlightResult | None = None
) -> list[FlightResult]:
    """The branch's finished real and bisect flights, newest first; with ``flight`` of another
    blessing, also the finished flights of its exact revision tuple."""
    history = store.branch_history(branch, limit=HISTORY_LOOKBACK, blessings=EVIDENCE)
    if flight is None or flight.blessing in EVIDENCE:
        return history
    known = {f.id for f in history}
    same = [f for f in store.flights_at(branch, flight.revisions) if f.id not in known]
    return sorted([*history, *same], key=lambda f: f.id, reverse=True)


def judge(
    lab: Lab,
    branch: str,
    flight: FlightResult,
    baseline: FlightResult | None,
    history: Sequence[FlightResult],
) -> Verdict:
    """The flight's verdict against the baseline and the branch's history, as the gate and the
    review loop give it."""
    return classify(
        flight,
        baseline,
        history,
        allowed=lab.branch(branch).allow,
        flake_threshold=lab.gate.flake_threshold,
    )
