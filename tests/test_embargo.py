"""Embargoed flights end to end through the command line (a real lab, real git trees, the
lab's SQLite store): users, groups and tokens; ``flight run --embargo`` only on hosts with the
``embargo-ok`` flag, its logs and artifacts private to the lab's user; lab.toml's branch
embargo and its errors; ``labgate embargo lift`` and ``audit``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from labgate.config import ConfigError, load_lab
from labgate.flight import plan_flight
from labgate.model import EMBARGO_HOST_FLAG
from labgate.store import Store
from labgate.store.users import ANONYMOUS, TOKEN_PREFIX, Sight, Users, Viewer, digest
from labs import LabDir, job, labgate, local_host, step, write_lab

UNTIL = "2099-01-01T00:00:00Z"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ))


@pytest.fixture
def lab(tmp_path: Path) -> LabDir:
    return write_lab(
        tmp_path / "lab",
        trees={"xen": {"README": "xen\n"}},
        hosts=local_host("shared0") + local_host("private0", flags=[EMBARGO_HOST_FLAG]),
        jobs=job("build", step("build", 'echo built > "$LABGATE_ARTIFACTS/xen.img"; echo log')),
    )


def test_users_and_tokens_from_the_command_line(lab: LabDir) -> None:
    added = run(*labgate(lab.path, "user", "add", "alice", "--email", "a@sec.example",
                         "--group", "security", "--admin-of", "security"))  # fmt: skip
    assert added.returncode == 0, added.stderr
    again = run(*labgate(lab.path, "user", "add", "alice"))
    assert again.returncode == 2 and "user 'alice' exists already" in again.stderr
    bad = run(*labgate(lab.path, "user", "add", "-x", "--group", "a b"))
    assert bad.returncode == 2
    created = run(*labgate(lab.path, "token", "create", "alice"))
    assert created.returncode == 0, created.stderr
    token = created.stdout
    assert token.startswith(TOKEN_PREFIX) and token.count("\n") == 1  # the token alone
    token = token.strip()
    listed = json.loads(run(*labgate(lab.path, "user", "list", "--json")).stdout)
    assert listed == [
        {
            "name": "alice",
            "email": "a@sec.example",
            "groups": ["security"],
            "admin_of": ["security"],
            "tokens": 1,
            "created": listed[0]["created"],
        }
    ]
    with Store.open(load_lab(lab.path).database_url) as store:
        users = Users(store.engine)
        assert users.viewer_for_token(token) == Viewer(
            "alice", frozenset({"security"}), admin_of=frozenset({"security"})
        )
        stored = store.engine.connect().exec_driver_sql("SELECT digest FROM api_token").scalar()
        assert stored == digest(token) and token not in str(stored)  # only its hash is kept
    unknown = run(*labgate(lab.path, "token", "create", "nobody"))
    assert unknown.returncode == 2 and "no user 'nobody'" in unknown.stderr
    revoked = run(*labgate(lab.path, "token", "revoke", "alice"))
    assert revoked.returncode == 0 and "1 token(s) of alice revoked" in revoked.stderr
    with Store.open(load_lab(lab.path).database_url) as store:
        assert Users(store.engine).viewer_for_token(token) is None

    def groups() -> list[tuple[list[str], list[str]]]:
        listed = json.loads(run(*labgate(lab.path, "user", "list", "--json")).stdout)
        return [(u["groups"], u["admin_of"]) for u in listed]

    joined = run(*labgate(lab.path, "user", "join", "alice", "xsa-468"))
    assert joined.returncode == 0 and "alice is a member of xsa-468" in joined.stderr
    assert groups() == [(["security", "xsa-468"], ["security"])]
    again = run(*labgate(lab.path, "user", "join", "alice", "xsa-468"))
    assert again.returncode == 0 and "a member of xsa-468 already" in again.stderr
    left = run(*labgate(lab.path, "user", "leave", "alice", "security"))
    assert left.returncode == 0 and groups() == [(["xsa-468"], [])]
    not_in = run(*labgate(lab.path, "user", "leave", "alice", "security"))
    assert not_in.returncode == 2 and "user 'alice' is not in group 'security'" in not_in.stderr
    assert run(*labgate(lab.path, "token", "create", "alice")).returncode == 0
    removed = run(*labgate(lab.path, "user", "remove", "alice"))
    assert removed.returncode == 0 and "(1 live token(s) revoked)" in removed.stderr
    assert groups() == []
    gone = run(*labgate(lab.path, "user", "join", "alice", "security"))
    assert gone.returncode == 2 and "no user 'alice'" in gone.stderr


def test_an_embargoed_flight_runs_only_on_embargo_ok_hosts_and_keeps_its_files_private(
    lab: LabDir,
) -> None:
    proc = run(*labgate(lab.path, "flight", "run", lab.branch, "--embargo", "security",
                        "--until", UNTIL, "--json"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    flight = json.loads(proc.stdout)
    assert [j["host"] for j in flight["jobs"]] == ["private0"]
    assert json.loads(proc.stdout)["jobs"][0]["outcome"] == "pass"
    loaded = load_lab(lab.path)
    with Store.open(loaded.database_url) as store:
        users = Users(store.engine)
        embargo = users.embargo(flight["id"])
        assert embargo is not None and embargo.group == "security"
        assert embargo.until == datetime(2099, 1, 1, tzinfo=UTC)
        assert EMBARGO_HOST_FLAG in store.flight_jobs(flight["id"])[0].spec.requires
        assert not users.may_see(ANONYMOUS, flight["id"])
        assert users.may_see(Viewer("alice", frozenset({"security"})), flight["id"])
    for root in (loaded.log_dir, loaded.artifacts_dir, loaded.work_dir):
        mode = stat.S_IMODE((root / str(flight["id"])).stat().st_mode)
        assert mode == 0o700, (root, oct(mode))
    assert (loaded.artifacts_dir / str(flight["id"]) / "build" / "xen.img").exists()
    public = json.loads(run(*labgate(lab.path, "flight", "run", lab.branch, "--json")).stdout)
    assert public["jobs"][0]["host"] in ("shared0", "private0")
    with Store.open(loaded.database_url) as store:
        assert Users(store.engine).may_see(ANONYMOUS, public["id"])


def test_without_an_embargo_ok_host_the_embargoed_job_never_runs(tmp_path: Path) -> None:
    lab = write_lab(tmp_path / "lab", trees={"xen": {"a": "1\n"}}, hosts=local_host("shared0"),
                    jobs=job("build", step("build", "true")))  # fmt: skip
    proc = run(*labgate(lab.path, "flight", "run", lab.branch, "--embargo", "security",
                        "--until", UNTIL, "--json"))  # fmt: skip
    flight = json.loads(proc.stdout)
    assert flight["jobs"][0]["outcome"] == "broken" and flight["jobs"][0]["host"] is None
    assert flight["jobs"][0]["reason"] == "no host of the lab has the flags it requires"


def test_embargo_options_are_checked(lab: LabDir) -> None:
    alone = run(*labgate(lab.path, "flight", "run", lab.branch, "--embargo", "security"))
    assert alone.returncode == 2 and "--embargo GROUP and --until TIME go together" in alone.stderr
    naive = run(*labgate(lab.path, "flight", "run", lab.branch, "--embargo", "security",
                         "--until", "2099-01-01T00:00:00"))  # fmt: skip
    assert naive.returncode == 2
    assert '--until: "2099-01-01T00:00:00" is not an RFC 3339 time with an offset' in naive.stderr
    real = run(*labgate(lab.path, "flight", "run", lab.branch, "--embargo", "security",
                        "--until", UNTIL, "--blessing", "real"))  # fmt: skip
    assert real.returncode == 2
    assert "--embargo takes an adhoc or play flight, not real" in real.stderr


def test_a_branch_embargo_in_lab_toml_embargoes_every_flight_of_the_branch(lab: LabDir) -> None:
    text = lab.toml.read_text().replace(
        '[[branch]]\nname = "main"\ntree = "xen"\n',
        '[[branch]]\nname = "main"\ntree = "xen"\n'
        'embargo = { group = "security", until = 2099-01-01T01:00:00+01:00 }\n',
    )
    lab.toml.write_text(text)
    loaded = load_lab(lab.path)
    assert loaded.branches["main"].embargo is not None
    with Store.open(loaded.database_url) as store:
        flight_id = plan_flight(loaded, store, "main")
        embargo = Users(store.engine).embargo(flight_id)
        assert embargo is not None and embargo.until == datetime(2099, 1, 1, tzinfo=UTC)
        assert store.flight_jobs(flight_id)[0].spec.requires == (EMBARGO_HOST_FLAG,)
    lab.toml.write_text(text.replace("2099-01-01T01:00:00+01:00", '"next week"'))
    with pytest.raises(ConfigError) as error:
        load_lab(lab.path)
    assert "branch[0].embargo.until" in str(error.value)
    assert '"next week" is not an RFC 3339 time with an offset' in str(error.value)


def test_lift_and_audit_from_the_command_line(lab: LabDir) -> None:
    proc = run(*labgate(lab.path, "flight", "run", lab.branch, "--embargo", "security",
                        "--until", UNTIL, "--json"))  # fmt: skip
    flight_id = json.loads(proc.stdout)["id"]
    loaded = load_lab(lab.path)
    with Store.open(loaded.database_url) as store:
        Users(store.engine).add("alice", groups=["security"])
        users = Users(store.engine)
        users.record_view(Viewer("alice"), flight_id, "security", f"/flights/{flight_id}")
    audit = json.loads(run(*labgate(lab.path, "embargo", "audit", "security", "--json")).stdout)
    assert [(a["user"], a["flight"], a["what"]) for a in audit] == [
        ("alice", flight_id, f"/flights/{flight_id}")
    ]
    neither = run(*labgate(lab.path, "embargo", "lift"))
    assert neither.returncode == 2 and "give --group G or --flight N" in neither.stderr
    lifted = run(*labgate(lab.path, "embargo", "lift", "--group", "security"))
    assert lifted.returncode == 0 and f"1 flight(s) public now: {flight_id}" in lifted.stdout
    with Store.open(loaded.database_url) as store:
        assert Users(store.engine).sight(ANONYMOUS, flight_id) == Sight(None)


def test_a_private_tree_is_checked_out_only_by_embargoed_flights_of_the_branches_using_it(
    tmp_path: Path,
) -> None:
    lab = write_lab(
        tmp_path / "lab",
        trees={"xen": {"README": "xen\n"}, "xsa": {"fix.patch": "the undisclosed fix\n"}},
        hosts=local_host("shared0") + local_host("private0", flags=[EMBARGO_HOST_FLAG]),
        jobs=job("build", step("build", "ls > trees.txt; cat trees.txt")),
    )
    xsa_url = f'url = "{lab.trees["xsa"].path}"\n'
    text = lab.toml.read_text().replace(xsa_url, xsa_url + "private = true\n")
    unembargoed = '\n[[branch]]\nname = "security"\ntree = "xsa"\n'
    lab.toml.write_text(text + unembargoed)
    with pytest.raises(ConfigError) as error:
        load_lab(lab.path)
    assert "branch[1]: \"security\" tests or pins the private tree \"xsa\" but is not under " \
        "embargo" in str(error.value)  # fmt: skip
    lab.toml.write_text(
        text + unembargoed + f'embargo = {{ group = "security", until = "{UNTIL}" }}\n'
    )
    loaded = load_lab(lab.path)
    assert loaded.revision_refs("main") == {"xen": "staging"}  # no private tree
    assert set(loaded.revision_refs("security")) == {"xen", "xsa"}

    public = run(*labgate(lab.path, "flight", "run", "main", "--json"))
    assert public.returncode == 0, public.stderr
    public_flight = json.loads(public.stdout)
    assert set(public_flight["revisions"]) == {"xen"}
    public_log = loaded.log_dir / public_flight["jobs"][0]["steps"][0]["log"]
    assert "xen" in public_log.read_text() and "xsa" not in public_log.read_text()
    forced = run(*labgate(lab.path, "flight", "run", "main", "--rev", "xsa=HEAD"))
    assert forced.returncode == 2
    assert "tree 'xsa' is private: only a flight under embargo may check it out" in forced.stderr

    secret = run(*labgate(lab.path, "flight", "run", "security", "--json"))
    assert secret.returncode == 0, secret.stderr
    flight = json.loads(secret.stdout)
    assert set(flight["revisions"]) == {"xen", "xsa"}
    assert [(j["host"], j["outcome"]) for j in flight["jobs"]] == [("private0", "pass")]
    log = loaded.log_dir / flight["jobs"][0]["steps"][0]["log"]
    assert "xsa" in log.read_text()  # the embargoed job had the private tree
    mirror = loaded.mirror_dir
    private = [p for p in mirror.iterdir() if "xsa" in p.name]
    assert private and stat.S_IMODE(private[0].stat().st_mode) == 0o700
    with Store.open(loaded.database_url) as store:
        assert not Users(store.engine).may_see(ANONYMOUS, flight["id"])
        assert Users(store.engine).may_see(ANONYMOUS, public_flight["id"])
