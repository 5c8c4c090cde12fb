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

from labgate.model import HostSpec
from labgate.rawconfig import HOST_MODELS, RawHost, Text

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
