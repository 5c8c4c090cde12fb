"""The durable queue of review runs, in the lab's store (tables ``review_run``,
``review_delivery``, ``review_vote``; migration 0005).

A run is one test of one patch set: unique per (connector, change, patch set, attempt), so an
event seen twice (a replayed webhook, a reconcile after a reconnect) queues nothing new. Its
``state`` goes ``queued`` → ``running`` (claimed by one controller, with a lease it renews) →
``voted``. The vote is recorded as an *intent* before it is posted and marked ``done`` after,
in guarded updates, so a controller restarted at any point never posts a second vote for a run
(see :mod:`labgate.review.loop`). Every write is one transaction.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from labgate.review.base import ChangeEvent, OtherVote, ReviewRun, Vote
from labgate.store import Store, aware, iso, now
from labgate.store import schema as t
from labgate.store.leases import REVIEW_RUN

QUEUED, RUNNING, VOTED, SUPERSEDED, ERROR = "queued", "running", "voted", "superseded", "error"
INTENT, DONE = "intent", "done"
WITHDRAW, WITHDRAWN = "withdraw", "withdrawn"
"""The ``vote_state`` of a run whose change was closed before it finished: what the connector
said of it (a ``pending`` status update) is to be finalised, then was."""
LIVE = (QUEUED, RUNNING)


def _iso(value: datetime | None) -> str:
    return iso(value) or ""


def _run(row: Any) -> ReviewRun:
    return ReviewRun(
        id=row.id,
        connector=row.connector,
        change=row.change,
        patchset=row.patchset,
        attempt=row.attempt,
        kind=row.kind,
        project=row.project,
        ref=row.ref,
        revision=row.revision,
        target=row.target,
        url=row.url,
        state=row.state,
        flight_id=row.flight_id,
        vote=row.vote,
        voting=None if row.voting is None else bool(row.voting),
        message=row.message,
        vote_state=row.vote_state,
        retest=bool(row.retest),
        reason=row.reason,
        created=_iso(row.created),
        updated=_iso(row.updated),
        report_id=row.report_id,
    )


@dataclass(frozen=True)
class Discrepancy:
    """A patch set where labgate's vote and another CI account's differ in sign."""

    connector: str
    change: str
    patchset: str
    revision: str
    run: int
    flight: int | None
    labgate: int
    voting: bool
    account: str
    label: str
    value: int
    url: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Readiness:
    """The figures a project asks for before it lets a CI vote, for one review target (a
    ``[[review]]`` entry and the review branch its changes are for), over the last
    ``patchsets`` patch sets labgate posted a result on.

    ``agreed`` of ``compared``: patch sets where labgate (+1 or -1) and every other CI account
    with an opinion (a vote or status that is not 0) agree in sign. ``broken`` of ``runs``: runs
    whose result was "not tested" (the lab failed). ``to_result_p50_s``/``p95``: seconds from
    the patch set's creation (the review system's time; else when labgate heard of it) to
    labgate's result on it (its first run that was not retried)."""

    connector: str
    target: str
    patchsets: int
    compared: int
    agreed: int
    runs: int
    broken: int
    to_result_p50_s: float | None
    to_result_p95_s: float | None

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def broken_share(self) -> float | None:
        return self.broken / self.runs if self.runs else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "agreement": self.agreement, "broken_share": self.broken_share}


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` 0.5 is the median), None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


class ReviewQueue:
    """The review tables of a :class:`~labgate.store.Store`."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    # --- events in -------------------------------------------------------------------------

    def enqueue(self, event: ChangeEvent) -> ReviewRun | None:
        """Queue a run for the event, or None when it asks for nothing new: a patch set already
        queued or tested (a repeated event), a recheck of one already queued or running. A new
        patch set supersedes the queued runs of the change's older ones. The event's other CI
        votes are recorded either way."""
        self.record_votes(event)
        with self.engine.begin() as conn:
            same = and_(
                t.review_run.c.connector == event.source,
                t.review_run.c.change == event.change,
                t.review_run.c.patchset == event.patchset,
            )
            attempts = conn.execute(
                select(t.review_run.c.attempt, t.review_run.c.state).where(same)
            ).all()
            if event.kind == "patchset" and attempts:
                return None
            if any(r.state in LIVE for r in attempts):
                return None
            attempt = max((r.attempt for r in attempts), default=0) + 1
            if event.kind == "patchset":
                self._supersede(
                    conn, event.source, event.change, "a newer patch set", keep=event.patchset
                )
            try:
                with conn.begin_nested():
                    return self._insert(conn, event, attempt)
            except IntegrityError:  # another controller queued it first
                return None

    def _insert(self, conn: Connection, event: ChangeEvent, attempt: int) -> ReviewRun:
        stamp = now()
        result = conn.execute(
            t.review_run.insert().values(
                connector=event.source,
                change=event.change,
                patchset=event.patchset,
                attempt=attempt,
                kind=event.kind,
                project=event.project,
                ref=event.ref,
                revision=event.revision,
                target=event.branch,
                url=event.url,
                state=QUEUED,
                retest=False,
                created=stamp,
                updated=stamp,
                patchset_created=event.created,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return _run(conn.execute(select(t.review_run).where(t.review_run.c.id == key[0])).one())

    def _supersede(
        self, conn: Connection, connector: str, change: str, reason: str, keep: str | None = None
    ) -> None:
        """The change's queued runs will not be tested (but those of patch set ``keep``)."""
        query = update(t.review_run).where(
            t.review_run.c.connector == connector,
            t.review_run.c.change == change,
            t.review_run.c.state == QUEUED,
        )
        if keep is not None:
            query = query.where(t.review_run.c.patchset != keep)
        conn.execute(query.values(state=SUPERSEDED, reason=reason, updated=now()))

    def supersede_change(self, connector: str, change: str, reason: str) -> None:
        """The change is closed: its queued runs will not be tested."""
        with self.engine.begin() as conn:
            self._supersede(conn, connector, change, reason)

    def close_change(self, connector: str, change: str, reason: str) -> list[ReviewRun]:
        """The change is closed: its queued runs and its running ones not yet voting end
        ``superseded`` (no vote; a running one's loop sees it when its flight ends), their
        report to be withdrawn (``vote_state`` ``withdraw``, see :meth:`to_withdraw`). Returns
        them as they were (``state`` queued or running: a running one's flight is to be
        cancelled)."""
        with self.engine.begin() as conn:
            live = and_(
                t.review_run.c.connector == connector,
                t.review_run.c.change == change,
                t.review_run.c.state.in_(LIVE),
                t.review_run.c.vote_state.is_(None),
            )
            ended = [_run(r) for r in conn.execute(select(t.review_run).where(live))]
            conn.execute(
                update(t.review_run)
                .where(t.review_run.c.id.in_([r.id for r in ended]))
                .values(state=SUPERSEDED, vote_state=WITHDRAW, reason=reason, updated=now())
            )
        return ended

    def to_withdraw(self) -> list[ReviewRun]:
        """The runs ended by a closed change whose report is not finalised yet, oldest first."""
        query = select(t.review_run).where(t.review_run.c.vote_state == WITHDRAW)
        with self.engine.connect() as conn:
            return [_run(r) for r in conn.execute(query.order_by(t.review_run.c.id))]

    def mark_withdrawn(self, run_id: int) -> None:
        """The run's report is finalised (or it had none to finalise)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.review_run)
                .where(t.review_run.c.id == run_id, t.review_run.c.vote_state == WITHDRAW)
                .values(vote_state=WITHDRAWN, updated=now())
            )

    def delivery_seen(self, connector: str, delivery: str) -> bool:
        """Whether a webhook delivery was handled before (a replay)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.review_delivery.c.delivery).where(
                    t.review_delivery.c.connector == connector,
                    t.review_delivery.c.delivery == delivery,
                )
            ).first()
        return row is not None

    def record_delivery(self, connector: str, delivery: str, event: str) -> None:
        """Remember a webhook delivery once it is handled (a redelivery of it is a replay);
        one recorded meanwhile by another process is fine."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    t.review_delivery.insert().values(
                        connector=connector, delivery=delivery, event=event, received=now()
                    )
                )
        except IntegrityError:
            pass

    def record_votes(self, event: ChangeEvent) -> None:
        """Record (or update) other CI accounts' votes on the event's patch set."""
        if not event.votes:
            return
        with self.engine.begin() as conn:
            for vote in event.votes:
                self._record_vote(conn, event, vote)

    def _record_vote(self, conn: Connection, event: ChangeEvent, vote: OtherVote) -> None:
        key = and_(
            t.review_vote.c.connector == event.source,
            t.review_vote.c.revision == event.revision,
            t.review_vote.c.account == vote.account,
            t.review_vote.c.label == vote.label,
        )
        done = conn.execute(
            update(t.review_vote).where(key).values(value=vote.value, created=now())
        )
        if done.rowcount:
            return
        try:
            with conn.begin_nested():
                conn.execute(
                    t.review_vote.insert().values(
                        connector=event.source,
                        revision=event.revision,
                        change=event.change,
                        patchset=event.patchset,
                        account=vote.account,
                        label=vote.label,
                        value=vote.value,
                        created=now(),
                    )
                )
        except IntegrityError:
            conn.execute(update(t.review_vote).where(key).values(value=vote.value))

    # --- the loop's side ---------------------------------------------------------------------

    def claim(self, owner: str, lease_s: float, connectors: Sequence[str]) -> ReviewRun | None:
        """Take the oldest run to work on: a queued one, or a running one whose lease ran out
        (its controller died). Two controllers never get the same run."""
        while True:
            stamp = now()
            claimable = or_(
                t.review_run.c.state == QUEUED,
                and_(t.review_run.c.state == RUNNING, REVIEW_RUN.free(owner, stamp)),
            )
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(t.review_run.c.id)
                    .where(claimable, t.review_run.c.connector.in_(list(connectors)))
                    .order_by(t.review_run.c.id)
                    .limit(1)
                ).first()
                if row is None:
                    return None
                taken = conn.execute(
                    update(t.review_run)
                    .where(t.review_run.c.id == row.id, claimable)
                    .values(state=RUNNING, updated=stamp, **REVIEW_RUN.take(owner, lease_s, stamp))
                )
                if taken.rowcount == 1:
                    got = conn.execute(select(t.review_run).where(t.review_run.c.id == row.id))
                    return _run(got.one())

    def running_owners(self) -> set[str]:
        """The owners of the runs being worked on."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.review_run.c.owner)
                .where(t.review_run.c.state == RUNNING, t.review_run.c.owner.is_not(None))
                .distinct()
            )
            return {r.owner for r in rows}

    def expire_owner(self, owner: str) -> None:
        """An owner known dead (a controller process that is gone): its runs are claimable
        now rather than when their leases run out."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.review_run)
                .where(t.review_run.c.state == RUNNING, REVIEW_RUN.held_by(owner))
                .values(lease_until=None)
            )

    def renew(self, run_id: int, owner: str, lease_s: float) -> bool:
        """Extend the lease of a run this owner holds; False when it lost it."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.review_run)
                .where(t.review_run.c.id == run_id, REVIEW_RUN.held_by(owner))
                .values(REVIEW_RUN.renew(lease_s, now()))
            )
            return done.rowcount == 1

    def release(self, run_id: int, owner: str, reason: str, delay_s: float = 0.0) -> None:
        """Give a running run back (posting its vote failed): a claim ``delay_s`` from now
        retries it."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.review_run)
                .where(t.review_run.c.id == run_id, t.review_run.c.owner == owner)
                .values(
                    lease_until=now() + timedelta(seconds=delay_s),
                    owner=None,
                    reason=reason,
                    updated=now(),
                )
            )

    def set_flight(self, run_id: int, flight_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.review_run)
                .where(t.review_run.c.id == run_id)
                .values(flight_id=flight_id, updated=now())
            )

    def set_report_id(self, run_id: int, report_id: str) -> None:
        """Keep what the connector said testing began with (see ``ReviewRun.report_id``)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.review_run)
                .where(t.review_run.c.id == run_id)
                .values(report_id=report_id, updated=now())
            )

    def record_intent(self, run_id: int, vote: Vote) -> bool:
        """Record the vote decided for a run, before it is posted; False if one was already
        recorded (the earlier intent stands: a run votes once)."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.review_run)
                .where(t.review_run.c.id == run_id, t.review_run.c.vote_state.is_(None))
                .values(
                    vote=vote.verified,
                    voting=vote.voting,
                    message=vote.message,
                    vote_state=INTENT,
                    retest=vote.retest,
                    updated=now(),
                )
            )
            return done.rowcount == 1

    def mark_voted(self, run_id: int, *, retry: ChangeEvent | None = None) -> ReviewRun | None:
        """The server has the run's vote: the run is ``voted``. With ``retry`` (the lab broke
        the run), the next attempt is queued in the same transaction; it is returned."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.review_run)
                .where(t.review_run.c.id == run_id)
                .values(state=VOTED, vote_state=DONE, lease_until=None, updated=now())
            )
            if retry is None:
                return None
            attempt = conn.execute(
                select(func.max(t.review_run.c.attempt)).where(
                    t.review_run.c.connector == retry.source,
                    t.review_run.c.change == retry.change,
                    t.review_run.c.patchset == retry.patchset,
                )
            ).scalar()
            return self._insert(conn, retry, int(attempt or 0) + 1)

    def finish(self, run_id: int, state: str, reason: str) -> None:
        """End a run without a vote (``superseded``), or after reporting an ``error``."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.review_run)
                .where(t.review_run.c.id == run_id)
                .values(state=state, reason=reason, lease_until=None, updated=now())
            )

    # --- reading -----------------------------------------------------------------------------

    def get(self, run_id: int) -> ReviewRun:
        with self.engine.connect() as conn:
            return _run(conn.execute(select(t.review_run).where(t.review_run.c.id == run_id)).one())

    def runs(self, connector: str | None = None, state: str | None = None) -> list[ReviewRun]:
        """Runs oldest first."""
        query = select(t.review_run).order_by(t.review_run.c.id)
        if connector is not None:
            query = query.where(t.review_run.c.connector == connector)
        if state is not None:
            query = query.where(t.review_run.c.state == state)
        with self.engine.connect() as conn:
            return [_run(r) for r in conn.execute(query)]

    def latest_run(self, connector: str, change: str) -> ReviewRun | None:
        """The change's newest run (for a recheck that names the change only)."""
        return self._newest(connector, t.review_run.c.change == change)

    def run_for_revision(self, connector: str, revision: str) -> ReviewRun | None:
        """The newest run that tested this commit."""
        return self._newest(connector, t.review_run.c.revision == revision)

    def _newest(self, connector: str, where: ColumnElement[bool]) -> ReviewRun | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.review_run)
                .where(t.review_run.c.connector == connector, where)
                .order_by(t.review_run.c.id.desc())
                .limit(1)
            ).first()
        return _run(row) if row is not None else None

    def votes(self, connector: str | None = None) -> list[dict[str, Any]]:
        query = select(t.review_vote).order_by(t.review_vote.c.id)
        if connector is not None:
            query = query.where(t.review_vote.c.connector == connector)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def discrepancies(self) -> list[Discrepancy]:
        """Patch sets where labgate's last decided vote (+1 or -1, voting or not) and another CI
        account's vote differ in sign, oldest first. A 0 (not tested) is no opinion."""
        with self.engine.connect() as conn:
            runs = conn.execute(
                select(t.review_run)
                .where(t.review_run.c.vote_state == DONE, t.review_run.c.vote != 0)
                .order_by(t.review_run.c.id)
            ).all()
            others = conn.execute(select(t.review_vote).order_by(t.review_vote.c.id)).all()
        ours: dict[tuple[str, str], Any] = {}
        for r in runs:
            ours[(r.connector, r.revision)] = r  # the newest decided run wins
        out = []
        for v in others:
            run = ours.get((v.connector, v.revision))
            if run is None or v.value == 0 or (v.value > 0) == (run.vote > 0):
                continue
            out.append(
                Discrepancy(
                    connector=v.connector,
                    change=run.change,
                    patchset=run.patchset,
                    revision=run.revision,
                    run=run.id,
                    flight=run.flight_id,
                    labgate=run.vote,
                    voting=bool(run.voting),
                    account=v.account,
                    label=v.label,
                    value=v.value,
                    url=run.url,
                )
            )
        return out

    def readiness(self, last: int = 50) -> list[Readiness]:
        """The ready-to-vote figures of each review target over its last ``last`` patch sets
        with a result (see :class:`Readiness`), by connector and target."""
        with self.engine.connect() as conn:
            runs = conn.execute(select(t.review_run).order_by(t.review_run.c.id)).all()
            others = conn.execute(
                select(t.review_vote.c.connector, t.review_vote.c.revision, t.review_vote.c.value)
            ).all()
        opinions: dict[tuple[str, str], list[int]] = defaultdict(list)
        for v in others:
            if v.value:
                opinions[(v.connector, v.revision)].append(_sign(v.value))
        patchsets: dict[tuple[str, str], dict[tuple[str, str], list[Any]]] = defaultdict(dict)
        for r in runs:
            patchsets[(r.connector, r.target)].setdefault((r.change, r.patchset), []).append(r)
        return [
            self._readiness(connector, target, found, opinions, last)
            for (connector, target), found in sorted(patchsets.items())
        ]

    @staticmethod
    def _readiness(
        connector: str,
        target: str,
        patchsets: dict[tuple[str, str], list[Any]],
        opinions: dict[tuple[str, str], list[int]],
        last: int,
    ) -> Readiness:
        with_result = [rs for rs in patchsets.values() if any(r.vote_state == DONE for r in rs)]
        chosen = with_result[-last:] if last > 0 else []
        compared = agreed = runs = broken = 0
        times: list[float] = []
        for rs in chosen:
            done = [r for r in rs if r.vote_state == DONE]
            runs += len(done)
            broken += sum(1 for r in done if r.vote == 0)
            decided = [r for r in done if r.vote]
            theirs = opinions.get((connector, rs[0].revision), [])
            if decided and theirs:
                compared += 1
                agreed += all(o == _sign(decided[-1].vote) for o in theirs)
            final = next((r for r in done if not r.retest), None)
            if final is not None:
                made = next((r.patchset_created for r in rs if r.patchset_created), None)
                start = aware(made or rs[0].created)
                times.append(max(0.0, (aware(final.updated) - start).total_seconds()))
        return Readiness(
            connector=connector,
            target=target,
            patchsets=len(chosen),
            compared=compared,
            agreed=agreed,
            runs=runs,
            broken=broken,
            to_result_p50_s=percentile(times, 0.5),
            to_result_p95_s=percentile(times, 0.95),
        )
