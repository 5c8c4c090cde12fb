"""``labgate serve``: one asyncio process serving the dashboard and JSON API, running the pool's
flights (the web's retests, ``labgate host queue``) as a controller, the review loop of every
``[[review]]`` entry (its connectors' events and the webhook queue), and the push gate of the
branches given with ``--gate``, all on the same loop. Ctrl-C or SIGTERM stops all of it: the
flights running are cancelled, the review runs given back to the queue, so a restart resumes
every one."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from labgate.commandline import LabgateCommand, lab_option, settle

if TYPE_CHECKING:
    from labgate.config import Lab
    from labgate.flights import Flights
    from labgate.review.loop import ReviewLoop
    from labgate.store import Store


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("labgate.web", "labgate.gate", "labgate.review"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


async def gate_loop(lab: Lab, store: Store, branch: str, flights: Flights) -> None:
    """The push gate of one branch, cycle after cycle, in the server's loop (as ``labgate gate``
    does); each event is one structured log line."""
    from labgate.gate import Gate, GateError

    log = logging.getLogger("labgate.gate")

    def say(line: str) -> None:
        log.info(json.dumps({"event": "gate", "branch": branch, "message": line}))

    async for result in Gate(lab, store, say=say, flights=flights).cycles(branch):
        if isinstance(result, GateError):
            log.info(json.dumps({"event": "gate-error", "branch": branch, "error": str(result)}))
        else:
            log.info(json.dumps({"event": "gate-cycle", **result.to_json()}))


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


STALL_S = 0.5
"""A pause of the event loop this long is logged (nothing is answered or sent meanwhile)."""


async def watch_stalls(every_s: float = 0.1) -> None:
    """Log each time the event loop ran nothing else for ``STALL_S`` or more (work done on it
    without awaiting: a slow store call, a big page), one structured line each."""
    log = logging.getLogger("labgate.web")
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(every_s)
        late = loop.time() - before - every_s
        if late >= STALL_S:
            log.info(json.dumps({"event": "loop-stalled", "seconds": round(late, 2)}))


QUEUE_POLL_S = 2.0
"""How often the review loop looks at the queue for runs a webhook queued (at the longest)."""


def review_loop(lab: Lab, store: Store, flights: Flights) -> ReviewLoop | None:
    """The review loop of the lab's usable ``[[review]]`` entries (each other one is logged
    with why), or None when there is none."""
    from labgate.review.connectors import connectors_for
    from labgate.review.loop import ReviewLoop

    log = logging.getLogger("labgate.review")
    connectors, left_out = connectors_for(lab)
    for why in left_out:
        log.warning(json.dumps({"event": "review-left-out", "reason": why}))
    if not connectors:
        return None
    slots = sum(host.slots for host in lab.hosts)
    return ReviewLoop(lab, store, connectors, flights=flights, parallel=max(1, slots))


async def serve(
    lab_dir: Path,
    host: str,
    port: int,
    gate_branches: Sequence[str] = (),
    *,
    review: bool = True,
) -> None:
    # listening before the slow start-up (the store, the web stack): a review server's
    # webhook delivered meanwhile waits in the backlog instead of being refused and lost
    sock = _listen(host, port)
    try:
        await _serve(sock, lab_dir, host, gate_branches, review=review)
    finally:
        sock.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: no Nagle delay between a response's head and body
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {error}") from error
    sock.listen(128)
    return sock


async def _serve(
    sock: socket.socket, lab_dir: Path, host: str, gate_branches: Sequence[str], *, review: bool
) -> None:
    # imported here, after listening (about a second on a busy machine): the store, the
    # configuration and the web stack
    import uvicorn

    from labgate.config import ConfigError, load_lab
    from labgate.store import Store, StoreError
    from labgate.web import create_app

    try:
        lab = load_lab(lab_dir.resolve())
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    try:
        store = Store.open(lab.database_url)
    except StoreError as error:
        raise click.ClickException(str(error)) from error
    unknown = [b for b in gate_branches if b not in lab.branches]
    if unknown:
        store.close()
        known = ", ".join(lab.branches) or "none"
        raise click.ClickException(f"--gate {unknown[0]}: no such branch (branches: {known})")
    from labgate.flights import Flights

    # one flights service: the pool's worker (the web's retests, `labgate host queue`) and the
    # gates' flights share its controller and the hosts' leases
    flights = Flights(lab, store)
    gates = [asyncio.create_task(flights.serve()), asyncio.create_task(watch_stalls())]
    gates += [asyncio.create_task(gate_loop(lab, store, b, flights)) for b in gate_branches]
    reviews = review_loop(lab, store, flights) if review else None
    if reviews is not None:
        gates.append(asyncio.create_task(reviews.run_forever(min(lab.poll_interval, QUEUE_POLL_S))))
    try:
        # a webhook's event goes to the loop at once (it says "pending" in the background)
        app = create_app(lab, store, review_options={"deliver": reviews.receive} if reviews else {})
        settle()
        config = uvicorn.Config(
            app,
            host=host,
            port=sock.getsockname()[1],
            access_log=False,
            log_level="warning",
            lifespan="off",
            # live logs are endless responses: do not wait for them on SIGTERM/Ctrl-C
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        # uvicorn stops serving on SIGTERM, then raises it again with the handler it found: this
        # one, so the tasks below are stopped (flights cancelled, review runs given back) and
        # the command exits 130, instead of the process dying at once
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
        click.echo(f"labgate: serving {lab.name} on http://{shown}:{bound}/", err=True)
        await server.serve(sockets=[sock])
    finally:
        for task in gates:
            task.cancel()
        await asyncio.gather(*gates, return_exceptions=True)
        store.close()


@click.command("serve", cls=LabgateCommand)
@lab_option
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT")
@click.option(
    "--gate",
    "gate_branches",
    multiple=True,
    metavar="BRANCH",
    help="Also run the push gate of BRANCH (repeatable), polling staging every poll_interval.",
)
@click.option(
    "--review/--no-review",
    default=True,
    show_default=True,
    help="Run the review loop of the [[review]] entries (--no-review: receive their webhooks "
    "only, leaving the runs to `labgate review run` processes).",
)
def serve_command(lab_dir: Path, listen: str, gate_branches: tuple[str, ...], review: bool) -> None:
    """Serve the lab's dashboard and JSON API (one JSON line per request on stderr), and run
    the push gate of the branches given with --gate.

    It also tests and votes on the patch sets of the lab's [[review]] entries (unless
    --no-review) and runs the pool's queued flights.

    Errors are `labgate: ...` with exit status 2; Ctrl-C or SIGTERM stops it with exit
    status 130."""
    host, port = parse_listen(listen)
    _log_to_stderr()
    asyncio.run(serve(lab_dir, host, port, gate_branches, review=review))
