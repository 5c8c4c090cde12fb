"""Scheduling decisions, a pure function: ready jobs + hosts → allocations.

A job may go to a host whose flags include all it ``requires`` and that has a free slot; an
``exclusive`` job needs every slot of the host free and holds them all. Among matching hosts the
one that ran the same job last is preferred (its caches and install are warm, and a regression is
then seen on the same machine, as osstest does); after that the least loaded, then by name, so
the choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from labgate.model import Outcome


@dataclass(frozen=True)
class ReadyJob:
    """A job whose dependencies passed, waiting for a host."""

    id: int
    name: str
    requires: frozenset[str]
    exclusive: bool = False
    avoid: frozenset[str] = frozenset()
    """Hosts not to give it (hosts lost under an earlier attempt of it)."""


@dataclass(frozen=True)
class HostSlots:
    """A host as the scheduler sees it now: its flags and how many of its slots are in use."""

    name: str
    flags: frozenset[str]
    slots: int
    used: int = 0


@dataclass(frozen=True)
class Allocation:
    job_id: int
    host: str
    slots: int


def blocked_reason(depends: Sequence[str], outcomes: Mapping[str, Outcome]) -> str | None:
    """Why a queued job will never run: the dependencies that finished without passing (None
    while none did)."""
    failed = [d for d in depends if outcomes[d].finished and not outcomes[d].succeeded]
    if not failed:
        return None
    return "dependency did not pass: " + ", ".join(f"{d} {outcomes[d]}" for d in failed)


def can_run(job: ReadyJob, host: HostSlots) -> bool:
    """Whether the host has the flags the job requires and is not one it avoids (ignoring how
    busy it is)."""
    return job.requires <= host.flags and host.name not in job.avoid


def allocate(
    ready: Sequence[ReadyJob],
    hosts: Sequence[HostSlots],
    last_host: Mapping[str, str] | None = None,
    avoid: Mapping[str, str] | None = None,
) -> list[Allocation]:
    """Give as many ready jobs as possible a host, in the order ``ready`` lists them.

    ``last_host`` maps a job name to the host that ran it last; ``avoid`` to a host it should
    not go back to if another can take it (where it was ``broken``: retried elsewhere).

    A job that fits no host now waits; jobs after it may still be placed (no head-of-line
    blocking), except that an exclusive job that could run on a host once it drains reserves it:
    nothing new is put there, so exclusive jobs are not starved by a stream of small ones.
    """
    last = last_host or {}
    shun = avoid or {}
    used = {h.name: h.used for h in hosts}
    reserved: set[str] = set()
    out: list[Allocation] = []
    for job in ready:
        matching = [h for h in hosts if can_run(job, h) and h.name not in reserved]
        need = {h.name: (h.slots if job.exclusive else 1) for h in matching}
        free = [h for h in matching if h.slots - used[h.name] >= need[h.name]]
        if not free:
            if job.exclusive and matching:
                # reserve the matching host that will drain first
                reserved.add(min(matching, key=lambda h: (used[h.name], h.name)).name)
            continue
        preferred = last.get(job.name)
        choice = min(
            free,
            key=lambda h: (
                h.name == shun.get(job.name),
                h.name != preferred,
                used[h.name] / h.slots,
                h.name,
            ),
        )
        used[choice.name] += need[choice.name]
        out.append(Allocation(job.id, choice.name, need[choice.name]))
    return out
