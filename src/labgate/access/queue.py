"""Where each on-demand flight stands in the pool's queue, and why it waits: a pure function of
what waits, what runs and the hosts, in the order the allocator serves it
(:class:`labgate.store.slots.Allocator`: the lab's own work first, then the user with the
fewest jobs on hosts)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from labgate.config import Lab
from labgate.model import HostSpec
from labgate.store import Store
from labgate.store.access import AccessRequests, Waiting
from labgate.store.users import Viewer


@dataclass(frozen=True)
class Place:
    flight: int
    owner: str
    branch: str
    place: int
    queued: int
    running: int
    why: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def places(
    waiting: Sequence[Waiting],
    lab_ready: Sequence[frozenset[str]],
    live: Mapping[str, int],
    hosts: Sequence[HostSpec],
    away: Mapping[str, str],
    free: Set[str],
) -> list[Place]:
    """Each waiting flight's place (1: served next) and why it waits: ``lab_ready`` the flags
    of each queued job of the lab's own whose dependencies passed, ``live`` counts each
    owner's jobs on hosts, ``away`` the hosts quarantined or reserved, ``free`` the hosts with a
    free slot. Only the lab's jobs that could start now (a free host in service fits them) go
    first, as the allocator has it."""
    open_hosts = [h for h in hosts if h.name in free and h.name not in away]
    lab_queued = sum(1 for need in lab_ready if any(h.flags >= need for h in open_hosts))
    turn: Counter[str] = Counter(live)
    keyed = []
    for w in sorted(waiting, key=lambda w: w.flight):
        keyed.append((turn[w.owner], w.flight, w))
        turn[w.owner] += 1
    out = []
    for place, (_, _, w) in enumerate(sorted(keyed, key=lambda k: (k[0], k[1])), start=1):
        why = _why(w, place, lab_queued, hosts, away, free)
        out.append(Place(w.flight, w.owner, w.branch, place, w.queued, w.live, why))
    return out


def _why(
    w: Waiting,
    place: int,
    lab_queued: int,
    hosts: Sequence[HostSpec],
    away: Mapping[str, str],
    free: Set[str],
) -> str:
    needs = list(w.requires)
    for need in needs:
        matching = [h.name for h in hosts if h.flags >= need]
        shown = ", ".join(sorted(need)) or "no flags"
        if not matching:
            return f"no host: no host of the lab has the flags {shown}"
        if all(h in away for h in matching):
            return f"no host: every host with {shown} is quarantined or reserved"
    if w.live:
        return f"running: {w.live} job(s) on hosts; the others wait for them or for a host"
    if lab_queued:
        return (
            f"priority: {lab_queued} queued job(s) of the lab's own flights can start now "
            "and go first"
        )
    if place > 1:
        return f"fair share: {place - 1} flight(s) of users with less host time now go first"
    if not any(h.name in free and h.flags >= need for need in needs for h in hosts):
        return "busy: every host with the flags it needs is busy; it is next"
    return "next: a controller gives it a host at its next claim"


def standing(lab: Lab, store: Store, viewer: Viewer | None = None) -> list[Place]:
    """The on-demand flights waiting now, with their places (those ``viewer`` may see; all for
    None)."""
    requests = AccessRequests(store.engine)
    waiting, lab_ready = requests.waiting()  # every one counts for the places
    live, away, free = requests.live_jobs(), store.hosts.unavailable(), requests.free_hosts()
    found = places(waiting, lab_ready, live, lab.hosts, away, free)
    if viewer is None:
        return found
    seen = {w.flight for w in requests.waiting(viewer)[0]}
    return [p for p in found if p.flight in seen]
