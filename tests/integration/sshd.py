"""Real OpenSSH servers for tests: generated host and user keys, an sshd on a loopback port (or
on an address inside a network namespace), stopped at the end.

    server = start_sshd(tmp_path / "sshd0", user_key)
    server.port, server.known_hosts  # a known_hosts file naming the server's host key

The server runs as the current user (root in CI): `UsePAM no`, `StrictModes no`, public-key
authentication only. Readiness is a bounded poll of the TCP port, never a sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
START_TIMEOUT_S = 10.0


class SshdUnavailable(RuntimeError):
    """No OpenSSH server (or ssh-keygen) on this machine."""


def keygen(path: Path, comment: str = "labgate-test") -> Path:
    """An ed25519 key pair at ``path`` (private) and ``path.pub``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Sshd:
    """A running sshd: where it listens and the known_hosts line that names it."""

    root: Path
    address: str
    port: int
    host_key: Path
    proc: subprocess.Popen[bytes]
    netns: str | None = None
    log: Path = field(default_factory=Path)

    @property
    def known_hosts_line(self) -> str:
        key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        where = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{where} {' '.join(key)}\n"

    def stop(self) -> None:
        """Stop the server and every process it started (sessions and what they run)."""
        for pid in descendants(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (through /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(children.get(child, []))
    return out


def _netns_exec(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def start_sshd(
    root: Path,
    authorized_keys: Sequence[Path],
    *,
    address: str = "127.0.0.1",
    netns: str | None = None,
) -> Sshd:
    """Start an sshd on ``address`` (inside ``netns`` if given) accepting the given public keys
    for the current user; waits until it accepts connections."""
    if not SSHD.exists():
        raise SshdUnavailable(f"{SSHD} is missing (apt-get install openssh-server)")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    root.mkdir(parents=True, exist_ok=True)
    host_key = keygen(root / "ssh_host_ed25519_key", "labgate-test-host")
    auth = root / "authorized_keys"
    auth.write_text("".join(Path(f"{k}.pub").read_text() for k in authorized_keys))
    auth.chmod(0o600)
    port = 2222 if netns else free_port(address)
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                f"ListenAddress {address}",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {auth}",
                f"PidFile {root / 'sshd.pid'}",
                "UsePAM no",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "MaxStartups 100",
                "MaxSessions 100",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    log = root / "sshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*_netns_exec(netns), str(SSHD), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    server = Sshd(root, address, port, host_key, proc, netns, log)
    try:
        _wait_listening(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_listening(server: Sshd) -> None:
    """Poll (bounded) until the server's port accepts a connection (a namespaced server is
    reached through its veth address, as the controller reaches it)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {server.log.read_text(errors='replace')}")
        with contextlib.suppress(OSError):
            socket.create_connection((server.address, server.port), timeout=1).close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not listen on {server.address}:{server.port}")
        time.sleep(0.02)


@dataclass
class Netns:
    """A network namespace joined to the root namespace by a veth pair with private test
    addresses (198.18.0.0/15, the benchmarking range: never routed anywhere)."""

    name: str
    outer_if: str
    outer_addr: str
    inner_addr: str

    def cut(self) -> None:
        """The host vanishes: its link goes down without any goodbye to open connections."""
        subprocess.run(["ip", "link", "set", self.outer_if, "down"], check=True)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", self.outer_if], check=False, capture_output=True)


def make_netns(name: str, index: int) -> Netns:
    """Namespace ``name`` with veth ``lgo<index>`` (outside, 198.18.<index>.1/24) and
    ``lgi<index>`` (inside, 198.18.<index>.2/24). Raises CalledProcessError if not permitted."""
    outer, inner = f"lgo{index}", f"lgi{index}"
    outer_addr, inner_addr = f"198.18.{index}.1", f"198.18.{index}.2"
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", outer, "type", "veth", "peer", "name", inner],
        ["ip", "link", "set", inner, "netns", name],
        ["ip", "addr", "add", f"{outer_addr}/24", "dev", outer],
        ["ip", "link", "set", outer, "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", f"{inner_addr}/24", "dev", inner],
        ["ip", "netns", "exec", name, "ip", "link", "set", inner, "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
    ]
    ns = Netns(name, outer, outer_addr, inner_addr)
    try:
        for argv in commands:
            subprocess.run(argv, check=True, capture_output=True)
    except BaseException:
        ns.delete()
        raise
    return ns
