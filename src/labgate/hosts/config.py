"""The ``[[host]]`` keys of real hosts, registered in :data:`labgate.config.HOST_MODELS`.

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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from labgate.config import HOST_MODELS, RawHost, Text
from labgate.model import HostSpec

LIFECYCLE_COMMANDS = ("power_on", "power_off", "power_cycle", "console", "install", "health")
DEFAULT_QUARANTINE_AFTER = 3


class _RawLifecycleHost(RawHost):
    power_on: Text | None = None
    power_off: Text | None = None
    power_cycle: Text | None = None
    console: Text | None = None
    install: Text | None = None
    health: Text | None = None
    quarantine_after: int = Field(default=DEFAULT_QUARANTINE_AFTER, ge=1)

    def options(self) -> tuple[tuple[str, str], ...]:
        out = [(k, v) for k in LIFECYCLE_COMMANDS if (v := getattr(self, k)) is not None]
        return (*out, ("quarantine_after", str(self.quarantine_after)))


class RawLocalLabHost(_RawLifecycleHost):
    executor: Literal["local"] = "local"


class RawSshHost(_RawLifecycleHost):
    executor: Literal["ssh"] = "ssh"
    address: Text
    port: int = Field(default=22, ge=1, le=65535)
    user: Text
    identity_file: Text
    known_hosts_file: Text | None = None
    work_root: Text = "/tmp/labgate"
    keepalive_interval: float = Field(default=5.0, gt=0)
    keepalive_count: int = Field(default=3, ge=1)

    def options(self) -> tuple[tuple[str, str], ...]:
        own = {
            "address": self.address,
            "port": str(self.port),
            "user": self.user,
            "identity_file": self.identity_file,
            "work_root": self.work_root,
            "keepalive_interval": str(self.keepalive_interval),
            "keepalive_count": str(self.keepalive_count),
        }
        if self.known_hosts_file is not None:
            own["known_hosts_file"] = self.known_hosts_file
        return (*own.items(), *super().options())


HOST_MODELS["local"] = RawLocalLabHost
HOST_MODELS["ssh"] = RawSshHost


@dataclass(frozen=True)
class Lifecycle:
    """A host's lifecycle commands (None: not declared)."""

    power_on: str | None = None
    power_off: str | None = None
    power_cycle: str | None = None
    console: str | None = None
    install: str | None = None
    health: str | None = None
    quarantine_after: int = DEFAULT_QUARANTINE_AFTER


def lifecycle_of(host: HostSpec) -> Lifecycle:
    options = dict(host.options)
    return Lifecycle(
        **{k: options.get(k) for k in LIFECYCLE_COMMANDS},
        quarantine_after=int(options.get("quarantine_after", DEFAULT_QUARANTINE_AFTER)),
    )


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


def ssh_target(host: HostSpec, lab_dir: Path) -> SshTarget:
    """The SSH settings of ``host``; relative key paths are taken from the lab dir."""
    o: Mapping[str, str] = dict(host.options)

    def path(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else lab_dir / p

    return SshTarget(
        address=o["address"],
        port=int(o.get("port", "22")),
        user=o["user"],
        identity_file=path(o["identity_file"]),
        known_hosts_file=path(o.get("known_hosts_file", "~/.ssh/known_hosts")),
        work_root=o.get("work_root", "/tmp/labgate"),
        keepalive_interval=float(o.get("keepalive_interval", "5")),
        keepalive_count=int(o.get("keepalive_count", "3")),
    )
