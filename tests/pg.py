"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, start, stop.

The cluster listens on 127.0.0.1 on a free port and on a unix socket in its own directory, trusts
every local connection and runs with fsync off: it holds nothing worth keeping. PostgreSQL refuses
to run as root, so under root the cluster belongs to the `postgres` system user that Debian's
package creates.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
# A port found free can be taken by someone else before the server binds it; try a few.
START_ATTEMPTS = 5


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries (or no user to run them as) on this machine."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_bindir() -> Path:
    """The directory of initdb and pg_ctl: Debian's newest version, else the one on PATH."""
    candidates = [d for d in DEBIAN_ROOT.glob("*/bin") if (d / "initdb").is_file()]
    if candidates:
        return max(candidates, key=_version_key)
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).resolve().parent
    raise PostgresUnavailable(
        f"no PostgreSQL server binaries: neither {DEBIAN_ROOT}/<version>/bin/initdb nor initdb "
        "on PATH (on Debian: apt-get install postgresql)"
    )


def _run_as_user() -> str | None:
    """The user to run the server as: `postgres` under root, the current user otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as"
        ) from None
    return SERVER_USER


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Cluster:
    """A running throwaway cluster."""

    bindir: Path
    root: Path
    port: int
    user: str | None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """An admin SQLAlchemy URL for the `postgres` superuser and database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Stop the server at once (nothing in it is worth a clean shutdown) and delete it."""
        try:
            _run(
                self.user,
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop"],
                cwd=self.root,
            )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _run(user: str | None, argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = ["runuser", "-u", user, "--", *argv] if user else list(argv)
    result = subprocess.run(
        command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def start_cluster() -> Cluster:
    """initdb a cluster in a fresh temp dir and start it; the caller must `stop()` it."""
    bindir = find_bindir()
    user = _run_as_user()
    # Not under pytest's tmp_path: its parents are 0700 root and the server user must reach it.
    root = Path(tempfile.mkdtemp(prefix="labgate-pg-"))
    try:
        if user:
            shutil.chown(root, user=user, group=pwd.getpwnam(user).pw_gid)
        initdb = [str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres"]
        initdb += ["--auth=trust", "--no-sync", "--no-locale", "--encoding=UTF8"]
        _run(user, initdb, cwd=root)
        return _start(bindir, root, user)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _start(bindir: Path, root: Path, user: str | None) -> Cluster:
    failures: list[str] = []
    for _ in range(START_ATTEMPTS):
        cluster = Cluster(bindir=bindir, root=root, port=free_port(), user=user)
        options = (
            f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(cluster.datadir), "-l", str(cluster.logfile)]
        try:
            # -w: pg_ctl itself polls until the server accepts connections (or gives up).
            _run(user, [*pg_ctl, "-w", "-t", "60", "-o", options, "start"], cwd=root)
        except RuntimeError as error:
            log = cluster.logfile.read_text(errors="replace") if cluster.logfile.exists() else ""
            failures.append(f"{error}\n{log}")
            continue
        return cluster
    raise RuntimeError(
        f"PostgreSQL did not start in {START_ATTEMPTS} attempts:\n" + "\n".join(failures)
    )


@contextmanager
def scratch_database(admin_url: str, prefix: str = "labgate_test") -> Iterator[str]:
    """The URL of a fresh, empty database on the server of ``admin_url``, dropped afterwards
    (with any connection still open to it)."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin.url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
