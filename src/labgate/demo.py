"""``labgate demo``: a small lab made from scratch, and a flight run in it, in seconds.

Two git trees with history (``xen`` with a ``staging`` branch ahead of ``master``, and ``linux``
pinned at a release branch), a lab.toml with build and test jobs for two architectures on two
local hosts, then a flight of the staging revision with live progress.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from rich.console import Console

from labgate.config import load_lab
from labgate.flight import FlightRun, plan_flight
from labgate.git import git
from labgate.model import Blessing, Outcome
from labgate.progress import FlightProgress
from labgate.store import Store
from labgate.text import flight_table

LAB_TOML = """\
# A demo lab made by `labgate demo`. Edit it and run `labgate check` to see the plan.
[lab]
name = "demo-lab"

[[tree]]
name = "xen"
url = "trees/xen"

[[tree]]
name = "linux"
url = "trees/linux"

[[branch]]
name = "xen-unstable"
tree = "xen"
staging = "staging"
tested = "master"
pin = { linux = "linux-6.6" }

[[host]]
name = "italia0"
flags = ["arch-amd64", "cpu-intel"]
slots = 2

[[host]]
name = "rochester0"
flags = ["arch-arm64"]
slots = 2

[[job]]
name = "build-{arch}"
matrix = { arch = ["amd64", "arm64"] }
requires = ["arch-{arch}"]
runvars = { kconfig = "defconfig" }
[[job.step]]
name = "build"
run = "./xen/build.sh {arch} \\"$LABGATE_ARTIFACTS\\""
timeout = 60

[[job]]
name = "test-{arch}-xl"
matrix = { arch = ["amd64", "arm64"] }
requires = ["arch-{arch}"]
depends = ["build-{arch}"]
exclusive = true
[[job.step]]
name = "host-install"
run = "./xen/tests/host-install artifacts/build-{arch}/xen-{arch}.img"
timeout = 60
[[job.step]]
name = "guest-start"
run = "./xen/tests/guest-start linux/VERSION"
timeout = 60
[[job.step]]
name = "guest-stop"
run = "./xen/tests/guest-stop"
timeout = 60
"""

BUILD_SH = """\
#!/bin/sh
# Build "xen" for an architecture into the artifact dir.
set -e
arch="$1"; out="$2"
echo "building xen $(cat "$(dirname "$0")/VERSION") for $arch ($LABGATE_RUNVAR_KCONFIG)"
sleep 0.4
printf 'xen %s %s\\n' "$(cat "$(dirname "$0")/VERSION")" "$arch" > "$out/xen-$arch.img"
echo "wrote $out/xen-$arch.img"
"""

HOST_INSTALL = """\
#!/bin/sh
# Install the built hypervisor on the host.
set -e
echo "installing $(cat "$1") on $LABGATE_HOST"
sleep 0.3
"""

GUEST_START = """\
#!/bin/sh
set -e
echo "starting a guest with linux $(cat "$1")"
sleep 0.3
echo "guest is up"
"""

GUEST_STOP = """\
#!/bin/sh
echo "stopping the guest"
sleep 0.2
"""

AUTHORS = [
    ("Ann Maintainer", "ann@xen.example"),
    ("Bob Developer", "bob@xen.example"),
    ("Chen Contributor", "chen@xen.example"),
]


def _commit(repo: Path, files: dict[str, str], message: str, author: tuple[str, str]) -> str:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if content.startswith("#!"):
            path.chmod(0o755)
    git(["add", "-A"], cwd=repo)
    env = {
        "GIT_AUTHOR_NAME": author[0],
        "GIT_AUTHOR_EMAIL": author[1],
        "GIT_COMMITTER_NAME": "labgate demo",
        "GIT_COMMITTER_EMAIL": "demo@labgate.example",
    }
    git(["commit", "-q", "-m", message], cwd=repo, env=env)
    return git(["rev-parse", "HEAD"], cwd=repo)


def _init(repo: Path) -> None:
    repo.mkdir(parents=True)
    git(["init", "-q", "-b", "master", str(repo)])


def make_trees(root: Path) -> None:
    """The demo's git trees: xen with master and a staging branch two commits ahead, linux with
    a linux-6.6 branch."""
    xen = root / "trees" / "xen"
    _init(xen)
    _commit(
        xen,
        {
            "VERSION": "4.19-rc1\n",
            "build.sh": BUILD_SH,
            "tests/host-install": HOST_INSTALL,
            "tests/guest-start": GUEST_START,
            "tests/guest-stop": GUEST_STOP,
        },
        "Initial import of the hypervisor",
        AUTHORS[0],
    )
    _commit(xen, {"README": "Xen (demo)\n"}, "docs: add a README", AUTHORS[1])
    git(["branch", "staging"], cwd=xen)
    git(["checkout", "-q", "staging"], cwd=xen)
    _commit(xen, {"VERSION": "4.19-rc2\n"}, "Bump version to 4.19-rc2", AUTHORS[0])
    _commit(xen, {"CHANGES": "sched: credit2 tweaks\n"}, "sched: tune credit2", AUTHORS[2])
    git(["checkout", "-q", "master"], cwd=xen)

    linux = root / "trees" / "linux"
    _init(linux)
    _commit(linux, {"VERSION": "6.6.0\n"}, "Linux 6.6", ("Linus", "linus@kernel.example"))
    git(["branch", "linux-6.6"], cwd=linux)
    _commit(linux, {"VERSION": "6.7-rc1\n"}, "Linux 6.7-rc1", ("Linus", "linus@kernel.example"))


def new_demo_dir(directory: Path | None) -> Path:
    if directory is not None:
        if directory.exists() and any(directory.iterdir()):
            raise FileExistsError(f"{directory} exists and is not empty; name a new directory")
        directory.mkdir(parents=True, exist_ok=True)
        return directory.resolve()
    base = Path.cwd() / "labgate-demo"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"labgate-demo-{n}")
    candidate.mkdir(parents=True)
    return candidate


def run_demo(directory: Path | None, console: Console) -> int:
    try:
        root = new_demo_dir(directory)
    except FileExistsError as error:
        console.print(f"labgate: {error}")
        return 2
    console.print(f"[bold]Making a demo lab in {root}[/]")
    make_trees(root)
    (root / "lab.toml").write_text(LAB_TOML)
    lab = load_lab(root)
    console.print(
        "  trees xen (staging 2 commits ahead of master) and linux (pinned at linux-6.6);"
        f" {len(lab.jobs)} jobs on {len(lab.hosts)} local hosts"
    )
    with Store.open(lab.database_url) as store:
        flight_id = plan_flight(lab, store, "xen-unstable", blessing=Blessing.ADHOC)
        console.print(f"[bold]Running flight {flight_id}[/] of branch xen-unstable at staging")

        async def go() -> object:
            with FlightProgress(console) as progress:
                return await FlightRun(lab, store, flight_id, progress=progress).run()

        asyncio.run(go())
        result = store.get_flight(flight_id)
    console.print(flight_table(result))
    rel = os.path.relpath(root)
    console.print(
        f"\nFlight {flight_id}: [bold]{result.outcome}[/]. What to try next:\n"
        f"  cd {rel}\n"
        "  labgate check                       # the plan: jobs per branch, hosts\n"
        f"  labgate flight show {flight_id}                # jobs, steps, hosts, durations\n"
        f"  labgate flight log {flight_id} test-amd64-xl   # a job's step logs\n"
        "  labgate flight run xen-unstable --rev xen=master --job 'test-*'\n"
        "  labgate flight list --json"
    )
    return 0 if result.outcome is Outcome.PASS else 1
