"""Processes racing on one store: several commands started at once on a fresh store all open it
(one creates the schema, the others wait for it), and a gate that finds its branch held says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from labgate.store import Store
from labgate.store.core import head_revision
from labs import job, labgate, step, write_lab

RACERS = 6


def _all_at_once(commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    done = []
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return done


def test_commands_started_at_once_on_a_fresh_sqlite_store_all_work(tmp_path: Path) -> None:
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=job("a", step("s", "true")))
    assert not (lab_dir.path / "labgate.db").exists()
    for proc in _all_at_once([labgate(lab_dir.path, "flight", "list")] * RACERS):
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr


def test_stores_opened_at_once_on_a_fresh_database_all_open(database_url: str) -> None:
    opener = "import sys; from labgate.store import Store; Store.open(sys.argv[1]).close()"
    for proc in _all_at_once([[sys.executable, "-c", opener, database_url]] * RACERS):
        assert proc.returncode == 0, proc.stderr
    with Store.open(database_url) as store, store.engine.connect() as conn:
        versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    assert versions == [(head_revision(),)]


def test_a_gate_finding_its_branch_held_says_so(tmp_path: Path) -> None:
    lab_dir = write_lab(tmp_path / "lab", trees={"t": {"f": "x"}}, jobs=job("a", step("s", "true")))
    with Store.open(f"sqlite:///{lab_dir.path}/labgate.db") as store:
        assert store.acquire_gate("main", "elsewhere:4242", 600)
    proc = subprocess.run(
        labgate(lab_dir.path, "gate", "main", "--once"), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "main: another gate process holds this branch" in proc.stdout + proc.stderr
