"""Host lifecycle on local hosts: quarantine after N broken jobs in a row, health checks, install
before exclusive jobs, console capture, reservations, and the `labgate host` commands."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from labgate.config import ConfigError, Lab, load_lab
from labgate.flight import plan_flight
from labgate.flights import Flights
from labgate.hosts.cli import parse_duration
from labgate.model import FlightResult, Lifecycle, Outcome
from labgate.store import Store
from labgate.store.hosts import HostRegistry, HostStateError
from labs import job, labgate, step, toml_str, write_lab

BROKEN = 'echo "pdu did not answer" > "$LABGATE_BROKEN_FILE"; exit 1'


def host(name: str, **keys: object) -> str:
    lines = [f"[[host]]\nname = {toml_str(name)}\nflags = []"]
    for key, value in keys.items():
        lines.append(f"{key} = {toml_str(value) if isinstance(value, str) else value}")
    return "\n".join(lines) + "\n"


def make(tmp_path: Path, hosts: str, jobs: str, database: str | None = None) -> Lab:
    lab_dir = write_lab(
        tmp_path / "lab",
        trees={"xen": {"VERSION": "1\n"}},
        jobs=jobs,
        hosts=hosts,
        database=database,
    )
    return load_lab(lab_dir.path)


def run(lab: Lab) -> FlightResult:
    with Store.open(lab.database_url) as store:
        fid = plan_flight(lab, store, "main")
        return asyncio.run(Flights(lab, store).run(fid))


def cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(labgate(lab.dir, *args), capture_output=True, text=True, check=False)


def test_n_broken_jobs_in_a_row_quarantine_the_host(tmp_path: Path, database_url: str) -> None:
    # three independent jobs on a host of one slot: they run one after the other
    jobs = "".join(job(f"j{i}", step("s", BROKEN)) for i in range(3))
    lab = make(tmp_path, host("h0", quarantine_after=2), jobs, database_url)
    flight = run(lab)
    outcomes = [(j.name, j.outcome) for j in flight.jobs]
    assert outcomes == [(f"j{i}", Outcome.BROKEN) for i in range(3)]
    assert "pdu did not answer" in (flight.job("j0").reason or "")
    assert "h0 quarantined: 2 broken jobs in a row" in (flight.job("j2").reason or "")
    shown = json.loads(cli(lab, "host", "show", "h0", "--json").stdout)
    assert shown["state"] == "quarantined"
    assert shown["quarantined"].startswith("2 broken jobs in a row (last: step s: pdu did not")
    kinds = [e["kind"] for e in shown["history"]]
    assert kinds == ["quarantine", "job", "job"]
    released = cli(lab, "host", "release", "h0")
    assert released.returncode == 0 and "ended: quarantine" in released.stdout
    listed = json.loads(cli(lab, "host", "list", "--json").stdout)
    assert [(h["name"], h["state"], h["broken_streak"]) for h in listed] == [
        ("h0", "in service", 0)
    ]


def test_a_pass_ends_the_broken_streak(tmp_path: Path) -> None:
    lab = make(tmp_path, host("h0", quarantine_after=2), job("a", step("s", BROKEN)))
    with Store.open(lab.database_url) as store:
        registry = HostRegistry(store.engine)
        assert registry.record_job("h0", 1, 1, Outcome.BROKEN, "x", quarantine_after=2) is None
        assert registry.record_job("h0", 2, 1, Outcome.FAIL, "y", quarantine_after=2) is None
        assert registry.record_job("h0", 3, 1, Outcome.BROKEN, "z", quarantine_after=2) is None
        why = registry.record_job("h0", 4, 1, Outcome.BROKEN, "w", quarantine_after=2)
        assert why == "2 broken jobs in a row (last: w)"
        assert registry.unavailable() == {"h0": f"quarantined: {why}"}


def test_failing_health_check_quarantines_the_host_and_the_job_runs_elsewhere(
    tmp_path: Path,
) -> None:
    hosts = host("a-sick", health="echo checking; echo disk full >&2; exit 1") + host(
        "b-well", health='test -n "$LABGATE_HOST"'
    )
    lab = make(tmp_path, hosts, job("t", step("s", 'echo "on $LABGATE_HOST"')))
    flight = run(lab)
    t = flight.job("t")
    assert (t.outcome, t.host) == (Outcome.PASS, "b-well")
    with Store.open(lab.database_url) as store:
        away = HostRegistry(store.engine).unavailable()
    assert away == {
        "a-sick": "quarantined: health check failed: 'echo checking; echo disk full >&2; exit 1'"
        " exited 1: disk full"
    }


def test_install_runs_before_an_exclusive_job_only(tmp_path: Path) -> None:
    installs = tmp_path / "installs"
    hosts = host("h0", slots=2, install=f'echo "$LABGATE_HOST" >> {installs}')
    jobs = job("build", step("s", "true")) + job("test", step("s", "true"), depends=["build"])
    jobs = jobs.replace('name = "test"\n', 'name = "test"\nexclusive = true\n')
    flight = run(make(tmp_path, hosts, jobs))
    assert flight.outcome is Outcome.PASS
    assert installs.read_text() == "h0\n"


def test_console_is_captured_into_the_job_logs(tmp_path: Path) -> None:
    fifo = tmp_path / "console-up"
    os.mkfifo(fifo)
    console = f'echo "console of $LABGATE_HOST: login:"; echo up > {fifo}; exec sleep 300'
    lab = make(tmp_path, host("h0", console=console), job("t", step("s", f"cat {fifo}")))
    flight = run(lab)
    assert flight.outcome is Outcome.PASS
    log = lab.log_dir / str(flight.id) / "t" / "console.log"
    assert log.read_text() == "console of h0: login:\n"


def test_reservations_keep_jobs_off_until_released(tmp_path: Path) -> None:
    lab = make(tmp_path, host("h0"), job("t", step("s", "true")))
    reserved = cli(
        lab, "host", "reserve", "h0", "--for", "2h", "--reason", "bisecting by hand", "--as", "ian"
    )
    assert reserved.returncode == 0, reserved.stderr
    assert "reserved by ian for 2h" in reserved.stdout
    other = cli(lab, "host", "reserve", "h0", "--reason", "mine", "--as", "george")
    assert other.returncode == 1 and "reserved by ian (bisecting by hand)" in other.stderr
    flight = run(lab)
    assert flight.job("t").outcome is Outcome.BROKEN
    assert "h0 reserved by ian: bisecting by hand" in (flight.job("t").reason or "")
    listed = cli(lab, "host", "list")
    assert "reserved" in listed.stdout and "ian: bisecting by hand" in listed.stdout
    assert cli(lab, "host", "release", "h0").returncode == 0
    assert run(lab).outcome is Outcome.PASS


def test_an_expired_reservation_frees_the_host(tmp_path: Path) -> None:
    lab = make(tmp_path, host("h0"), job("t", step("s", "true")))
    with Store.open(lab.database_url) as store:
        registry = HostRegistry(store.engine)
        registry.reserve("h0", "ian", "short", timedelta(seconds=-1))
        assert registry.unavailable() == {}
        registry.reserve("h0", "george", "now mine", None)  # ian's time is up
        with pytest.raises(HostStateError):
            registry.reserve("h0", "ian", "again", None)


def test_quarantine_by_hand_power_and_check_commands(tmp_path: Path) -> None:
    hosts = host("h0", power_cycle='echo "cycling $LABGATE_HOST"', health="exit 3")
    lab = make(tmp_path, hosts, job("t", step("s", "true")))
    power = cli(lab, "host", "power", "h0", "cycle")
    assert (power.returncode, power.stdout) == (0, "cycling h0\n")
    missing = cli(lab, "host", "power", "h0", "off")
    assert missing.returncode == 2 and "no power_off command" in missing.stderr
    check = cli(lab, "host", "check", "h0")
    assert check.returncode == 1 and "quarantined: health check failed" in check.stdout
    assert cli(lab, "host", "release", "h0").returncode == 0
    hand = cli(lab, "host", "quarantine", "h0", "--reason", "fan noise")
    assert hand.returncode == 0
    shown = cli(lab, "host", "show", "h0")
    assert "quarantined since" in shown.stdout and "fan noise" in shown.stdout
    assert cli(lab, "host", "show", "nope").returncode == 2


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_host_classes_give_their_keys_to_their_hosts(tmp_path: Path) -> None:
    classes = (
        '[[host_class]]\nname = "cubietruck"\nflags = ["arch-armhf", "equiv-cubietruck"]\n'
        'health = "true"\npower_cycle = "pdu-ctl cycle"\nquarantine_after = 2\n'
    )
    hosts = (
        classes
        + '[[host]]\nname = "picasso"\nclass = "cubietruck"\nflags = ["fast"]\n'
        + '[[host]]\nname = "braque"\nclass = "cubietruck"\npower_cycle = "other"\n'
    )
    lab = make(tmp_path, hosts, job("t", step("s", "true")))
    picasso, braque = lab.hosts
    assert picasso.flags == {"arch-armhf", "equiv-cubietruck", "fast"}
    assert picasso.lifecycle == Lifecycle(
        health="true", power_cycle="pdu-ctl cycle", quarantine_after=2
    )
    assert braque.lifecycle.power_cycle == "other"
    assert braque.flags == {"arch-armhf", "equiv-cubietruck"}


def test_an_unknown_host_class_is_named(tmp_path: Path) -> None:
    hosts = '[[host]]\nname = "h0"\nclass = "cubie"\nflags = []\n'
    with pytest.raises(ConfigError) as info:
        make(tmp_path, hosts, job("t", step("s", "true")))
    assert "host[0].class: no [[host_class]] named 'cubie'" in str(info.value)
