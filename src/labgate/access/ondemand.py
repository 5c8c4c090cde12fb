"""On-demand flights: an approved user's ``adhoc`` flight, checked rule by rule before anything
is stored, then planned and handed to the pool (``labgate serve`` runs it).

The rules, in the order they are checked (the first broken one is the refusal): an approved
user; a branch they may see; job globs that match jobs; host flags some host has, with each
job's own; the quotas (the user's and each of their groups'); the tree URL in ``[access]
allow_urls``; a ref that exists there, fetched within ``fetch_timeout`` and ``max_fetch_mb``;
the quotas again, decided in the transaction that stores the flight (:func:`admit`: two
submissions at once cannot both take the last place). A refusal stores nothing and leaves no
ref in the mirror.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from labgate.access.fetch import Fetched, Refused, fetch_tree
from labgate.access.settings import Quota
from labgate.config import Lab
from labgate.flight import (
    FlightError,
    plan_flight,
    resolve_revisions,
    select_jobs,
    without_disabled,
)
from labgate.git import GitError, Mirrors
from labgate.model import Blessing, HostSpec, Owner
from labgate.store import Store
from labgate.store.access import Usage, admission, members_on, usage_on
from labgate.store.users import Viewer

MAX_GLOBS = 50


@dataclass(frozen=True)
class OnDemand:
    """What an approved user asks for: ``branch``'s jobs matching ``jobs`` (all when empty), on
    hosts with ``flags``, with ``ref`` of their tree ``url`` as ``tree`` (the branch's tree
    under test by default); ``public``: everyone may see it (else only they and the admin)."""

    branch: str
    jobs: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    url: str | None = None
    ref: str | None = None
    tree: str | None = None
    public: bool = False

    @classmethod
    def from_json(cls, data: Any) -> OnDemand:
        """From the API's JSON body (or a form's fields); Refused("request") names what is
        wrong."""
        if not isinstance(data, Mapping):
            raise Refused("request", "the body must be a JSON object", 400)
        known = {"branch", "jobs", "flags", "url", "ref", "tree", "public"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise Refused("request", f"unknown field(s): {', '.join(unknown)}", 400)

        def text(key: str, required: bool = False) -> str | None:
            value = data.get(key)
            if value in (None, "") and not required:
                return None
            if not isinstance(value, str) or not value.strip():
                raise Refused("request", f"{key}: a non-empty string is required", 400)
            return value.strip()

        def words(key: str) -> tuple[str, ...]:
            value = data.get(key, [])
            if isinstance(value, str):
                value = value.split()
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise Refused("request", f"{key}: a list of strings is required", 400)
            if len(value) > MAX_GLOBS:
                raise Refused("request", f"{key}: at most {MAX_GLOBS}", 400)
            return tuple(value)

        public = data.get("public", False)
        if not isinstance(public, bool):
            raise Refused("request", "public: true or false", 400)
        url, ref = text("url"), text("ref")
        if (url is None) != (ref is None):
            raise Refused("request", "url and ref go together: your tree's URL and its ref", 400)
        branch = text("branch", required=True)
        assert branch is not None
        return cls(branch, words("jobs"), words("flags"), url, ref, text("tree"), public)


def check_approved(lab: Lab, viewer: Viewer) -> str:
    """The user's name, if they may submit on-demand work."""
    if viewer.user is None or viewer.admin or not lab.access.approved(viewer.groups):
        raise Refused(
            "approved user",
            "on-demand flights are for approved users: apply at /access, then use the API "
            "token you are given",
            403,
        )
    return viewer.user


def check_quota(lab: Lab, store: Store, viewer: Viewer, user: str) -> None:
    """Refused("quota") when the user, or a group of theirs, is at a limit of ``[access]``
    now (a first answer, before any work: :func:`admit` decides)."""
    with store.engine.connect() as conn:
        quota_on(conn, lab, viewer, user)


def quota_groups(lab: Lab, viewer: Viewer) -> list[str]:
    """The viewer's groups with a quota of their own."""
    return sorted(viewer.groups & set(lab.access.groups))


def quota_on(conn: Connection, lab: Lab, viewer: Viewer, user: str, hours: float = 0.0) -> None:
    """Refused("quota") when the user, or a group of theirs, has no room under ``[access]``
    for a flight (or, with ``hours``, for a reservation that long), as ``conn``'s
    transaction sees it."""
    mine = usage_on(conn, [user])[user]
    _within("your", lab.access.user_quota(user), mine, f"[access] quota of {user}", hours)
    for group in quota_groups(lab, viewer):
        members = usage_on(conn, members_on(conn, group))
        total = Usage(
            sum(u.flights for u in members.values()),
            sum(u.host_seconds for u in members.values()),
        )
        where = f"[access.groups.{group}]"
        _within(f"group {group}'s", lab.access.groups[group], total, where, hours)


def admit(lab: Lab, viewer: Viewer, user: str, hours: float = 0.0) -> Callable[[Connection], None]:
    """The decision on a flight of the user (or on ``hours`` of host time), made in the
    transaction that stores it: the quotas it answers to are locked
    (:func:`labgate.store.access.admission`), then checked; two submissions at once are
    decided one after the other, each seeing the other's work."""

    def decide(conn: Connection) -> None:
        admission(conn, [f"user:{user}", *(f"group:{g}" for g in quota_groups(lab, viewer))])
        quota_on(conn, lab, viewer, user, hours)

    return decide


def _within(whose: str, quota: Quota, usage: Usage, where: str, reserving: float = 0.0) -> None:
    """Refused("quota") when ``usage`` leaves no room under ``quota``: a flight needs a flight
    and some host time left; a reservation of ``reserving`` hours needs that many left."""
    hours = usage.host_seconds / 3600
    if reserving:
        if quota.host_hours is not None and hours + reserving > quota.host_hours:
            raise Refused(
                "quota",
                f"over quota: {reserving:g}h more is more than {whose} "
                f"{max(quota.host_hours - hours, 0):.2f}h of host time left this week "
                f"({where}: {quota.host_hours:g}h a week)",
                429,
            )
        return
    if quota.flights is not None and usage.flights >= quota.flights:
        raise Refused(
            "quota",
            f"over quota: {whose} {usage.flights} on-demand flight(s) queued or running; "
            f"{where} allows {quota.flights} at once",
            429,
        )
    if quota.host_hours is not None and hours >= quota.host_hours:
        raise Refused(
            "quota",
            f"over quota: {whose} host time in the last 7 days is {hours:.2f}h; "
            f"{where} allows {quota.host_hours:g}h a week",
            429,
        )


def check_hosts(hosts: Sequence[HostSpec], jobs: Sequence[Any], flags: Sequence[str]) -> None:
    """Refused("flags") when a job, with the flags asked for, would fit no host of the lab."""
    for job in jobs:
        needs = frozenset(job.requires) | frozenset(flags)
        if not any(h.flags >= needs for h in hosts):
            raise Refused(
                "flags",
                f"no host of the lab has the flags {', '.join(sorted(needs))} "
                f"(that job {job.name} needs)",
            )


def submit(lab: Lab, store: Store, mirrors: Mirrors, viewer: Viewer, asked: OnDemand) -> int:
    """Check every rule, then plan the flight and hand it to the pool; its id. Refused names
    the first rule broken, and then nothing was stored."""
    user = check_approved(lab, viewer)
    spec = lab.branches.get(asked.branch)
    if spec is None or not viewer.sees(spec.embargo):
        known = ", ".join(sorted(n for n, b in lab.branches.items() if viewer.sees(b.embargo)))
        raise Refused("branch", f"unknown branch {asked.branch!r} (branches: {known})", 404)
    try:
        jobs = select_jobs(without_disabled(lab.jobs_for(asked.branch), lab.disabled), asked.jobs)
    except FlightError as error:
        raise Refused("jobs", str(error)) from None
    check_hosts(lab.hosts, jobs, asked.flags)
    tree = asked.tree or spec.tree
    if tree not in lab.trees:
        raise Refused("tree", f"no tree {tree!r} in the lab (trees: {', '.join(lab.trees)})")
    check_quota(lab, store, viewer, user)
    try:
        revisions = resolve_revisions(lab, mirrors, lab.revision_refs(asked.branch))
    except FlightError as error:
        raise Refused("revisions", f"the branch's revisions cannot be had: {error}", 503) from None
    fetched: Fetched | None = None
    if asked.url is not None and asked.ref is not None:
        key = f"{user}/{uuid.uuid4().hex[:12]}"
        try:
            fetched = fetch_tree(mirrors, tree, asked.url, asked.ref, lab.access, key)
        except GitError as error:  # the lab's own mirror failed, not the user's tree
            raise Refused("mirror", f"the lab's mirror of {tree}: {error}", 503) from None
        revisions[tree] = fetched.sha
    try:
        flight_id = plan_flight(
            lab,
            store,
            asked.branch,
            revisions=revisions,
            job_globs=asked.jobs,
            blessing=Blessing.ADHOC,
            mirrors=mirrors,
            owner=Owner(user, only=not asked.public),
            requires=asked.flags,
            admit=admit(lab, viewer, user),
        )
    except BaseException:
        if fetched is not None:
            fetched.drop(mirrors)
        raise
    store.submit_flight(flight_id)
    return flight_id
