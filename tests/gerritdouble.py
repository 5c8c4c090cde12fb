"""A protocol double of a Gerrit server, for the Gerrit connector's tests (no Gerrit server can
run here). It follows Gerrit's own documentation, page by page:

- ``Documentation/cmd-stream-events.txt``: ``ssh -p <port> <host> gerrit stream-events`` prints
  one JSON event per line; ``patchset-created`` (``change``, ``patchSet``, ``uploader``,
  ``eventCreatedOn``), ``comment-added`` (``change``, ``patchSet``, ``author``,
  ``approvals``, ``comment``, ``eventCreatedOn``), ``change-merged`` (``change``, ``patchSet``,
  ``submitter``, ``newRev``) and ``change-abandoned`` (``change``, ``patchSet``,
  ``abandoner``, ``reason``). Events are sent to the streams connected
  when they happen: a client away at the time never sees them (as with Gerrit).
- ``Documentation/json.txt``: the change, patchSet, account and approval attributes (approval
  ``value`` and ``oldValue`` as strings, times in seconds since the epoch).
- ``Documentation/rest-api.txt``: authenticated endpoints under ``/a/`` with HTTP basic auth
  (401 otherwise); every JSON answer starts with the ``)]}'`` line; errors are plain text;
  400 for malformed input (a body that is not JSON, a request that is not
  ``application/json``), 404 for what does not exist, 409 when the state of the change does
  not allow the operation.
- ``Documentation/rest-api-changes.txt``: Query Changes (``GET /a/changes/?q=...&o=...``, options
  ``CURRENT_REVISION``, ``ALL_REVISIONS``, ``LABELS``, ``DETAILED_LABELS``,
  ``DETAILED_ACCOUNTS``, ``MESSAGES``; ChangeInfo with ``_number``, ``current_revision``,
  ``revisions`` of RevisionInfo ``_number``, ``ref``, ``created``, ``uploader``; ``labels`` of
  LabelInfo whose ``all`` lists ApprovalInfo), Get Change, List Change Messages
  (ChangeMessageInfo ``id``, ``author``, ``date``, ``message``, ``tag``,
  ``_revision_number``), and Set Review (``POST /a/changes/{change-id}/revisions/
  {revision-id}/review`` with a ReviewInput ``message``, ``tag``, ``labels``; a ReviewResult
  with the ``labels`` applied). A change id is ``project~number``, ``project~branch~Change-Id``
  or the number; a revision id the commit sha, the patch set number or ``current``. Here a
  closed change (MERGED, ABANDONED) answers 409 and a label that is not configured, or a value
  outside its range (Verified: -1..+1), 400.
- ``Documentation/concept-refs-for-namespace.txt``: every patch set is the ref
  ``refs/changes/XX/YYYY/ZZ`` (XX: the last two digits of the change number, YYYY: the change
  number, ZZ: the patch set number) in the project's real git repository, fetched from there.

SSH is asyncssh's server side on 127.0.0.1 with keys made in a temporary directory (the client
key, and a known_hosts file naming the server's key); REST is a Starlette app served by uvicorn
(:class:`fakegithub.ServerThread`).

    with GerritDouble(tmp_path / "gerrit", repo, project="xen") as gerrit:
        change = gerrit.upload({"result": "pass\\n"})          # patchset-created is streamed
        gerrit.comment(change, "maintainer", "recheck")       # comment-added
        gerrit.cut(refuse=True)                               # streams dropped, logins refused
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import asyncssh
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from fakegithub import ServerThread
from gitrepos import Files, GitRepo

XSSI = ")]}'\n"
LABELS = {"Verified": (-1, 1), "Code-Review": (-2, 2)}
OPTIONS = {
    "CURRENT_REVISION",
    "ALL_REVISIONS",
    "LABELS",
    "DETAILED_LABELS",
    "DETAILED_ACCOUNTS",
    "MESSAGES",
}
CLOSED = ("MERGED", "ABANDONED")


def account(username: str) -> dict[str, Any]:
    """An account attribute (json.txt) / AccountInfo with DETAILED_ACCOUNTS."""
    return {"name": username.title(), "email": f"{username}@example.org", "username": username}


def gerrit_time(seconds: float) -> str:
    """A REST timestamp (rest-api.txt#timestamp): UTC, ``yyyy-mm-dd hh:mm:ss.fffffffff``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + "000"


@dataclass
class PatchSet:
    number: int
    revision: str
    parent: str
    ref: str
    uploader: str
    created: float


@dataclass
class Message:
    id: str
    author: str
    date: float
    message: str
    tag: str | None
    revision_number: int


@dataclass
class Change:
    number: int
    project: str
    branch: str
    change_id: str
    subject: str
    owner: str
    created: float
    status: str = "NEW"
    patch_sets: list[PatchSet] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    votes: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """revision → label → username → value."""

    @property
    def current(self) -> PatchSet:
        return self.patch_sets[-1]


class GerritDouble:
    """A Gerrit server's SSH event stream, REST API and change refs (see the module docstring).

    ``user``/``password`` is the account the connector logs in with (SSH and HTTP); the
    account names of other people and other CI systems are free text."""

    def __init__(
        self,
        root: Path,
        repo: GitRepo,
        *,
        project: str = "xen",
        branch: str = "master",
        user: str = "labgate-ci",
        password: str = "http-password-of-labgate-ci",
        first_change: int = 1234,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.repo, self.project, self.branch = root, repo, project, branch
        self.user, self.password = user, password
        self.changes: dict[int, Change] = {}
        self._next = first_change
        self._lock = threading.RLock()
        self._seen = threading.Condition(self._lock)
        self.accepting = True
        self.streams_opened = 0
        self.logins_refused = 0
        self.requests: list[tuple[str, str, int]] = []
        self._streams: set[asyncssh.SSHServerProcess[str]] = set()
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.identity_file = root / "id_ed25519"
        self._client_key.write_private_key(str(self.identity_file))
        self.identity_file.chmod(0o600)
        self.known_hosts_file = root / "known_hosts"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._ssh: asyncssh.SSHAcceptor | None = None
        self.ssh_port = 0
        self._rest = ServerThread(self.app())
        self.url = self._rest.url

    # --- lifetime ------------------------------------------------------------------------

    def __enter__(self) -> GerritDouble:
        self._thread.start()
        self._ssh = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(30)
        self.ssh_port = self._ssh.sockets[0].getsockname()[1]
        public = self._host_key.export_public_key().decode().strip()
        self.known_hosts_file.write_text(f"[127.0.0.1]:{self.ssh_port} {public}\n")
        self._rest.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._rest.__exit__(kind, value, tb)
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    @property
    def ssh(self) -> str:
        """``user@host:port`` as lab.toml's ``ssh`` key takes it."""
        return f"{self.user}@127.0.0.1:{self.ssh_port}"

    async def _listen(self) -> asyncssh.SSHAcceptor:
        return await asyncssh.create_server(
            lambda: _SshServer(self),
            "127.0.0.1",
            0,
            server_host_keys=[self._host_key],
            process_factory=self._session,
            encoding="utf-8",
        )

    async def _close(self) -> None:
        for conn in list(self._connections):
            conn.abort()
        if self._ssh is not None:
            self._ssh.close()
            await self._ssh.wait_closed()

    # --- SSH: gerrit stream-events -------------------------------------------------------

    def _login(self, username: str, key: asyncssh.SSHKey) -> bool:
        with self._lock:
            ok = (
                self.accepting
                and username == self.user
                and key.public_data == self._client_key.public_data
            )
            if not ok:
                self.logins_refused += 1
                self._seen.notify_all()
            return ok

    async def _session(self, process: asyncssh.SSHServerProcess[str]) -> None:
        if process.command != "gerrit stream-events":
            process.stderr.write(f"fatal: {process.command!r}: not a Gerrit command\n")
            process.exit(1)
            return
        with self._lock:
            self._streams.add(process)
            self.streams_opened += 1
            self._seen.notify_all()
        try:
            await process.stdin.read()  # the stream lasts until the client goes
        except (asyncssh.Error, OSError):
            pass
        finally:
            with self._lock:
                self._streams.discard(process)

    def stream(self, event: Mapping[str, Any]) -> None:
        """Send one event to every connected ``gerrit stream-events``, one JSON line."""
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            streams = list(self._streams)
        for process in streams:
            self._loop.call_soon_threadsafe(process.stdout.write, line)

    def cut(self, *, refuse: bool = False) -> None:
        """Drop every SSH connection (a network cut, a server restart); with ``refuse``, log
        nobody in until :meth:`accept`."""
        with self._lock:
            self.accepting = not refuse
            connections = list(self._connections)
        done = asyncio.run_coroutine_threadsafe(_abort(connections), self._loop)
        done.result(30)

    def accept(self) -> None:
        with self._lock:
            self.accepting = True

    def wait(self, *, streams: int = 0, refused: int = 0, timeout: float = 60) -> None:
        """Block until at least ``streams`` streams were opened and ``refused`` logins refused
        in all (a condition, not a sleep)."""
        with self._seen:
            ok = self._seen.wait_for(
                lambda: self.streams_opened >= streams and self.logins_refused >= refused,
                timeout,
            )
        assert ok, (
            f"waited {timeout}s for {streams} streams and {refused} refused logins: "
            f"{self.streams_opened} and {self.logins_refused}"
        )

    # --- changes: git refs and events ----------------------------------------------------

    def upload(
        self,
        files: Files,
        *,
        change: int | None = None,
        uploader: str = "ann",
        subject: str | None = None,
        announce: bool = True,
    ) -> int:
        """A new change (or a new patch set of ``change``): a commit on the branch, at
        ``refs/changes/XX/N/P`` in the repository; ``patchset-created`` is streamed (unless not
        ``announce``: an event Gerrit dropped)."""
        with self._lock:
            if change is None:
                change = self._next
                self._next += 1
                digest = hashlib.sha1(f"{self.project} {change}".encode()).hexdigest()
                self.changes[change] = Change(
                    number=change,
                    project=self.project,
                    branch=self.branch,
                    change_id="I" + digest,
                    subject=subject or f"change {change}",
                    owner=uploader,
                    created=time.time(),
                )
            record = self.changes[change]
            number = len(record.patch_sets) + 1
            parent = self.repo.rev(self.branch)
            self.repo.git("checkout", "-q", "--detach", self.branch)
            sha = self.repo.commit(f"{record.subject} (patch set {number})", files=files)
            self.repo.checkout(self.branch)
            ref = f"refs/changes/{change % 100:02d}/{change}/{number}"
            self.repo.git("update-ref", ref, sha)
            record.patch_sets.append(PatchSet(number, sha, parent, ref, uploader, time.time()))
            event = {
                "type": "patchset-created",
                "change": self._change_attribute(record),
                "patchSet": self._patch_set_attribute(record.current),
                "uploader": account(uploader),
                "eventCreatedOn": int(time.time()),
            }
        if announce:
            self.stream(event)
        return change

    def comment(
        self,
        change: int,
        author: str,
        text: str,
        approvals: Mapping[str, int] | None = None,
    ) -> None:
        """A review by ``author`` on the current patch set: its votes are recorded and
        ``comment-added`` is streamed."""
        with self._lock:
            event = self._review(self.changes[change], author, text, approvals or {}, None)
        self.stream(event)

    def close(self, change: int, status: str = "MERGED", *, by: str = "maintainer") -> None:
        """The change is merged (``change-merged`` is streamed, with ``submitter`` and
        ``newRev``) or abandoned (``change-abandoned``, with ``abandoner`` and ``reason``)."""
        with self._lock:
            record = self.changes[change]
            record.status = status
            event: dict[str, Any] = {
                "change": self._change_attribute(record),
                "patchSet": self._patch_set_attribute(record.current),
                "eventCreatedOn": int(time.time()),
            }
            if status == "MERGED":
                event |= {"type": "change-merged", "submitter": account(by),
                          "newRev": record.current.revision}  # fmt: skip
            else:
                event |= {"type": "change-abandoned", "abandoner": account(by), "reason": ""}
        self.stream(event)

    def votes(self, change: int, label: str = "Verified") -> dict[str, int]:
        """The votes on ``label`` of the change's current patch set, by username."""
        with self._lock:
            record = self.changes[change]
            return dict(record.votes.get(record.current.revision, {}).get(label, {}))

    def messages(self, change: int) -> list[Message]:
        with self._lock:
            return list(self.changes[change].messages)

    def _review(
        self,
        record: Change,
        author: str,
        text: str,
        labels: Mapping[str, int],
        tag: str | None,
        patch_set: PatchSet | None = None,
    ) -> dict[str, Any]:
        patch_set = patch_set or record.current
        given = record.votes.setdefault(patch_set.revision, {})
        approvals = []
        for label, value in labels.items():
            old = given.setdefault(label, {}).get(author)
            given[label][author] = value
            approval = {"type": label, "description": label, "value": str(value)}
            if old is not None and old != value:
                approval["oldValue"] = str(old)
            approvals.append(approval)
        votes = " ".join(f"{k}{v:+d}" if v else f"-{k}" for k, v in labels.items())
        message = f"Patch Set {patch_set.number}:{' ' + votes if votes else ''}\n\n{text}"
        record.messages.append(
            Message(
                id=hashlib.sha1(f"{record.number} {len(record.messages)}".encode()).hexdigest()[:8],
                author=author,
                date=time.time(),
                message=message,
                tag=tag,
                revision_number=patch_set.number,
            )
        )
        return {
            "type": "comment-added",
            "change": self._change_attribute(record),
            "patchSet": self._patch_set_attribute(patch_set),
            "author": account(author),
            "approvals": approvals,
            "comment": message,
            "eventCreatedOn": int(time.time()),
        }

    def _change_attribute(self, record: Change) -> dict[str, Any]:
        return {
            "project": record.project,
            "branch": record.branch,
            "id": record.change_id,
            "number": record.number,
            "subject": record.subject,
            "owner": account(record.owner),
            "url": f"{self.url}/c/{record.project}/+/{record.number}",
            "commitMessage": f"{record.subject}\n\nChange-Id: {record.change_id}\n",
            "createdOn": int(record.created),
            "status": record.status,
            "open": record.status not in CLOSED,
        }

    def _patch_set_attribute(self, ps: PatchSet) -> dict[str, Any]:
        return {
            "number": ps.number,
            "revision": ps.revision,
            "parents": [ps.parent],
            "ref": ps.ref,
            "uploader": account(ps.uploader),
            "author": account(ps.uploader),
            "createdOn": int(ps.created),
            "kind": "REWORK",
            "sizeInsertions": 1,
            "sizeDeletions": 0,
        }

    # --- REST ----------------------------------------------------------------------------

    def app(self) -> Starlette:
        change = "/a/changes/{change_id:path}"
        return Starlette(
            routes=[
                Route("/a/changes/", self.query_changes, methods=["GET"]),
                Route(change + "/revisions/{revision}/review", self.set_review, methods=["POST"]),
                Route(change + "/messages", self.list_messages, methods=["GET"]),
                Route(change, self.get_change, methods=["GET"]),
            ]
        )

    def _authorized(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    def _answer(self, request: Request, value: Any = None, status: int = 200) -> Response:
        with self._lock:
            self.requests.append((request.method, request.url.path, status))
        if status >= 300:
            return PlainTextResponse(str(value) + "\n", status_code=status)
        body = XSSI + json.dumps(value, indent=2)
        return Response(
            body,
            media_type="application/json; charset=UTF-8",
            headers={"Content-Disposition": "attachment"},
        )

    def _find(self, change_id: str) -> Change | None:
        """A change by ``project~number``, ``project~branch~Change-Id`` or number."""
        parts = unquote(change_id).split("~")
        with self._lock:
            for record in self.changes.values():
                if parts in (
                    [str(record.number)],
                    [record.project, str(record.number)],
                    [record.project, record.branch, record.change_id],
                ):
                    return record
        return None

    def _refused(self, request: Request) -> Response | None:
        """401 without the account's basic auth, 400 for an ``o=`` option Gerrit lacks."""
        if not self._authorized(request):
            return self._answer(request, "Unauthorized", 401)
        unknown = set(request.query_params.getlist("o")) - OPTIONS
        if unknown:
            return self._answer(
                request, f'"{sorted(unknown)[0]}" is not a valid value for "-o"', 400
            )
        return None

    def _change(self, request: Request) -> Change | Response:
        """The change the path names, or the refusal (see :meth:`_refused`), or 404."""
        if (refused := self._refused(request)) is not None:
            return refused
        record = self._find(request.path_params["change_id"])
        if record is None:
            return self._answer(request, f"Not found: {request.path_params['change_id']}", 404)
        return record

    async def query_changes(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        query = request.query_params.get("q")
        if not query:
            return self._answer(request, "missing query field", 400)
        terms: dict[str, str] = {}
        for term in query.split():
            operator, _, operand = term.partition(":")
            if operator not in ("status", "project", "branch") or not operand:
                return self._answer(request, f"Unsupported operator {term!r}", 400)
            terms[operator] = operand
        options = set(request.query_params.getlist("o"))
        with self._lock:
            found = [
                self._change_info(r, options)
                for r in sorted(
                    self.changes.values(), key=lambda r: r.current.created, reverse=True
                )
                if _matches(r, terms)
            ]
        return self._answer(request, found)

    async def get_change(self, request: Request) -> Response:
        record = self._change(request)
        if isinstance(record, Response):
            return record
        with self._lock:
            info = self._change_info(record, set(request.query_params.getlist("o")))
        return self._answer(request, info)

    async def list_messages(self, request: Request) -> Response:
        record = self._change(request)
        if isinstance(record, Response):
            return record
        with self._lock:
            return self._answer(request, [_message_info(m) for m in record.messages])

    async def set_review(self, request: Request) -> Response:
        record = self._change(request)
        if isinstance(record, Response):
            return record
        revision = request.path_params["revision"]
        with self._lock:
            patch_set = next(
                (
                    ps
                    for ps in record.patch_sets
                    if revision in (ps.revision, str(ps.number))
                    or (revision == "current" and ps is record.current)
                ),
                None,
            )
        if patch_set is None:
            return self._answer(request, f"Not found: {revision}", 404)
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._answer(request, "Expected Content-Type: application/json", 400)
        try:
            body = json.loads(await request.body())
        except ValueError as error:
            return self._answer(request, f"Invalid JSON: {error}", 400)
        if not isinstance(body, dict):
            return self._answer(request, "Expected a ReviewInput object", 400)
        labels = body.get("labels") or {}
        problem = _label_problem(labels)
        if problem:
            return self._answer(request, problem, 400)
        if record.status in CLOSED:
            return self._answer(request, f"change {record.number} is {record.status.lower()}", 409)
        message = body.get("message") or ""
        tag = body.get("tag")
        with self._lock:
            event = self._review(record, self.user, message, labels, tag, patch_set)
        self.stream(event)
        return self._answer(request, {"labels": labels})

    def _change_info(self, record: Change, options: set[str]) -> dict[str, Any]:
        """A ChangeInfo with the fields ``options`` (``o=``) ask for."""
        detailed = "DETAILED_ACCOUNTS" in options

        def info(username: str) -> dict[str, Any]:
            who = {"_account_id": 1000000 + sum(username.encode()), "name": username.title()}
            if detailed:
                who |= {"email": f"{username}@example.org", "username": username}
            return who

        out: dict[str, Any] = {
            "id": f"{record.project}~{record.branch}~{record.change_id}",
            "project": record.project,
            "branch": record.branch,
            "change_id": record.change_id,
            "subject": record.subject,
            "status": record.status,
            "created": gerrit_time(record.created),
            "updated": gerrit_time(record.current.created),
            "_number": record.number,
            "owner": info(record.owner),
        }
        shown = []
        if "ALL_REVISIONS" in options:
            shown = record.patch_sets
        elif "CURRENT_REVISION" in options:
            shown = [record.current]
        if shown:
            out["current_revision"] = record.current.revision
            out["revisions"] = {
                ps.revision: {
                    "kind": "REWORK",
                    "_number": ps.number,
                    "created": gerrit_time(ps.created),
                    "uploader": info(ps.uploader),
                    "ref": ps.ref,
                    "fetch": {"file": {"url": str(self.repo.path), "ref": ps.ref}},
                }
                for ps in shown
            }
        if options & {"LABELS", "DETAILED_LABELS"}:
            given = record.votes.get(record.current.revision, {})
            out["labels"] = {}
            for label, (low, high) in LABELS.items():
                by = given.get(label, {})
                entry: dict[str, Any] = {}
                if "DETAILED_LABELS" in options:
                    entry["all"] = [info(who) | {"value": v} for who, v in by.items()]
                    entry["values"] = {
                        f"{v:+d}" if v else " 0": label for v in range(low, high + 1)
                    }
                if any(v == low for v in by.values()):
                    entry["rejected"] = info(next(w for w, v in by.items() if v == low))
                elif any(v == high for v in by.values()):
                    entry["approved"] = info(next(w for w, v in by.items() if v == high))
                out["labels"][label] = entry
        if "MESSAGES" in options:
            out["messages"] = [_message_info(m) for m in record.messages]
        return out


class _SshServer(asyncssh.SSHServer):
    def __init__(self, double: GerritDouble) -> None:
        self.double = double
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.double._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.double._connections.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return self.double._login(username, key)


async def _abort(connections: list[asyncssh.SSHServerConnection]) -> None:
    for conn in connections:
        conn.abort()


def _matches(record: Change, terms: Mapping[str, str]) -> bool:
    status = terms.get("status")
    if status == "open" and record.status in CLOSED:
        return False
    if status in ("merged", "abandoned") and record.status != status.upper():
        return False
    if "project" in terms and record.project != terms["project"]:
        return False
    return "branch" not in terms or record.branch == terms["branch"]


def _label_problem(labels: Any) -> str | None:
    if not isinstance(labels, dict):
        return "labels must be an object of label names to values"
    for label, value in labels.items():
        if label not in LABELS:
            return f'label "{label}" is not a configured label'
        low, high = LABELS[label]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return f'label "{label}": {value} is not a valid value (from {low} to +{high})'
    return None


def _message_info(m: Message) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": m.id,
        "author": {"_account_id": 1000000 + sum(m.author.encode()), "name": m.author.title()},
        "date": gerrit_time(m.date),
        "message": m.message,
        "_revision_number": m.revision_number,
    }
    if m.tag:
        info["tag"] = m.tag
    return info
