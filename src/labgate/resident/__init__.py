"""The resident controller: a labgate process that has already imported what commands need, and
forks one child per command, as Bazel's client hands its commands to a resident server and Rails'
Spring forks them from a preloaded process.

Importing labgate's store and configuration (SQLAlchemy, pydantic) costs most of a second on a
busy machine, every command. The ``labgate`` script is this module's :func:`main`: it imports
only the standard library, and when a resident controller answers on this user's socket it
passes its argv, working directory, environment, umask and its standard input, output and error
(the file descriptors themselves, ``SCM_RIGHTS``) to it. The resident forks; the child sets that
all up and runs the command exactly as ``labgate.cli`` would in a process of its own (it sees
the caller's terminal, reads the caller's stdin, exits with the command's status). The client
forwards the signals it gets (Ctrl-C) to the child, and exits with the child's status.

When it runs:
- on a terminal (stdin and stdout are ttys), a command starts the resident controller in the
  background if none answers, and runs itself as before; the next command is the resident's;
- in scripts, CI and tests (no terminal) it is never started by itself: ``labgate resident
  start`` starts one, and ``LABGATE_RESIDENT=1`` makes every command start it like a terminal;
- ``LABGATE_RESIDENT=0`` turns it off: every command runs in a process of its own;
- the long-running services (``serve``, ``gate``, ``host worker``) and ``resident`` itself
  always run in their own process, so that a service manager sees the process it started.

The resident answers "stale" and exits when labgate's code changed since it started (any of the
package's files, or another Python), and exits by itself after ``IDLE_S`` without a command.
Its socket is in a directory only this user can enter (``$XDG_RUNTIME_DIR/labgate`` or
``/tmp/labgate-UID``, or ``LABGATE_RESIDENT_DIR``), and it serves only its own user (the
socket's peer credentials).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any, TextIO

IDLE_S = 3 * 3600.0  # as Bazel's server: a resident unused this long exits
SERVICES = (("serve",), ("gate",), ("host", "worker"), ("resident",))
PRELOAD = (
    "labgate.cli",
    "labgate.config",
    "labgate.store",
    "labgate.flight",
    "labgate.flights",
    "labgate.gate",
    "labgate.report",
    "labgate.verdict",
    "labgate.bisect.cli",
    "labgate.hosts.cli",
    "labgate.review.cli",
    "labgate.perf.cli",
    "rich.console",
    "rich.live",
    "rich.table",
    "sqlalchemy.dialects.sqlite",
)
MAX_REQUEST = 1 << 20
READY_FD = "LABGATE_RESIDENT_READY_FD"


def runtime_dir() -> Path:
    """This user's directory of the resident's socket and log."""
    chosen = os.environ.get("LABGATE_RESIDENT_DIR")
    if chosen:
        return Path(chosen).absolute()
    run = os.environ.get("XDG_RUNTIME_DIR")
    return Path(run) / "labgate" if run else Path(f"/tmp/labgate-{os.getuid()}")


def private_dir(path: Path) -> Path:
    """``path``, made if missing, refused unless it is a directory of this user's that nobody
    else may enter (another user could otherwise put a socket there that runs our commands)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path} must be a directory of uid {os.getuid()} with mode 0700")
    return path


def socket_path() -> Path:
    return runtime_dir() / "resident.sock"


def _is_service(argv: list[str]) -> bool:
    words = [a for a in argv if not a.startswith("-")]
    return any(tuple(words[: len(s)]) == s for s in SERVICES)


def _wanted() -> str:
    """ "off", "auto" (start one if none answers) or "use" (only one that answers)."""
    setting = os.environ.get("LABGATE_RESIDENT", "")
    if setting == "0":
        return "off"
    if setting == "1":
        return "auto"
    try:
        terminal = os.isatty(0) and os.isatty(1)
    except OSError:
        terminal = False
    return "auto" if terminal else "use"


# --- the client: the ``labgate`` script ---------------------------------------------------------


def main() -> None:
    """The ``labgate`` command: through the resident controller when one answers, else here."""
    argv = sys.argv[1:]
    wanted = _wanted()
    if wanted != "off" and not _is_service(argv):
        status = _through_resident(argv)
        if status is not None:
            sys.exit(status)
        if wanted == "auto":
            start_detached()
    from labgate.cli import main as cli_main

    cli_main()


def _connect() -> socket.socket | None:
    """A connection to this user's resident, or None: no socket (nothing made on disk for
    that), or one in a directory another user could have put it in."""
    path = socket_path()
    try:
        info = path.parent.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def _through_resident(argv: list[str]) -> int | None:
    """The command's exit status, run by the resident controller; None when none answers or it
    is stale (the caller runs the command itself)."""
    conn = _connect()
    if conn is None:
        return None
    with conn:
        request = {
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": _umask(),
            "python": sys.executable,
            "encoding": [sys.stdout.encoding, sys.stdout.errors, sys.stdin.encoding],
        }
        try:
            socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        except OSError:
            return None
        replies = conn.makefile("rb")
        first = _reply(replies)
        if first is None or "pid" not in first:
            return None  # stale, or it went away: run here
        child = int(first["pid"])

        def forward(signum: int, _frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(signum, forward)
        last = _reply(replies)
    if last is None or "exit" not in last:
        print("labgate: the resident controller went away during the command", file=sys.stderr)
        return 1
    return int(last["exit"])


def _reply(replies: Any) -> dict[str, Any] | None:
    """The resident's next message, or None when it closed the connection (a read interrupted
    by a forwarded signal is retried by Python itself, PEP 475)."""
    try:
        line = replies.readline()
    except OSError:
        return None
    reply: dict[str, Any] | None = json.loads(line) if line else None
    return reply


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def start_detached(ready: int | None = None) -> None:
    """Start the resident controller in the background (its own session, its output to its log);
    a second one started at the same time finds the socket taken and exits. ``ready``: a pipe's
    write end, on which it writes one line once it answers (or has found one answering)."""
    import subprocess

    try:
        folder = private_dir(runtime_dir())
        log = open(folder / "resident.log", "ab")  # noqa: SIM115 - handed to the child
    except OSError:
        return
    env = dict(os.environ)
    if ready is not None:
        env[READY_FD] = str(ready)
    with log:
        subprocess.Popen(
            # -P: not the caller's directory first on sys.path (a json.py there would be
            # imported instead of the standard library's, for every command)
            [sys.executable, "-P", "-m", "labgate.resident"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            pass_fds=() if ready is None else (ready,),
            env=env,
        )


# --- the resident controller --------------------------------------------------------------------


def _log(event: str, **fields: object) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps({"time": stamp, "event": event, **fields}), flush=True)


def fingerprint() -> tuple[str, int]:
    """What makes forked commands the code a new process would run: the interpreter, every
    file of labgate's own as it is now (a change, an upgrade, a reinstall), and the directories
    packages are installed in (installing or removing one changes its directory)."""
    files = [
        (folder, "", os.stat(folder).st_mtime_ns, 0) for folder in sys.path if os.path.isdir(folder)
    ]
    for folder, _dirs, names in os.walk(Path(__file__).parent.parent):
        for name in names:
            if name.endswith((".py", ".toml", ".html", ".css", ".js", ".typed")):
                info = os.stat(os.path.join(folder, name))
                files.append((folder, name, info.st_mtime_ns, info.st_size))
    return sys.executable, hash(tuple(sorted(files)))


class Resident:
    """The server: one listening socket, one forked child per command."""

    def __init__(self, path: Path, idle_s: float = IDLE_S) -> None:
        self.path = path
        self.idle_s = idle_s
        self.children: dict[int, tuple[socket.socket, int]] = {}  # pidfd -> (conn, pid)
        self.served = 0

    def preload(self) -> None:
        import gc
        import importlib

        for module in PRELOAD:
            importlib.import_module(module)
        gc.collect()
        gc.freeze()  # what every child shares stays out of their collections (and unwritten)
        self.code = fingerprint()

    def bind(self) -> socket.socket | None:
        """The listening socket, or None when another resident already answers on it."""
        private_dir(self.path.parent)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
            return None  # one answers already
        except OSError:
            self.path.unlink(missing_ok=True)  # a dead one's socket
        finally:
            probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
        except OSError:
            listener.close()
            return None  # another starting at the same instant won
        listener.listen(64)
        return listener

    def serve(self) -> None:
        import selectors

        listener = self.bind()
        if listener is None:
            _log("already-running", socket=str(self.path))
            _say_ready()
            return
        identity = self.path.stat().st_ino
        _log("started", pid=os.getpid(), socket=str(self.path))
        _say_ready()
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, "accept")
        last = time.monotonic()
        try:
            while True:
                timeout = None if self.children else max(0.0, last + self.idle_s - time.monotonic())
                events = selector.select(timeout)
                if not events and not self.children:
                    _log("idle", served=self.served)
                    return
                for key, _mask in events:
                    if key.data == "accept":
                        conn, _ = listener.accept()
                        last = time.monotonic()
                        if self.accept(conn, selector, listener) == "stale":
                            return
                    else:
                        self.reap(key.fd, selector)
                        last = time.monotonic()
        finally:
            listener.close()
            try:
                if self.path.stat().st_ino == identity:  # not a successor's socket
                    self.path.unlink()
            except FileNotFoundError:
                pass
            _log("stopped", served=self.served)

    def accept(self, conn: socket.socket, selector: Any, listener: socket.socket) -> str:
        import selectors

        fds: list[int] = []
        try:
            uid = _peer_uid(conn)
            message, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST, 3)
            while not message.endswith(b"\n") and len(message) < MAX_REQUEST:
                more = conn.recv(MAX_REQUEST)
                if not more:
                    break
                message += more
            request = json.loads(message)
        except (OSError, ValueError) as error:
            _log("bad-request", error=str(error))
            _hang_up(conn, fds)
            return "ok"
        if uid != os.getuid():
            _log("refused", uid=uid)
            _hang_up(conn, fds)
            return "ok"
        if request.get("stop"):
            _send(conn, {"stopping": True})
            _hang_up(conn, fds)
            _log("stop-requested")
            raise SystemExit(0)
        if request.get("status"):
            _send(
                conn,
                {"resident": os.getpid(), "served": self.served, "running": len(self.children)},
            )
            _hang_up(conn, fds)
            return "ok"
        if len(fds) != 3:
            _log("refused", fds=len(fds))
            _hang_up(conn, fds)
            return "ok"
        if request.get("python") != sys.executable or fingerprint() != self.code:
            _send(conn, {"stale": True})
            _hang_up(conn, fds)
            _log("stale")
            return "stale"
        pid = os.fork()
        if pid == 0:  # the command's process
            selector.close()
            listener.close()
            for fd_key in list(self.children):
                os.close(fd_key)
            os._exit(_run_command(request, fds, conn))
        for fd in fds:
            os.close(fd)
        self.served += 1
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (conn, pid)
        selector.register(pidfd, selectors.EVENT_READ, "child")
        _log("command", pid=pid, argv=request["argv"][:4])
        _send(conn, {"pid": pid})
        return "ok"

    def reap(self, pidfd: int, selector: Any) -> None:
        conn, pid = self.children.pop(pidfd)
        selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        _send(conn, {"exit": code if code >= 0 else 128 - code})
        conn.close()


def _hang_up(conn: socket.socket, fds: list[int]) -> None:
    """End a connection the resident runs no command for: the caller's descriptors it was passed
    are closed with it."""
    for fd in fds:
        os.close(fd)
    conn.close()


def _say_ready() -> None:
    """Tell whoever started this resident (``labgate resident start``) that it answers now."""
    fd = os.environ.pop(READY_FD, None)
    if fd is not None:
        with open(int(fd), "w") as ready:
            ready.write(f"{os.getpid()}\n")


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the client went away: nobody to tell
        conn.sendall(json.dumps(message).encode() + b"\n")


def _peer_uid(conn: socket.socket) -> int:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _run_command(request: dict[str, Any], fds: list[int], conn: socket.socket) -> int:
    """In the forked child: become the caller's process (its stdio, directory, environment,
    umask, signals) and run the command; returns its exit status."""
    import io

    conn.close()
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(int(request["umask"]))
    out_encoding, out_errors, in_encoding = request["encoding"]
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding=in_encoding)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream: TextIO = io.TextIOWrapper(
            io.FileIO(fd, "w", closefd=False),
            encoding=out_encoding,
            errors=out_errors if fd == 1 else "backslashreplace",
            line_buffering=os.isatty(fd) or fd == 2,
        )
        setattr(sys, name, stream)
    sys.argv = ["labgate", *request["argv"]]
    status = 0
    try:
        from labgate.cli import main as cli_main

        cli_main(args=request["argv"], prog_name="labgate")
    except SystemExit as end:
        status = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
        if isinstance(end.code, str):
            print(end.code, file=sys.stderr)
    except KeyboardInterrupt:
        status = 130
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):
                stream.flush()
    return status


def request(message: dict[str, Any]) -> dict[str, Any] | None:
    """Send a control message (``stop``, ``status``) to the resident; its answer, or None when
    none answers."""
    conn = _connect()
    if conn is None:
        return None
    with conn:
        conn.sendall(json.dumps(message).encode() + b"\n")
        return _reply(conn.makefile("rb"))


def run_resident() -> None:
    """``python -m labgate.resident``: preload, then serve until idle, stale or stopped."""
    if not hasattr(os, "pidfd_open"):
        _log("unsupported", why="this platform has no pidfd_open: commands run on their own")
        _say_ready()
        return
    resident = Resident(socket_path())
    os.chdir("/")  # hold no directory of the caller's; each command gets the caller's own
    resident.preload()
    resident.serve()
