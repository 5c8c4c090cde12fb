"""The SSH executor: a job's steps on a real host over SSH (asyncssh).

One connection per job. The work dir the runner prepared locally is piped to the host as a
``tar`` stream over the SSH channel (much faster than SFTP for trees of many small files; the
trees' ``.git`` dirs stay behind: they are shared clones of the controller's mirrors), dependency
artifacts dereferenced into ``artifacts/<job>/``. Each step runs as the leader of a new process
group (``setsid``) whose id is written to a pid file, so a timeout or a cancellation kills the
whole group through a second channel. Output streams into the step's log as it comes. At the end
``$LABGATE_ARTIFACTS`` comes back the same way, and the job's dir on the host is removed.

The host key must be in ``known_hosts_file``: an unknown or changed key is an error (the host is
quarantined), never accepted. A connection lost or silent past its keepalives raises
:class:`~labgate.executor.HostLost`: the step is ``broken`` and the job goes to another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import asyncssh

from labgate.executor import (
    KILL_GRACE_S,
    HostLost,
    StepRun,
    exited,
    remote_environment,
    timed_out,
)
from labgate.hosts.config import SshTarget
from labgate.model import Outcome

CONNECT_TIMEOUT_S = 15.0
CHUNK = 1 << 16


class HostKeyRejected(HostLost):
    """The host's key is not in the known_hosts file (or differs): a person must look."""

    quarantine = True


def _q(value: str) -> str:
    return shlex.quote(value)


async def connect(target: SshTarget) -> asyncssh.SSHClientConnection:
    """Open a connection, checking the host key; raises HostLost (HostKeyRejected)."""
    where = f"{target.user}@{target.address}:{target.port}"
    if not target.known_hosts_file.exists():
        raise HostKeyRejected(
            f"{where}: known_hosts file {target.known_hosts_file} does not exist; "
            "add the host's key to it (ssh-keyscan, checked by a person)"
        )
    try:
        return await asyncio.wait_for(
            asyncssh.connect(
                target.address,
                port=target.port,
                username=target.user,
                client_keys=[str(target.identity_file)],
                known_hosts=str(target.known_hosts_file),
                agent_path=None,
                config=None,
                keepalive_interval=target.keepalive_interval,
                keepalive_count_max=target.keepalive_count,
            ),
            CONNECT_TIMEOUT_S,
        )
    except asyncssh.HostKeyNotVerifiable as error:
        raise HostKeyRejected(
            f"{where}: host key not accepted by {target.known_hosts_file}: {error.reason}"
        ) from error
    except (OSError, TimeoutError, asyncssh.Error) as error:
        raise HostLost(f"{where}: cannot connect: {_why(error)}") from error


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace").strip()
    return (output or "").strip()


def _why(error: BaseException) -> str:
    if isinstance(error, asyncssh.Error):
        return error.reason
    return str(error) or type(error).__name__


@dataclass
class SshSession:
    """One job on one SSH host (see the module docs). Create with :func:`open_session`."""

    conn: asyncssh.SSHClientConnection
    target: SshTarget
    root: str
    local_workdir: Path
    local_artifacts: Path
    _steps: int = 0
    _closed_by_us: bool = False
    _lost: asyncio.Future[None] = field(default_factory=asyncio.Future)
    _watcher: asyncio.Task[None] | None = None

    @property
    def workdir(self) -> str:
        return f"{self.root}/work"

    @property
    def artifacts(self) -> str:
        return f"{self.root}/artifacts"

    def _watch(self) -> None:
        async def watch() -> None:
            await self.conn.wait_closed()
            if not self._lost.done():
                self._lost.set_result(None)

        self._watcher = asyncio.create_task(watch())

    async def _run(self, command: str, *, check: bool = True) -> str:
        """Run a short command, raising HostLost if the host is gone (or if it fails)."""
        try:
            result = await self.conn.run(command, check=False)
        except (OSError, asyncssh.Error) as error:
            raise HostLost(f"{self.target.address}: {_why(error)}") from error
        if self._lost.done() or (result.exit_status is None and result.exit_signal is None):
            raise HostLost(f"{self.target.address}: connection lost")
        if check and result.exit_status != 0:
            raise HostLost(
                f"{self.target.address}: {command!r} exited {result.exit_status}: "
                f"{str(result.stderr).strip()}"
            )
        return str(result.stdout)

    async def _pipe(self, local_argv: list[str], remote: str, *, upload: bool) -> None:
        """Pipe a local tar process into a remote one (upload) or the other way round."""
        local = await asyncio.create_subprocess_exec(
            *local_argv,
            stdin=asyncio.subprocess.DEVNULL if upload else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE if upload else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            proc = await self.conn.create_process(remote, encoding=None)
        except (OSError, asyncssh.Error) as error:
            local.kill()
            await local.wait()
            raise HostLost(f"{self.target.address}: {_why(error)}") from error
        try:
            if upload:
                assert local.stdout is not None
                while chunk := await local.stdout.read(CHUNK):
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
                proc.stdin.write_eof()
            else:
                assert local.stdin is not None
                while chunk := await proc.stdout.read(CHUNK):
                    local.stdin.write(chunk)
                    await local.stdin.drain()
                local.stdin.close()
            remote_done = await proc.wait(check=False)
        except (OSError, asyncssh.Error) as error:
            local.kill()
            raise HostLost(f"{self.target.address}: transfer failed: {_why(error)}") from error
        finally:
            local_status = await local.wait()
        if self._lost.done() or remote_done.exit_status is None:
            raise HostLost(f"{self.target.address}: connection lost during a transfer")
        if remote_done.exit_status != 0 or local_status != 0:
            raise OSError(
                f"transfer {'to' if upload else 'from'} {self.target.address} failed: "
                f"{_text(remote_done.stderr)}"
            )

    async def prepare(self) -> None:
        wd, art = _q(self.workdir), _q(self.artifacts)
        await self._run(f"rm -rf {_q(self.root)} && mkdir -p {wd}/.labgate {art}")
        await self._pipe(
            [
                "tar",
                "-C",
                str(self.local_workdir),
                "-cf",
                "-",
                "--exclude=./artifacts",
                "--exclude=./*/.git",
                "--exclude=./.labgate",
                ".",
            ],
            f"tar -C {wd} -xf -",
            upload=True,
        )
        if (self.local_workdir / "artifacts").is_dir():
            await self._pipe(
                ["tar", "-C", str(self.local_workdir), "-chf", "-", "artifacts"],
                f"tar -C {wd} -xf -",
                upload=True,
            )

    async def run_step(
        self, command: str, *, env: Mapping[str, str], log: Path, timeout: float | None
    ) -> StepRun:
        self._steps += 1
        pidfile = f"{self.workdir}/.labgate/pgid-{self._steps}"
        broken = env.get("LABGATE_BROKEN_FILE", f"{self.workdir}/.labgate/broken")
        # the step's environment (labgate.executor.step_environment) but the controller's PATH,
        # HOME...: the host's own stay
        assignments = " ".join(_q(f"{k}={v}") for k, v in remote_environment(env).items())
        inner = f"echo $$ > {_q(pidfile)}; exec env {assignments} /bin/sh -c {_q(command)}"
        remote = (
            f"cd {_q(self.workdir)} && rm -f {_q(broken)} && exec setsid -w /bin/sh -c {_q(inner)}"
        )
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            proc = await self.conn.create_process(
                remote, stdin=asyncssh.DEVNULL, stderr=asyncssh.STDOUT, encoding=None
            )
        except (OSError, asyncssh.Error) as error:
            why = _why(error)
            raise HostLost(f"{self.target.address}: cannot start the step: {why}") from error
        with open(log, "ab", buffering=0) as out:
            pump = asyncio.create_task(_copy(proc.stdout, out))
            waiter = asyncio.ensure_future(proc.wait(check=False))
            try:
                watched: list[asyncio.Future[Any]] = [waiter, self._lost]
                done, _ = await asyncio.wait(
                    watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if waiter not in done and not self._lost.done():  # timed out
                    await self._kill_group(pidfile, waiter)
                    return timed_out(out, timeout, time.monotonic() - started)
            except asyncio.CancelledError:
                with contextlib.suppress(HostLost):
                    await asyncio.shield(self._kill_group(pidfile, waiter))
                raise
            finally:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(pump), 5)
                pump.cancel()
            result = waiter.result() if waiter.done() else None
            if result is None or (result.exit_status is None and result.exit_signal is None):
                waiter.cancel()
                out.write(b"\n--- labgate: connection to the host lost\n")
                raise HostLost(f"{self.target.address}: connection lost during the step")
        duration = time.monotonic() - started
        # one round trip: the step's lab-failure reason, and no background child survives it,
        # in its group or not (every process whose environment still holds this step's own
        # LABGATE_BROKEN_FILE, found by one grep over the host's /proc, a few times over for
        # what forked meanwhile)
        mark = _q(f"LABGATE_BROKEN_FILE={broken}")
        after = await self._run(
            f"if [ -e {_q(broken)} ]; then echo broken; head -n 1 {_q(broken)}; fi; "
            f"kill -KILL -- -$(cat {_q(pidfile)} 2>/dev/null) 2>/dev/null; "
            f"for _ in 1 2 3; do p=$(grep -lzxF {mark} /proc/[0-9]*/environ 2>/dev/null"
            ' | cut -d/ -f3); [ -n "$p" ] || break; kill -KILL $p 2>/dev/null; done; true',
            check=False,
        )
        lines = after.splitlines()
        if lines and lines[0] == "broken":
            reason = (lines[1:] or ["the step reported a lab failure"])[0].strip()
            return StepRun(Outcome.BROKEN, result.exit_status, duration, reason)
        if result.exit_status is None:
            signal_name = str(result.exit_signal[0]) if result.exit_signal else "?"
            return StepRun(Outcome.FAIL, None, duration, f"killed by signal {signal_name}")
        return exited(result.exit_status, duration)

    async def _kill_group(self, pidfile: str, waiter: asyncio.Future[Any]) -> None:
        """SIGTERM the step's process group, SIGKILL it after the grace period."""
        group = f"-$(cat {_q(pidfile)} 2>/dev/null)"
        await self._run(f"kill -TERM -- {group} 2>/dev/null; true", check=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), KILL_GRACE_S)
        await self._run(f"kill -KILL -- {group} 2>/dev/null; true", check=False)

    async def fetch_results(self, pattern: str) -> None:
        # the shell expands the glob on the host; no match is not an error here (the results
        # collector reports missing files)
        await self._pipe(
            ["tar", "-C", str(self.local_workdir), "-xf", "-"],
            f"cd {_q(self.workdir)} && tar -cf - --ignore-failed-read -- {pattern} 2>/dev/null"
            " || true",
            upload=False,
        )

    @property
    def artifacts_are_here(self) -> bool:
        return False

    async def fetch_artifacts(self) -> None:
        self.local_artifacts.mkdir(parents=True, exist_ok=True)
        await self._pipe(
            ["tar", "-C", str(self.local_artifacts), "-xf", "-"],
            f"tar -C {_q(self.artifacts)} -cf - .",
            upload=False,
        )

    async def close(self) -> None:
        if not self._lost.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._run(f"rm -rf {_q(self.root)}", check=False), 30)
        self.conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.conn.wait_closed(), 5)
        if self._watcher is not None:
            self._watcher.cancel()


async def _copy(reader: asyncssh.SSHReader[bytes], out: BinaryIO) -> None:
    while chunk := await reader.read(CHUNK):
        out.write(chunk)


async def open_session(
    target: SshTarget, job_key: str, local_workdir: Path, local_artifacts: Path
) -> SshSession:
    """Connect to the host for one job; ``job_key`` (``<flight>/<job>``) names its dir there."""
    conn = await connect(target)
    session = SshSession(
        conn, target, f"{target.work_root.rstrip('/')}/{job_key}", local_workdir, local_artifacts
    )
    session._watch()
    return session
