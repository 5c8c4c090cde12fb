"""Users, their groups and API tokens; flights under embargo and who saw them.

A *viewer* is who reads the store through the dashboard or the API: anonymous, a user (with
groups), or the lab admin (``[web] token``). :func:`visible` is the one predicate that says
which flights a viewer may see; every read of results that the web serves applies it in its SQL
(``labgate.store.dashboard``), so a hidden flight and a missing one take the same path.

Tokens are random (256 bits) and stored as their SHA-256 only: a stolen store gives no token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    and_,
    delete,
    false,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError

from labgate.model import Embargo
from labgate.store import schema as t
from labgate.store.values import StoreError, aware, iso, now

TOKEN_PREFIX = "lgt_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,199}")


class UserError(StoreError):
    """A user, group or token command that cannot be done (unknown user, bad name...)."""


@dataclass(frozen=True)
class Viewer:
    """Who reads: anonymous (no ``user``), a user and the groups they belong to, or the lab
    admin (sees everything)."""

    user: str | None = None
    groups: frozenset[str] = frozenset()
    admin: bool = False
    admin_of: frozenset[str] = frozenset()
    """The groups whose audit log this user may read."""

    @property
    def anonymous(self) -> bool:
        return self.user is None and not self.admin

    def sees(self, embargo: Embargo | None, at: datetime | None = None) -> bool:
        """Whether work under ``embargo`` (a branch's, from lab.toml) is for this viewer: the
        rule :func:`visible` applies to stored flights."""
        if embargo is None or self.admin or embargo.group in self.groups:
            return True
        return embargo.until <= (at or now())


ANONYMOUS = Viewer()
LAB_ADMIN = Viewer(user="lab admin", admin=True)


def visible(viewer: Viewer, at: datetime | None = None) -> ColumnElement[bool]:
    """The SQL condition on ``flight`` rows the viewer may see: public flights, flights whose
    embargo ended (``until`` passed, or lifted), and those of the viewer's groups; and of the
    on-demand flights their owner keeps to themselves, only the viewer's own."""
    if viewer.admin:
        return true()
    public = or_(t.flight.c.embargo_group.is_(None), t.flight.c.embargo_until <= (at or now()))
    if viewer.groups:
        public = or_(public, t.flight.c.embargo_group.in_(sorted(viewer.groups)))
    shared = t.flight.c.owner_only == false()
    if viewer.user is not None:
        shared = or_(shared, t.flight.c.owner == viewer.user)
    return and_(public, shared)


def seen_by(query: Select[Any], flight_id: Any, viewer: Viewer | None) -> Select[Any]:
    """``query`` (of rows that belong to a flight, by the column ``flight_id``) kept to the
    flights ``viewer`` may see; None: every row."""
    if viewer is None:
        return query
    return query.join(t.flight, t.flight.c.id == flight_id).where(visible(viewer))


def under_embargo(at: datetime | None = None) -> ColumnElement[bool]:
    """The SQL condition on ``flight`` rows still under embargo."""
    return and_(t.flight.c.embargo_group.is_not(None), t.flight.c.embargo_until > (at or now()))


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(kind: str, name: str) -> str:
    if not NAME.fullmatch(name):
        raise UserError(
            f"{kind} name {name!r} is not valid: use letters, digits and . _ @ - "
            "(at most 200, starting with a letter or digit)"
        )
    return name


def _viewer(name: str, groups: Sequence[Any]) -> Viewer:
    """A user and the rows of their groups (``group``, ``admin``; a NULL group for none)."""
    return Viewer(
        user=name,
        groups=frozenset(r.group for r in groups if r.group is not None),
        admin_of=frozenset(r.group for r in groups if r.group is not None and r.admin),
    )


@dataclass(frozen=True)
class Sight:
    """A flight a viewer may see, and its embargo while it lasts (None: public)."""

    embargo: Embargo | None


@dataclass(frozen=True)
class UserRecord:
    name: str
    email: str | None
    groups: tuple[str, ...]
    admin_of: tuple[str, ...]
    tokens: int
    created: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "email": self.email,
            "groups": list(self.groups),
            "admin_of": list(self.admin_of),
            "tokens": self.tokens,
            "created": self.created,
        }


@dataclass(frozen=True)
class AuditEntry:
    user: str
    flight: int
    group: str
    what: str
    created: str
    id: int = 0  # the entry's place in the log (pages of it go ``before`` one)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "flight": self.flight,
            "group": self.group,
            "what": self.what,
            "created": self.created,
        }


class Users:
    """Users, groups, tokens, embargoes and the audit log of one store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- users and tokens ----------------------------------------------------------------

    def add(
        self,
        name: str,
        *,
        email: str | None = None,
        groups: Sequence[str] = (),
        admin_of: Sequence[str] = (),
    ) -> None:
        """A new user in these groups (and admin of ``admin_of``, which they join too)."""
        with self.engine.begin() as conn:
            self.insert_user(conn, name, email=email, groups=groups, admin_of=admin_of)

    def insert_user(
        self,
        conn: Any,
        name: str,
        *,
        email: str | None = None,
        groups: Sequence[str] = (),
        admin_of: Sequence[str] = (),
    ) -> None:
        """:meth:`add` in the caller's transaction."""
        check_name("user", name)
        for group in (*groups, *admin_of):
            check_name("group", group)
        if email is not None and "@" not in email:
            raise UserError(f"--email {email!r} is not a mail address (no @)")
        member = {g: False for g in groups} | {g: True for g in admin_of}
        if conn.execute(select(t.lab_user.c.name).where(t.lab_user.c.name == name)).first():
            raise UserError(f"user {name!r} exists already")
        try:  # a user added meanwhile: the caller's transaction ends with this error
            conn.execute(t.lab_user.insert().values(name=name, email=email, created=now()))
            if member:
                conn.execute(
                    t.user_group.insert(),
                    [{"user": name, "group": g, "admin": a} for g, a in member.items()],
                )
        except IntegrityError:
            raise UserError(f"user {name!r} exists already") from None

    def join(self, name: str, group: str, *, admin: bool = False) -> bool:
        """Put the user in ``group`` (as one of its admins with ``admin``); False when they
        already were, as that. Takes effect on their next request: a viewer is read from the
        store each time."""
        check_name("group", group)
        with self.engine.begin() as conn:
            self._known(conn, name)
            key = (t.user_group.c.user == name) & (t.user_group.c.group == group)
            row = conn.execute(select(t.user_group.c.admin).where(key)).first()
            if row is not None:
                if row.admin == admin:
                    return False
                conn.execute(update(t.user_group).where(key).values(admin=admin))
                return True
            conn.execute(t.user_group.insert().values(user=name, group=group, admin=admin))
            return True

    def leave(self, name: str, group: str) -> None:
        """Take the user out of ``group``: from their next request on, its embargoed work is
        hidden from them."""
        with self.engine.begin() as conn:
            self._known(conn, name)
            gone = conn.execute(
                delete(t.user_group).where(
                    t.user_group.c.user == name, t.user_group.c.group == group
                )
            ).rowcount
        if not gone:
            raise UserError(f"user {name!r} is not in group {group!r}")

    def remove(self, name: str) -> int:
        """Remove the user with their groups and tokens (their sessions end with the tokens);
        the audit log keeps their name. Returns how many of their tokens were live."""
        with self.engine.begin() as conn:
            self._known(conn, name)
            live = conn.execute(
                select(func.count()).where(
                    t.api_token.c.user == name, t.api_token.c.revoked.is_(None)
                )
            ).scalar_one()
            # their groups and tokens go by ON DELETE CASCADE (the store's SQLite connections
            # enforce foreign keys, as PostgreSQL does)
            conn.execute(delete(t.lab_user).where(t.lab_user.c.name == name))
        return int(live)

    def records(self) -> list[UserRecord]:
        with self.engine.connect() as conn:
            users = conn.execute(select(t.lab_user).order_by(t.lab_user.c.name)).all()
            groups = conn.execute(select(t.user_group).order_by(t.user_group.c.group)).all()
            live = conn.execute(
                select(t.api_token.c.user, func.count())
                .where(t.api_token.c.revoked.is_(None))
                .group_by(t.api_token.c.user)
            ).all()
        tokens = {user: n for user, n in live}
        return [
            UserRecord(
                u.name,
                u.email,
                tuple(g.group for g in groups if g.user == u.name),
                tuple(g.group for g in groups if g.user == u.name and g.admin),
                tokens.get(u.name, 0),
                iso(u.created) or "",
            )
            for u in users
        ]

    def _known(self, conn: Any, name: str) -> None:
        if conn.execute(select(t.lab_user.c.name).where(t.lab_user.c.name == name)).first() is None:
            raise UserError(f"no user {name!r} (labgate user add {name} makes one)")

    def create_token(self, name: str, *, expires: datetime | None = None) -> str:
        """A new API token of the user (working until ``expires``, if given); only its digest
        is stored, so this is the one time it is seen."""
        with self.engine.begin() as conn:
            return self.insert_token(conn, name, expires)

    def insert_token(self, conn: Any, name: str, expires: datetime | None = None) -> str:
        """:meth:`create_token` in the caller's transaction."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._known(conn, name)
        conn.execute(
            t.api_token.insert().values(
                user=name, digest=digest(token), created=now(), expires=expires
            )
        )
        return token

    def revoke(self, name: str, token: str | None = None) -> int:
        """Revoke the user's tokens (only ``token`` when given); how many were live."""
        query = update(t.api_token).where(
            t.api_token.c.user == name, t.api_token.c.revoked.is_(None)
        )
        if token is not None:
            query = query.where(t.api_token.c.digest == digest(token))
        with self.engine.begin() as conn:
            self._known(conn, name)
            return conn.execute(query.values(revoked=now())).rowcount

    def viewer_for_token(self, token: str) -> Viewer | None:
        """The user a live token belongs to, None for any other string (one query: every
        request with a token asks)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        query = (
            select(t.api_token.c.user, t.user_group.c.group, t.user_group.c.admin)
            .outerjoin(t.user_group, t.user_group.c.user == t.api_token.c.user)
            .where(
                t.api_token.c.digest == digest(token),
                t.api_token.c.revoked.is_(None),
                or_(t.api_token.c.expires.is_(None), t.api_token.c.expires > now()),
            )
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return _viewer(rows[0].user, rows) if rows else None

    def viewer(self, name: str) -> Viewer:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.user_group).where(t.user_group.c.user == name)).all()
        return _viewer(name, rows)

    def addresses(self, group: str) -> list[str]:
        """The mail addresses of the group's members (those who gave one)."""
        query = (
            select(t.lab_user.c.email)
            .join(t.user_group, t.user_group.c.user == t.lab_user.c.name)
            .where(t.user_group.c.group == group, t.lab_user.c.email.is_not(None))
            .order_by(t.lab_user.c.name)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    # --- embargoes ---------------------------------------------------------------------------

    def embargo(self, flight_id: int, at: datetime | None = None) -> Embargo | None:
        """The flight's embargo while it lasts, None for a public flight (or one not stored)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.flight.c.embargo_group, t.flight.c.embargo_until).where(
                    t.flight.c.id == flight_id, under_embargo(at)
                )
            ).first()
        return None if row is None else Embargo(row.embargo_group, aware(row.embargo_until))

    def sight(self, viewer: Viewer, flight_id: int) -> Sight | None:
        """What the viewer sees of the flight: None when it does not exist or is hidden from
        them, else its embargo while it lasts (one query)."""
        stamp = now()
        columns = (t.flight.c.embargo_group, t.flight.c.embargo_until)
        query = select(under_embargo(stamp).label("embargoed"), *columns).where(
            t.flight.c.id == flight_id, visible(viewer, stamp)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        if not row.embargoed:
            return Sight(None)
        return Sight(Embargo(row.embargo_group, aware(row.embargo_until)))

    def may_see(self, viewer: Viewer, flight_id: int) -> bool:
        """True when the flight exists and the viewer may see it."""
        return self.sight(viewer, flight_id) is not None

    def lift(self, *, group: str | None = None, flight_id: int | None = None) -> list[int]:
        """End the embargo of the group's flights (or of one flight) now, in one UPDATE: every
        page shows them from this moment. Returns the flights made public."""
        if (group is None) == (flight_id is None):
            raise UserError("lift the embargo of a group or of one flight")
        stamp = now()
        where = [under_embargo(stamp)]
        if group is not None:
            where.append(t.flight.c.embargo_group == group)
        else:
            where.append(t.flight.c.id == flight_id)
        with self.engine.begin() as conn:
            ids = sorted(conn.execute(select(t.flight.c.id).where(*where)).scalars())
            if ids:
                conn.execute(
                    update(t.flight).where(t.flight.c.id.in_(ids)).values(embargo_until=stamp)
                )
        return ids

    # --- the audit log -----------------------------------------------------------------------

    def record_view(self, viewer: Viewer, flight_id: int, group: str, what: str) -> None:
        """Note that the viewer saw the flight, under embargo of ``group`` (``what``: the page)."""
        with self.engine.begin() as conn:
            conn.execute(
                t.embargo_audit.insert().values(
                    user=viewer.user or "anonymous",
                    flight_id=flight_id,
                    group=group,
                    what=what[:2000],
                    created=now(),
                )
            )

    def audit(
        self, group: str, *, limit: int = 1000, before: int | None = None
    ) -> list[AuditEntry]:
        """Who saw the group's embargoed work and when, newest first (``before``: only the
        entries older than that id, the next page)."""
        query = (
            select(t.embargo_audit)
            .where(t.embargo_audit.c.group == group)
            .order_by(t.embargo_audit.c.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(t.embargo_audit.c.id < before)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            AuditEntry(r.user, r.flight_id, r.group, r.what, iso(r.created) or "", r.id)
            for r in rows
        ]
