"""A step's environment (labgate.executor.step_environment): a clean one, never the controller's
secrets. The last test runs a whole review flight whose patch prints its environment, through
`labgate serve` (the webhook, the dashboard) and `labgate review run`, and greps every log, page,
API answer and vote for the lab's secrets."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from fakegithub import FakeGitHub, ServerThread
from labgate.config import load_lab
from labgate.executor import BASE_ENV, LocalExecutor, remote_environment, step_environment
from labgate.flight import plan_flight
from labgate.flights import Flights
from labgate.store import Store
from labs import job, step, write_lab
from reviewlab import SECRET_ENV, TOKEN_ENV, make_review_lab
from test_config import HEAD, JOBS, parse, problem_at
from test_github_webhook import SECRET, TOKEN, deliver, labgate, pr_payload, serving

LAB_KEYS = 'env = { MAKEFLAGS = "-j4" }\npass_env = ["PROXY"]'

CONTROLLER = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/lab",
    "LANG": "C.UTF-8",
    "GITHUB_TOKEN": "ghp_controller",
    "PROXY": "http://proxy:3128",
    "SMTP_PASSWORD": "hunter2",
}


def test_a_step_gets_the_base_what_the_lab_passes_and_labgate_vars_only() -> None:
    env = step_environment(
        CONTROLLER,
        {"LABGATE_FLIGHT": "7"},
        {"MAKEFLAGS": "-j4"},
        ["PROXY"],
        frozenset(),
    )
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/lab",
        "LANG": "C.UTF-8",
        "PROXY": "http://proxy:3128",
        "MAKEFLAGS": "-j4",
        "LABGATE_FLIGHT": "7",
    }


def test_a_secret_never_comes_from_the_controller_whatever_lists_it() -> None:
    secrets = frozenset({"SMTP_PASSWORD", "HOME"})
    env = step_environment(CONTROLLER, {}, {}, ["SMTP_PASSWORD"], secrets)
    assert "SMTP_PASSWORD" not in env and "HOME" not in env
    assert env["PATH"] == "/usr/bin:/bin"


def test_labgate_vars_win_and_a_remote_host_keeps_its_own_base() -> None:
    env = step_environment(CONTROLLER, {"LABGATE_JOB": "build"}, {"LABGATE_JOB": "x"}, [], ())
    assert env["LABGATE_JOB"] == "build"
    remote = remote_environment({**env, "MAKEFLAGS": "-j4"})
    assert remote == {"LABGATE_JOB": "build", "MAKEFLAGS": "-j4"}
    assert not set(remote) & set(BASE_ENV)


def test_a_local_step_sees_exactly_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_controller")
    env = step_environment(
        os.environ,
        {"LABGATE_BROKEN_FILE": str(tmp_path / "broken")},
        {},
        [],
        frozenset({"GITHUB_TOKEN"}),
    )
    log = tmp_path / "step.log"
    result = asyncio.run(
        LocalExecutor().run_step("env", cwd=tmp_path, env=env, log=log, timeout=10)
    )
    assert result.exit_status == 0
    printed = dict(line.split("=", 1) for line in log.read_text().splitlines() if "=" in line)
    printed.pop("PWD", None)  # the shell's own
    printed.pop("SHLVL", None)
    printed.pop("_", None)
    assert printed == env


def test_lab_toml_env_and_pass_env_are_checked_by_name() -> None:
    text = HEAD.replace('name = "xen-lab"\n', f'name = "xen-lab"\n{LAB_KEYS}\n', 1) + JOBS

    lab = parse(text)
    assert (dict(lab.step_env), lab.pass_env) == ({"MAKEFLAGS": "-j4"}, ("PROXY",))
    bad = 'env = { LABGATE_JOB = "x" }\npass_env = ["SMTP_PASSWORD", "A-B"]\n'
    mail = (
        '\n[mail]\nusername_env = "SMTP_USER"\npassword_env = "SMTP_PASSWORD"\n'
        'from = "lab@example.org"\nto = ["list@example.org"]\n'
    )
    text = HEAD.replace('name = "xen-lab"\n', 'name = "xen-lab"\n' + bad, 1) + JOBS + mail
    assert "labgate's own" in problem_at(text, "lab.env.LABGATE_JOB").message
    secret = problem_at(text, "lab.pass_env[0]")
    assert "SMTP_PASSWORD is a secret" in secret.message
    assert "not a variable name" in problem_at(text, "lab.pass_env[1]").message


def test_a_flight_step_does_not_see_the_controllers_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab_dir = write_lab(
        tmp_path / "lab",
        trees={"xen": {"README": "xen\n"}},
        jobs=job("env", step("print", "env")),
        lab_keys=LAB_KEYS,
    )
    monkeypatch.setenv("PROXY", "http://proxy:3128")
    monkeypatch.setenv("CONTROLLER_ONLY", "not for steps")
    lab = load_lab(lab_dir.path)
    with Store.open(lab.database_url) as store:
        flight_id = plan_flight(lab, store, "main")
        asyncio.run(Flights(lab, store).run(flight_id))
    [log] = (lab.log_dir / str(flight_id)).glob("*/print.log")
    printed = log.read_text()
    assert "CONTROLLER_ONLY" not in printed
    assert "PROXY=http://proxy:3128\n" in printed and "MAKEFLAGS=-j4\n" in printed
    assert f"LABGATE_FLIGHT={flight_id}\n" in printed and f"PATH={os.environ['PATH']}\n" in printed


# --- a whole review flight, greped for secrets ----------------------------------------------

SMTP_USER, SMTP_PASSWORD = "lab-mailer", "smtp-password-never-shown"
WEB_TOKEN = "web-token-never-shown-0123456789"
MAIL = f"""
[mail]
host = "127.0.0.1"
port = 9
username_env = "LABGATE_TEST_SMTP_USER"
password_env = "LABGATE_TEST_SMTP_PASSWORD"
from = "lab@example.org"
to = ["list@example.org"]

[web]
token = "{WEB_TOKEN}"
"""


def test_a_review_flight_never_shows_the_labs_secrets(tmp_path: Path) -> None:
    controller_env = {
        **os.environ,
        SECRET_ENV: SECRET,
        TOKEN_ENV: TOKEN,
        "LABGATE_TEST_SMTP_USER": SMTP_USER,
        "LABGATE_TEST_SMTP_PASSWORD": SMTP_PASSWORD,
    }
    secrets = [SECRET, TOKEN, SMTP_PASSWORD, WEB_TOKEN]
    github = FakeGitHub(TOKEN)
    with ServerThread(github.app()) as api:
        rl = make_review_lab(tmp_path, f"sqlite:///{tmp_path}/lab.db", server=api.url, extra=MAIL)
        # the patch prints its environment, and asks for the secrets by name too
        repo = rl.repo
        repo.checkout("master")
        repo.git("checkout", "-q", "-B", "pr-5")
        names = f"${TOKEN_ENV} ${SECRET_ENV} $LABGATE_TEST_SMTP_PASSWORD"
        sha = repo.commit("print env", files={"check.sh": f"env\necho {names}\nexit 0\n"})
        repo.git("update-ref", "refs/pull/5/head", sha)
        repo.checkout("master")
        with serving(rl.path, controller_env) as (site, serve):
            answer = deliver(f"{site}/review/github/gh", "pull_request", pr_payload(5, sha))
            assert answer.status_code == 202, answer.text
            done = labgate(rl.path, "review", "run", "--once", env=controller_env)
            assert done.returncode == 0, done.stderr
            seen = [done.stdout, done.stderr, repr(github.statuses), repr(github.comments)]
            logs = [p for p in rl.lab.log_dir.rglob("*") if p.is_file()]
            seen += [log.read_text(errors="replace") for log in logs]
            seen += _every_page(site, sha)
    assert serve.stderr is not None
    served_log = serve.stderr.read()
    seen.append(served_log)
    everything = "\n".join(seen)
    assert "LABGATE_FLIGHT=" in everything and "LABGATE_REV_XEN=" + sha in everything
    for secret in secrets:
        assert secret not in everything


def _every_page(site: str, sha: str) -> list[str]:
    """Every page and API answer about the review flight (and the lists that lead to it)."""
    with httpx.Client(base_url=site, timeout=30) as client:
        [flight] = client.get("/api/flights", params={"blessing": "review"}).json()["items"]
        flight_id = flight["id"]
        detail = client.get(f"/api/flights/{flight_id}").json()
        assert detail["revisions"]["xen"] == sha
        paths = [
            "/flights",
            f"/flights/{flight_id}",
            "/api/flights",
            f"/api/flights/{flight_id}",
            "/hosts",
            "/api/hosts",
            "/branches",
            "/api/branches",
            "/trends",
        ]
        for job_json in detail["jobs"]:
            name = job_json["name"]
            paths += [f"/flights/{flight_id}/jobs/{name}", f"/api/history/main/{name}"]
            for seq in range(len(job_json["steps"])):
                base = f"/flights/{flight_id}/jobs/{name}/steps/{seq}"
                paths += [f"{base}/log", f"{base}/log.txt", f"{base}/log/stream"]
        pages = []
        for path in paths:
            page = client.get(path)
            assert page.status_code == 200, (path, page.status_code)
            pages.append(page.text)
        return pages
