"""A step on a real SSH host gets the same environment as a local one (labgate.executor.
step_environment): labgate's variables, `[lab] env` and `pass_env`, never a secret; but the
host's own PATH and HOME, not the controller's."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from integration.conftest import SshdFactory, ssh_host_toml
from labgate.config import load_lab
from labgate.flight import plan_flight
from labgate.flights import Flights
from labgate.model import Outcome
from labgate.store import Store
from labs import job, step, write_lab
from test_step_environment import LAB_KEYS

SECRET = "smtp-password-not-for-steps"


def test_an_ssh_step_gets_the_step_environment_and_the_hosts_base(
    tmp_path: Path,
    sshd_factory: SshdFactory,
    ssh_user_key: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/controller/only/bin:" + os.environ["PATH"])
    monkeypatch.setenv("PROXY", "http://proxy:3128")
    monkeypatch.setenv("LAB_SMTP_PASSWORD", SECRET)
    host = ssh_host_toml(sshd_factory("a"), "ssh-a", ssh_user_key)
    lab_dir = write_lab(
        tmp_path / "lab",
        trees={"xen": {"README": "xen\n"}},
        hosts=host,
        jobs=job("env", step("print", "env; echo password=$LAB_SMTP_PASSWORD")),
        lab_keys=LAB_KEYS,
    )
    mail = (
        '\n[mail]\nusername_env = "LAB_SMTP_USER"\npassword_env = "LAB_SMTP_PASSWORD"\n'
        'from = "lab@example.org"\nto = ["list@example.org"]\n'
    )
    lab_dir.toml.write_text(lab_dir.toml.read_text() + mail)
    lab = load_lab(lab_dir.path)
    with Store.open(lab.database_url) as store:
        flight_id = plan_flight(lab, store, "main")
        flight = asyncio.run(Flights(lab, store).run(flight_id))
    assert flight.outcome is Outcome.PASS, flight.to_json()
    [log] = (lab.log_dir / str(flight_id)).glob("*/print.log")
    printed = log.read_text()
    assert "PROXY=http://proxy:3128\n" in printed and "MAKEFLAGS=-j4\n" in printed
    assert f"LABGATE_FLIGHT={flight_id}\n" in printed and "LABGATE_HOST=ssh-a\n" in printed
    assert "password=\n" in printed and SECRET not in printed
    assert "/controller/only/bin" not in printed
    assert "\nPATH=" in printed  # the host's own
