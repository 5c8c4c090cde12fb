"""The ``[[host]]`` keys of real hosts, registered in :data:`labgate.rawconfig.HOST_MODELS`.

Every host (``local`` and ``ssh``) may declare its lifecycle commands, run on the controller
with ``LABGATE_HOST`` (and ``LABGATE_HOST_ADDRESS`` for an SSH host) in their environment:
``power_on``, ``power_off``, ``power_cycle``, ``console`` (runs while a job runs; its output goes
into the job's logs), ``install`` (re-images the host before an exclusive job) and ``health``
(checked before a job is given the host; a failure quarantines it). ``quarantine_after`` broken
jobs in a row (default 3) quarantine it too.

An ``executor = "ssh"`` host adds ``address``, ``port`` (22), ``user``, ``identity_file`` (a
private key; relative to the lab dir), ``known_hosts_file`` (default ``~/.ssh/known_hosts``; an
unknown host key is an error), ``work_root`` (``/tmp/labgate``: per-job dirs go under it),
``keepalive_interval`` (5 s) and ``keepalive_count`` (3): a host silent for their product is lost.

Keys shared by several hosts go in a ``[[host_class]]`` (``name`` and any host keys); a host
with ``class = "NAME"`` takes those it does not set itself, its flags joined to the class's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from labgate.executor import SESSIONS, Executor, JobSession
from labgate.model import HostSpec, Lifecycle
from labgate.rawconfig import HOST_MODELS, RawHost, Text

LIFECYCLE_COMMANDS = ("power_on", "power_off", "power_cycle", "console", "install", "health")
DEFAULT_QUARANTINE_AFTER = Lifecycle().quarantine_after


class _RawLifecycleHost(RawHost):
    power_on: Text | None = None
    power_off: Text | None = None
    power_cycle: Text | None = None
    console: Text | None = None
    install: Text | None = None
    health: Text | None = None
    quarantine_after: int = Field(default=DEFAULT_QUARANTINE_AFTER, ge=1)

    def lifecycle(self) -> Lifecycle:
        return Lifecycle(
            **{k: getattr(self, k) for k in LIFECYCLE_COMMANDS},
            quarantine_after=self.quarantine_after,
        )


class RawLocalLabHost(_RawLifecycleHost):
    executor: Literal["local"] = "local"


class RawSshHost(_RawLifecycleHost):
    executor: Literal["ssh"] = "ssh"
    host_address: Text = Field(alias="address")
    port: int = Field(default=22, ge=1, le=65535)
    user: Text
    identity_file: Text
    known_hosts_file: Text | None = None
    work_root: Text = "/tmp/labgate"
    keepalive_interval: float = Field(default=5.0, gt=0)
    keepalive_count: int = Field(default=3, ge=1)

    def connection(self, lab_dir: Path) -> SshTarget:
        def path(value: str) -> Path:
            p = Path(value).expanduser()
            return p if p.is_absolute() else lab_dir / p

        return SshTarget(
            address=self.host_address,
            port=self.port,
            user=self.user,
            identity_file=path(self.identity_file),
            known_hosts_file=path(self.known_hosts_file or "~/.ssh/known_hosts"),
            work_root=self.work_root,
            keepalive_interval=self.keepalive_interval,
            keepalive_count=self.keepalive_count,
        )

    def address(self) -> str:
        return self.host_address


HOST_MODELS["local"] = RawLocalLabHost
HOST_MODELS["ssh"] = RawSshHost


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach an SSH host; paths are absolute."""

    address: str
    port: int
    user: str
    identity_file: Path
    known_hosts_file: Path
    work_root: str
    keepalive_interval: float
    keepalive_count: int


def ssh_target(host: HostSpec) -> SshTarget:
    """The SSH settings of an ``executor = "ssh"`` host."""
    if not isinstance(host.connection, SshTarget):
        raise TypeError(f"host {host.name} is not an SSH host (executor {host.executor})")
    return host.connection


async def _ssh_session(
    host: HostSpec, key: str, workdir: Path, artifacts: Path, local: Executor
) -> JobSession:
    from labgate.hosts.ssh import open_session  # asyncssh: loaded on use

    return await open_session(ssh_target(host), key, workdir, artifacts)


Problems = list[tuple[str, str, str]]


def merge_host_classes(data: Mapping[str, Any]) -> tuple[dict[str, Any], Problems]:
    """Apply ``[[host_class]]`` tables: a ``[[host]]`` with ``class = "NAME"`` takes every key
    of that class it does not set itself (``flags`` are joined, class flags first). Returns the
    file's data without classes, and problems as (key, message, fix)."""
    problems: Problems = []
    raw_classes = data.get("host_class", [])
    classes: dict[str, dict[str, Any]] = {}
    where: dict[str, int] = {}
    if not isinstance(raw_classes, list):
        problems.append(("host_class", "must be an array of tables", "write [[host_class]]"))
        raw_classes = []
    for i, raw in enumerate(raw_classes):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name:
            problems.append((f"host_class[{i}].name", "is required", 'add name = "..."'))
        elif name in classes:
            problems.append(
                (
                    f"host_class[{i}].name",
                    f"{name!r} is also host_class[{where[name]}]",
                    "give each class a different name",
                )
            )
        else:
            classes[name], where[name] = {k: v for k, v in raw.items() if k != "name"}, i
    out = {k: v for k, v in data.items() if k != "host_class"}
    hosts = data.get("host")
    if isinstance(hosts, list):
        out["host"] = [_with_class(i, h, classes, problems) for i, h in enumerate(hosts)]
    return out, problems


def _with_class(
    index: int, host: Any, classes: Mapping[str, dict[str, Any]], problems: Problems
) -> Any:
    if not isinstance(host, dict) or "class" not in host:
        return host
    own = {k: v for k, v in host.items() if k != "class"}
    name = host["class"]
    cls = classes.get(name) if isinstance(name, str) else None
    if cls is None:
        known = ", ".join(classes) or "none: add a [[host_class]]"
        problems.append(
            (f"host[{index}].class", f"no [[host_class]] named {name!r}", f"use one of: {known}")
        )
        return own
    merged = {**cls, **own}
    if isinstance(cls.get("flags"), list) and isinstance(own.get("flags"), list):
        merged["flags"] = [*cls["flags"], *(f for f in own["flags"] if f not in cls["flags"])]
    return merged


SESSIONS["ssh"] = _ssh_session
