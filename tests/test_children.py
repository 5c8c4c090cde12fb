"""asyncio learns of a child's end by pidfd (labgate.children): exit codes arrive, on the main
loop and on a loop of another thread, and no thread is started per child."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from labgate import children

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd_open here")


async def _exit_codes(count: int) -> tuple[int, int, list[int]]:
    """Start ``count`` children that wait on their stdin, count this process's threads while
    they all run, then let them exit with 0, 1, 2 ... (each its own code)."""
    before = threading.active_count()
    procs = [
        await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", f"read line; exit {i}", stdin=asyncio.subprocess.PIPE
        )
        for i in range(count)
    ]
    during = threading.active_count()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    return before, during, [await proc.wait() for proc in procs]


def test_exit_codes_arrive_without_a_thread_per_child() -> None:
    children.install()
    before, during, codes = asyncio.run(_exit_codes(6))
    assert codes == [0, 1, 2, 3, 4, 5]
    assert during == before  # asyncio's threaded watcher has a thread per running child


def test_a_loop_in_another_thread_is_told_too() -> None:
    children.install()
    got: list[list[int]] = []
    worker = threading.Thread(target=lambda: got.append(asyncio.run(_exit_codes(3))[2]))
    worker.start()
    worker.join()
    assert got == [[0, 1, 2]]
