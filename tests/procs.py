"""Looking at real processes from tests (through /proc)."""

from __future__ import annotations

import time
from pathlib import Path


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
