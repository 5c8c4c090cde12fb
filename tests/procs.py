"""Looking at real processes from tests (through /proc), and waiting for what they do."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    what: str,
    check: Callable[[], T | None],
    timeout: float = 120.0,
    detail: Callable[[], str] = str,
) -> T:
    """``check()``'s first answer that is neither None nor False, asked until ``timeout``: a
    state seen from outside (a store, a server, /proc), each poll a real look, not a sleep
    standing in for one. AssertionError naming ``what`` (and ``detail()``) when time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail()}")
        time.sleep(0.05)


def running(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def gone_within(pid: int, seconds: float = 5.0) -> bool:
    """Whether the process is gone within ``seconds``: SIGKILL is delivered asynchronously, so a
    killed process may still be listed for a moment."""
    deadline = time.monotonic() + seconds
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def pids_with(token: str) -> list[int]:
    """The running processes whose command line contains ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if token in cmdline and running(int(entry.name)):
            found.append(int(entry.name))
    return found
