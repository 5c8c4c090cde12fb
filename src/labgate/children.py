"""How asyncio learns that a child process ended: a pidfd read by the running event loop.

Python 3.11's asyncio starts a thread per child process (``ThreadedChildWatcher``) only to sit in
``waitpid``; starting it waits for the new thread to be scheduled, on the event loop. Every step a
local host runs is such a child: in a flight of 300 `true` steps run in process (the overhead
bench's profile) those waits took 0.47 s of the event loop's 2.3 s. Python 3.12 chose the pidfd
way by default where the kernel has it (Linux 5.3 and later): a file descriptor that becomes
readable when the child ends, watched by the loop like a socket, no thread. :func:`install` gives
3.11 the same; on 3.12 and later, and where ``pidfd_open`` fails, it leaves asyncio's own choice
alone.

asyncio's own ``PidfdChildWatcher`` of 3.11 is tied to the one loop it was attached to (the main
thread's); this one uses whichever loop is running when a child is started, so loops in other
threads (a service's, a test's) work as the main one does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVarTuple, Unpack

_Ts = TypeVarTuple("_Ts")

if sys.version_info < (3, 12):  # asyncio's child watchers are gone in 3.14

    class PidfdWatcher(asyncio.AbstractChildWatcher):
        """Calls back with a child's exit code when its pidfd becomes readable on the loop that was
        running when the child was registered."""

        def __enter__(self) -> PidfdWatcher:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def is_active(self) -> bool:
            return True

        def close(self) -> None:
            return None

        def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
            return None

        def add_child_handler(
            self,
            pid: int,
            callback: Callable[[int, int, Unpack[_Ts]], object],
            *args: *_Ts,
        ) -> None:
            loop = asyncio.get_running_loop()
            pidfd = os.pidfd_open(pid)
            loop.add_reader(pidfd, self._ended, loop, pid, pidfd, callback, args)

        def remove_child_handler(self, pid: int) -> bool:
            # asyncio calls this only when a subprocess transport is closed before its child was
            # registered; the child's pidfd is closed when it is reaped
            return True

        @staticmethod
        def _ended(
            loop: asyncio.AbstractEventLoop,
            pid: int,
            pidfd: int,
            callback: Callable[..., object],
            args: tuple[Any, ...],
        ) -> None:
            loop.remove_reader(pidfd)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                # someone else reaped it (as asyncio's own watchers say in this case)
                returncode = 255
                warnings.warn(
                    f"child process {pid} was reaped elsewhere", RuntimeWarning, stacklevel=1
                )
            else:
                returncode = os.waitstatus_to_exitcode(status)
            finally:
                os.close(pidfd)
            callback(pid, returncode, *args)


_installed = False


def install() -> None:
    """Make asyncio watch child processes by pidfd on Python 3.11 where the kernel allows it
    (once a process; later calls do nothing)."""
    global _installed
    if sys.version_info >= (3, 12) or _installed or not hasattr(os, "pidfd_open"):
        return
    _installed = True
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # a kernel before 5.3, or a sandbox that forbids it: keep the threads
        return
    with contextlib.suppress(NotImplementedError):  # a policy without child watchers
        asyncio.set_child_watcher(PidfdWatcher())
