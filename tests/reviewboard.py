"""A real Review Board server for tests, and a person driving it through its Web API.

Review Board (``reviewboard`` on PyPI, Django) is installed once per machine in a virtual
environment of its own, ``~/.cache/labgate-tests/reviewboard-<VERSION>`` (or under
``$LABGATE_TEST_CACHE``), made with the tests' Python (with psycopg2 and gunicorn, for a site on
PostgreSQL); a session makes one site in a temp dir (``rb-site install``, SQLite) and serves it
with ``rb-site manage SITE runserver`` on a free loopback port:

    server = session_server(request)           # started once per test session
    person = server.person()                   # the site's admin, as a browser user would be
    repo_id = person.add_repository("xen-1", git_repo.path)
    rr = person.post_review_request("xen-1", diff, base_commit, summary="fix it")
    person.post_diff(rr, diff2, base_commit)   # a second diff revision, published
    person.review(rr, "recheck")
    person.status_updates(rr)

``server.api_token(user, server.add_user(user))`` is a real API token of a user the admin made
(what labgate's ``token_env`` names). ``reviewboard_lab(path, server, repository)`` makes a lab
whose tree is a Review Board repository entry and whose ``[[review]]`` polls it;
``ours(person, rr)`` is labgate's status updates on a request.

``start_reviewboard(postgres=...)`` makes a site as a real one runs (bench/review.py): its
database on a PostgreSQL server (tests/pg.py) and served by gunicorn, worker processes with
threads, as the ``conf/run-gunicorn.sh`` rb-site writes does.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gitrepos import Files, GitRepo
from labs import job, local_host, step, toml_str, write_lab
from reviewlab import CHECK

VERSION = "8.1"
REQUIREMENTS = (f"reviewboard[postgres]=={VERSION}", "gunicorn==27.0.1")
"""What the virtual environment holds; one made with fewer is completed."""
TOKEN_ENV = "LABGATE_TEST_RB_TOKEN"
WEB_URL = "https://lab.example.org"
ADMIN = "admin"
START_ATTEMPTS = 5
READY_S = 120.0


class ReviewBoardUnavailable(RuntimeError):
    """Review Board cannot be installed or started here; the message says why."""


def cache_dir() -> Path:
    return Path(os.environ.get("LABGATE_TEST_CACHE") or Path.home() / ".cache" / "labgate-tests")


def reviewboard_venv() -> Path:
    """The virtual environment with Review Board, made once per machine (a lock keeps two test
    sessions from making it together; a half-made one is made again)."""
    venv = cache_dir() / f"reviewboard-{VERSION}"
    done = venv / ".installed"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if done.exists() and done.read_text() == wanted:
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"reviewboard-{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists() and done.read_text() == wanted:
            return venv
        commands = [[str(venv / "bin" / "pip"), "install", "--quiet", *REQUIREMENTS]]
        if not done.exists():  # none, or half made: made anew; an older one is completed
            shutil.rmtree(venv, ignore_errors=True)
            commands.insert(0, [sys.executable, "-m", "venv", str(venv)])
        for cmd in commands:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise ReviewBoardUnavailable(
                    f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr[-2000:]}"
                )
        done.write_text(wanted)
    return venv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Person:
    """Someone using Review Board through its Web API (HTTP basic auth, as ``rbt`` does)."""

    url: str
    user: str
    password: str
    log: Path | None = None
    """The server's log, whose end a failed call shows."""
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.url,
            auth=(self.user, self.password),
            headers={"Accept": "application/json"},
            timeout=60.0,
        )

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.client.request(method, path, **kwargs)
        if response.status_code >= 300:
            said = self.log.read_text()[-3000:] if self.log and response.status_code >= 500 else ""
            raise AssertionError(
                f"{method} {path}: {response.status_code} {response.text[:500]}\n{said}"
            )
        payload = response.json()
        assert isinstance(payload, dict)
        return payload

    def add_repository(self, name: str, path: Path) -> int:
        """A Git repository entry for a local repository (its ``.git`` dir)."""
        found = self.call(
            "POST", "/api/repositories/", data={"name": name, "path": str(path / ".git"),
                                                "tool": "Git"},
        )  # fmt: skip
        return int(found["repository"]["id"])

    def post_review_request(
        self,
        repository: str,
        diff: str,
        base_commit: str | None,
        *,
        summary: str,
        branch: str = "",
    ) -> int:
        """A review request with one diff, published; its id."""
        made = self.call("POST", "/api/review-requests/", data={"repository": repository})
        rr = int(made["review_request"]["id"])
        self.upload_diff(rr, diff, base_commit)
        self.publish(rr, summary=summary, description=f"{summary}.", target_people=ADMIN,
                     branch=branch)  # fmt: skip
        return rr

    def upload_diff(self, rr: int, diff: str, base_commit: str | None) -> None:
        data = {"base_commit_id": base_commit} if base_commit else {}
        self.call(
            "POST",
            f"/api/review-requests/{rr}/diffs/",
            files={"path": ("change.diff", diff.encode())},
            data=data,
        )

    def publish(self, rr: int, **fields: str) -> None:
        self.call("PUT", f"/api/review-requests/{rr}/draft/", data={**fields, "public": "1"})

    def post_diff(self, rr: int, diff: str, base_commit: str | None) -> None:
        """A new diff revision of the request, published."""
        self.upload_diff(rr, diff, base_commit)
        self.publish(rr)

    def review(self, rr: int, text: str) -> int:
        made = self.call(
            "POST", f"/api/review-requests/{rr}/reviews/", data={"body_top": text, "public": "1"}
        )
        return int(made["review"]["id"])

    def status_updates(self, rr: int) -> list[dict[str, Any]]:
        found = self.call("GET", f"/api/review-requests/{rr}/status-updates/")
        return list(found["status_updates"])

    def reviews(self, rr: int) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/api/review-requests/{rr}/reviews/")["reviews"])

    def close(self, rr: int, status: str) -> None:
        """Close the request: ``submitted`` or ``discarded``."""
        self.call("PUT", f"/api/review-requests/{rr}/", data={"status": status})

    def add_webhook(self, url: str, secret: str, repository: str) -> int:
        """A WebHook (the admin's) of the events labgate takes, for one repository entry,
        JSON and signed with ``secret``; its id."""
        found = self.call("GET", "/api/repositories/", params={"name": repository})
        made = self.call(
            "POST",
            "/api/webhooks/",
            data={
                "enabled": "1",
                "url": url,
                "encoding": "application/json",
                "events": "review_request_published,review_published,review_request_closed",
                "apply_to": "custom",
                "repositories": str(found["repositories"][0]["id"]),
                "secret": secret,
            },
        )
        return int(made["webhook"]["id"])


@dataclass
class ReviewBoard:
    """A running Review Board site."""

    url: str
    site: Path
    process: subprocess.Popen[bytes]
    admin_password: str
    log: Path

    def person(self, user: str = ADMIN, password: str | None = None) -> Person:
        return Person(self.url, user, password or self.admin_password, self.log)

    def add_user(self, user: str) -> str:
        """A new user (made by the admin); its password."""
        password = secrets.token_hex(12)
        self.person().call(
            "POST",
            "/api/users/",
            data={"username": user, "password": password, "email": f"{user}@example.org"},
        )
        return password

    def api_token(self, user: str, password: str) -> str:
        made = self.person(user, password).call(
            "POST", f"/api/users/{user}/api-tokens/", data={"note": "labgate", "policy": "{}"}
        )
        return str(made["api_token"]["token"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.site, ignore_errors=True)


@dataclass(frozen=True)
class Postgres:
    """A site's database on a PostgreSQL server: its database ``name`` (made, empty) on
    ``host``:``port``, reached as ``user`` without a password (tests/pg.py's trust)."""

    host: str
    port: int
    user: str
    name: str


GUNICORN_WORKERS = 2
GUNICORN_THREADS = 8


def start_reviewboard(postgres: Postgres | None = None) -> ReviewBoard:
    """Install a site in a new temp dir and serve it; ReviewBoardUnavailable when it cannot.

    On SQLite (no ``postgres``) one request at a time (``runserver --nothreading``): the site's
    SQLite fails a request that writes while another thread's transaction holds the database
    ("database is locked"), and Django 4.2 cannot begin its transactions IMMEDIATE. On
    PostgreSQL, gunicorn serves it with GUNICORN_WORKERS processes of GUNICORN_THREADS
    threads."""
    venv = reviewboard_venv()
    site = Path(tempfile.mkdtemp(prefix="labgate-reviewboard-"))
    password = secrets.token_hex(12)
    if postgres is None:
        database = ["--db-type=sqlite3", f"--db-name={site / 'site' / 'data' / 'rb.db'}"]
    else:
        database = [
            "--db-type=postgresql", f"--db-name={postgres.name}",
            f"--db-host={postgres.host}:{postgres.port}", f"--db-user={postgres.user}",
        ]  # fmt: skip
    install = [
        str(venv / "bin" / "rb-site"), "install", "--noinput", "--domain-name=127.0.0.1",
        "--site-root=/", *database,
        "--cache-type=file", f"--cache-info={site / 'site' / 'cache'}", "--web-server-type=apache",
        f"--admin-user={ADMIN}", f"--admin-password={password}",
        "--admin-email=admin@example.org", "--opt-out-support-data",
        "--allowed-host=127.0.0.1", str(site / "site"),
    ]  # fmt: skip
    proc = subprocess.run(install, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(site, ignore_errors=True)
        raise ReviewBoardUnavailable(f"rb-site install failed: {proc.stdout[-2000:]}{proc.stderr}")
    log = site / "server.log"
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        if postgres is None:
            command = [
                str(venv / "bin" / "rb-site"), "manage", str(site / "site"), "runserver",
                f"127.0.0.1:{port}", "--noreload", "--nothreading",
            ]  # fmt: skip
        else:
            command = [
                str(venv / "bin" / "gunicorn"), f"--bind=127.0.0.1:{port}",
                f"--workers={GUNICORN_WORKERS}", f"--threads={GUNICORN_THREADS}",
                "--timeout=120", f"--env=REVIEWBOARD_SITEDIR={site / 'site'}",
                "reviewboard.wsgi",
            ]  # fmt: skip
        with open(log, "wb") as out:
            server = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "VIRTUAL_ENV": str(venv)},  # as its bin/activate sets
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        if _answers(url, server):
            return ReviewBoard(url, site, server, password, log)
        server.kill()
        server.wait()
    why = log.read_text()[-6000:]
    shutil.rmtree(site, ignore_errors=True)
    raise ReviewBoardUnavailable(f"the server did not answer: {why}")


def _answers(url: str, server: subprocess.Popen[bytes]) -> bool:
    """Whether the server answers ``/api/`` before it exits (a taken port) or READY_S pass."""
    deadline = time.monotonic() + READY_S
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/", timeout=5).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.1)
    return False


_server: ReviewBoard | None = None


def session_server(request: pytest.FixtureRequest) -> ReviewBoard:
    """The session's Review Board server, started on first use and stopped when the session
    ends. Without it the test fails under CI and is skipped elsewhere."""
    global _server
    if _server is None:
        try:
            _server = start_reviewboard()
        except ReviewBoardUnavailable as error:
            if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
                pytest.fail(f"Review Board is required under CI: {error}", pytrace=False)
            pytest.skip(f"no Review Board: {error}")
        request.config.add_cleanup(_stop)
    return _server


def _stop() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None


def diff_of(repo: GitRepo, files: Files) -> str:
    """The git diff that would change ``files`` at the repository's HEAD (HEAD is not moved)."""
    repo.write(files)
    diff = repo.git("diff", "--cached")
    repo.git("reset", "-q", "--hard")
    return diff + "\n"


def reviewboard_lab(
    path: Path,
    server: ReviewBoard,
    repository: str,
    *,
    retries: int = 2,
    lab_keys: str = "",
    review_keys: str = "poll_interval = 0.2",
    slots: int = 2,
) -> tuple[Path, GitRepo]:
    """A lab whose tree `xen` has check.sh (passes, fails or breaks by its `result` file) and
    a Review Board [[review]] `rb` of the repository entry `repository` (added here), with
    `review_keys` (TOML lines) besides its usual keys."""
    lab = write_lab(
        path,
        trees={"xen": {"check.sh": CHECK, "result": "pass\n", "README": "xen\n"}},
        jobs=job("test", step("check", "sh xen/check.sh")) + job("doc", step("html", "true")),
        hosts=local_host(slots=slots),
        lab_keys=lab_keys,
    )
    with lab.toml.open("a") as toml:
        toml.write(
            f"""
[[review]]
name = "rb"
driver = "reviewboard"
server = {toml_str(server.url)}
project = {toml_str(repository)}
branch = "main"
web_url = {toml_str(WEB_URL)}
token_env = "{TOKEN_ENV}"
retries = {retries}
{review_keys}

[[disable]]
job = "doc"
reason = "no sphinx on the hosts"
"""
        )
    server.person().add_repository(repository, lab.trees["xen"].path)
    return lab.path, lab.trees["xen"]


def ours(person: Person, rr: int) -> list[dict[str, Any]]:
    return [u for u in person.status_updates(rr) if u["service_id"] == "labgate"]
