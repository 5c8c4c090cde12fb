"""Fixtures of the integration tests: real OpenSSH servers as lab hosts (see sshd.py).

- `ssh_user_key`: a client key pair (session-wide) every test sshd accepts.
- `sshd_factory`: `start(name, netns=None)` gives a running `Sshd`; all are stopped at the end.
- `ssh_host_toml(server, name, ...)`: the `[[host]]` table of an SSH host on that server, with a
  known_hosts file of its own naming the server's key.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from integration.sshd import SSHD, Sshd, keygen, start_sshd
from labs import toml_str


def _need_sshd() -> None:
    if SSHD.exists() and shutil.which("ssh-keygen"):
        return
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail("openssh-server is required under CI", pytrace=False)
    pytest.skip("no OpenSSH server (apt-get install openssh-server)")


@pytest.fixture(scope="session")
def ssh_user_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need_sshd()
    return keygen(tmp_path_factory.mktemp("ssh-user") / "id_ed25519")


SshdFactory = Callable[..., Sshd]


@pytest.fixture
def sshd_factory(tmp_path: Path, ssh_user_key: Path) -> Iterator[SshdFactory]:
    servers: list[Sshd] = []

    def start(name: str, *, address: str = "127.0.0.1", netns: str | None = None) -> Sshd:
        server = start_sshd(tmp_path / "sshd" / name, [ssh_user_key], address=address, netns=netns)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def ssh_host_toml(
    server: Sshd,
    name: str,
    key: Path,
    *,
    flags: Sequence[str] = (),
    known_hosts: Path | None = None,
    extra: str = "",
) -> str:
    """A `[[host]]` of `executor = "ssh"` on ``server``; its known_hosts file names the server
    (or ``known_hosts`` as given, e.g. an empty one)."""
    if known_hosts is None:
        known_hosts = server.root / "known_hosts"
        known_hosts.write_text(server.known_hosts_line)
    flag_list = ", ".join(toml_str(f) for f in flags)
    return (
        f'[[host]]\nname = {toml_str(name)}\nflags = [{flag_list}]\nexecutor = "ssh"\n'
        f'address = {toml_str(server.address)}\nport = {server.port}\nuser = "root"\n'
        f"identity_file = {toml_str(str(key))}\n"
        f"known_hosts_file = {toml_str(str(known_hosts))}\n"
        f"work_root = {toml_str(str(server.root / 'work'))}\n{extra}\n"
    )
