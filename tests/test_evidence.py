"""A branch's evidence and the one judge the gate and the review loop share."""

from __future__ import annotations

import asyncio
from pathlib import Path

from labgate.config import load_lab
from labgate.evidence import branch_evidence, judge
from labgate.flights import Flights
from labgate.model import Blessing
from labgate.store import Store
from labgate.verdict import Kind
from labs import job, step, write_lab
from test_verdict import B, flaky_history, one_step


def test_judge_takes_the_labs_flake_threshold(tmp_path: Path) -> None:
    history = flaky_history()
    flight = one_step(200, B, "fail")
    verdicts = {}
    for threshold in (0.1, 0.5):
        lab_dir = write_lab(
            tmp_path / str(threshold),
            trees={"xen": {"V": "1\n"}},
            jobs=job("test", step("run", "true")) + f"\n[gate]\nflake_threshold = {threshold}\n",
        )
        lab = load_lab(lab_dir.path)
        verdicts[threshold] = judge(lab, "main", flight, history[-1], history)
    # below the learned flake rate the fail is retested; above it, it is a regression
    assert verdicts[0.1].retest == ("test",) and not verdicts[0.1].blocking
    assert [c.kind for c in verdicts[0.5].blocking] == [Kind.REGRESSION]


def test_evidence_is_real_and_bisect_flights_plus_the_flights_own_tuple(tmp_path: Path) -> None:
    lab_dir = write_lab(
        tmp_path / "lab", trees={"xen": {"V": "1\n"}}, jobs=job("j", step("s", "true"))
    )
    repo = lab_dir.trees["xen"]
    first = repo.rev("HEAD")
    second = repo.commit("second", files={"V": "2\n"})
    lab = load_lab(lab_dir.path)
    with Store.open(lab.database_url) as store:
        flights = Flights(lab, store)

        def run(blessing: Blessing, sha: str) -> int:
            flight_id = flights.plan("main", revisions={"xen": sha}, blessing=blessing)
            asyncio.run(flights.run(flight_id))
            return flight_id

        real = run(Blessing.REAL, first)
        bisect = run(Blessing.BISECT, second)
        adhoc = run(Blessing.ADHOC, first)  # another tuple: not evidence
        other_patch = run(Blessing.REVIEW, first)
        attempt1 = run(Blessing.REVIEW, second)
        attempt2 = run(Blessing.REVIEW, second)
        review = store.get_flight(attempt2)
        ids = [f.id for f in branch_evidence(store, "main", review)]
        assert ids == [attempt2, attempt1, bisect, real]
        assert [f.id for f in branch_evidence(store, "main")] == [bisect, real]
        assert adhoc not in ids and other_patch not in ids
