"""Step logs: files under the lab's log dir, named by the store; a running step's log is tailed
as server-sent events until the store says the step finished."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from labgate.model import Outcome

CHUNK = 64 * 1024
PAGE_LIMIT = 2 * 1024 * 1024
"""A log page shows at most the last 2 MiB; the raw log has everything."""


@dataclass(frozen=True)
class LiveStep:
    """Where a step stands, as a live log polls it."""

    outcome: Outcome
    log: Path | None
    exit_status: int | None = None
    duration_s: float | None = None


class LogOutsideLogDir(Exception):
    """A stored log path that leaves the lab's log dir: never served."""


def log_path(log_dir: Path, stored: str) -> Path:
    """The file of a stored log path; LogOutsideLogDir when it resolves outside ``log_dir``."""
    root = log_dir.resolve()
    path = (root / stored).resolve()
    if not path.is_relative_to(root) or path == root:
        raise LogOutsideLogDir(stored)
    return path


class NotARegularFile(Exception):
    """A log path naming a FIFO, a device, a dir...: never read (a FIFO would block a worker)."""


def open_log(path: Path) -> BinaryIO:
    """The log file opened for reading; FileNotFoundError when it is not there, NotARegularFile
    when it is no regular file. Opened without blocking, so a FIFO cannot hang the caller."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_tail(path: Path, limit: int = PAGE_LIMIT) -> tuple[str, int, bool]:
    """The log's text (its last ``limit`` bytes), its size, and whether it was cut; nothing for
    a missing log or one that is no regular file."""
    try:
        with open_log(path) as f:
            size = f.seek(0, 2)
            start = max(0, size - limit)
            f.seek(start)
            data = f.read(size - start)
    except (FileNotFoundError, NotARegularFile):
        return "", 0, False
    return data.decode(errors="replace"), start + len(data), start > 0


def file_chunks(f: BinaryIO, size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of ``f`` in chunks of at most CHUNK (a log that grows meanwhile is
    cut at the size it had, as its Content-Length says); ``f`` is closed at the end."""
    with f:
        left = size
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open_log(path) as f:
            if offset >= os.fstat(f.fileno()).st_size:
                return b""
            f.seek(offset)
            return f.read(CHUNK)
    except (FileNotFoundError, NotARegularFile):
        return b""


def sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def stream_log(
    state: Callable[[], LiveStep],
    offset: int,
    *,
    interval: float = 0.2,
    heartbeat: float = 15.0,
) -> AsyncIterator[bytes]:
    """Server-sent events: ``chunk`` events with the text appended after ``offset`` (as JSON
    ``{"offset", "text"}``), then one ``end`` event (``{"outcome", "exit_status",
    "duration_s"}``) once the step finished and its log is read to the end. ``state`` reads the
    step from the store (it runs in a thread)."""
    pending = b""  # an incomplete UTF-8 sequence held back for the next chunk
    quiet = 0.0
    while True:
        step = await asyncio.to_thread(state)
        path = step.log
        while path is not None:
            data = await asyncio.to_thread(_read_from, path, offset)
            if not data:
                break
            offset += len(data)
            text, pending = _decode(pending + data)
            quiet = 0.0
            yield sse("chunk", {"offset": offset, "text": text})
        if step.outcome.finished:
            if pending:
                yield sse("chunk", {"offset": offset, "text": pending.decode(errors="replace")})
            end = {"outcome": str(step.outcome), "exit_status": step.exit_status}
            yield sse("end", {**end, "duration_s": step.duration_s})
            return
        await asyncio.sleep(interval)
        quiet += interval
        if quiet >= heartbeat:
            quiet = 0.0
            yield b": keep-alive\n\n"


def _decode(data: bytes) -> tuple[str, bytes]:
    """Decode what is complete; keep back a trailing partial UTF-8 sequence (at most 3 bytes)."""
    for cut in range(0, min(4, len(data) + 1)):
        head = data[: len(data) - cut]
        try:
            return head.decode(), data[len(data) - cut :]
        except UnicodeDecodeError:
            continue
    return data.decode(errors="replace"), b""
