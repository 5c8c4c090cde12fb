"""A host's lifecycle, labgrid-like: small commands declared per host in lab.toml, run on the
controller (they drive a PDU, a BMC, a serial console server, an installer).

- ``health`` runs before a job is given the host; failing (non-zero, or longer than
  ``LIFECYCLE_TIMEOUT_S``) quarantines the host with its output as the reason.
- ``install`` re-images the host before an exclusive job (osstest's host-install); failing
  quarantines it too.
- ``console`` runs while a job runs; its output is the job's ``console.log``.
- ``power_on``/``power_off``/``power_cycle`` are run by ``labgate host power`` (and
  ``power_cycle`` for a community member during their reservation, see ``labgate.access``).

Each command gets ``LABGATE_HOST`` and, for an SSH host, ``LABGATE_HOST_ADDRESS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from labgate.executor import HostLost, kill_group
from labgate.model import HostSpec

LIFECYCLE_TIMEOUT_S = 600.0


class HostUnfit(HostLost):
    """The host failed its health check or its install: it is quarantined."""

    quarantine = True


def command_env(host: HostSpec) -> dict[str, str]:
    env = dict(os.environ, LABGATE_HOST=host.name)
    if host.address is not None:
        env["LABGATE_HOST_ADDRESS"] = host.address
    return env


async def _start(
    host: HostSpec, command: str, *, cwd: Path, output: int | IO[bytes]
) -> asyncio.subprocess.Process:
    """Start a lifecycle command in its own process group, stdout and stderr both to
    ``output``."""
    return await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        cwd=cwd,
        env=command_env(host),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=output,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )


async def run_lifecycle_command(
    host: HostSpec, command: str, *, cwd: Path, timeout: float = LIFECYCLE_TIMEOUT_S
) -> tuple[bool, str]:
    """Run a lifecycle command; (succeeded, its output, last lines first-trimmed)."""
    proc = await _start(host, command, cwd=cwd, output=asyncio.subprocess.PIPE)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        kill_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        return False, f"{command!r} timed out after {timeout:g}s"
    except asyncio.CancelledError:
        kill_group(proc.pid, signal.SIGKILL)
        raise
    text = output.decode(errors="replace").strip()
    if proc.returncode != 0:
        last = text.splitlines()[-1] if text else ""
        return False, f"{command!r} exited {proc.returncode}" + (f": {last}" if last else "")
    return True, text


async def console_output(host: HostSpec, seconds: float, *, cwd: Path) -> str:
    """What the host's console command prints in ``seconds`` (it is then stopped); "" when the
    host declares none."""
    command = host.lifecycle.console
    if not command:
        return ""
    proc = await _start(host, command, cwd=cwd, output=asyncio.subprocess.PIPE)
    stdout = proc.stdout
    assert stdout is not None
    chunks: list[bytes] = []

    async def read() -> None:
        while chunk := await stdout.read(65536):
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), seconds)
    except TimeoutError:
        pass
    finally:
        kill_group(proc.pid, signal.SIGKILL)
        await asyncio.shield(proc.wait())
    return b"".join(chunks).decode(errors="replace")


async def before_job(host: HostSpec, *, exclusive: bool, cwd: Path) -> str | None:
    """Health check, then (for an exclusive job) install. Returns why the host is unfit, if so."""
    lifecycle = host.lifecycle
    if lifecycle.health:
        ok, output = await run_lifecycle_command(host, lifecycle.health, cwd=cwd)
        if not ok:
            return f"health check failed: {output}"
    if exclusive and lifecycle.install:
        ok, output = await run_lifecycle_command(host, lifecycle.install, cwd=cwd)
        if not ok:
            return f"install failed: {output}"
    return None


@contextlib.asynccontextmanager
async def console(host: HostSpec, log: Path, *, cwd: Path) -> AsyncIterator[None]:
    """Capture the host's console into ``log`` while the block runs (nothing if none is
    declared)."""
    command = host.lifecycle.console
    if not command:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab", buffering=0) as out:
        proc = await _start(host, command, cwd=cwd, output=out)
        try:
            yield
        finally:
            kill_group(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
