"""``labgate demo``: a small lab made from scratch, and the whole story of a push gate, in seconds.

Two git trees (``xen``, whose ``staging`` branch is ten commits ahead of ``master`` and carries a
planted regression, and ``linux``, pinned at a release branch), a lab.toml with build and test jobs
for two architectures on two local hosts. Then: a baseline flight of ``master``; a flight of
``staging`` that regresses and is not pushed; the bisection naming the planted commit and its
author; a fix landing on staging, tested and pushed.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from labgate.commandline import fail
from labgate.config import load_lab
from labgate.gate import Gate, GateResult
from labgate.git import git
from labgate.progress import FlightProgress
from labgate.store import Store
from labgate.text import flight_table, heading, print_table

LAB_TOML = """\
# A demo lab made by `labgate demo`. Edit it and run `labgate check` to see its job matrix.
[lab]
name = "demo-lab"

[[tree]]
name = "xen"
url = "trees/xen.git"

[[tree]]
name = "linux"
url = "trees/linux.git"

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

[gate]
bisect_parallel = 2
"""

BUILD_SH = """\
#!/bin/sh
# Build "xen" for an architecture into the artifact dir.
set -e
arch="$1"; out="$2"
echo "building xen $(cat xen/VERSION) for $arch ($LABGATE_RUNVAR_KCONFIG)"
sleep 0.2
cp xen/sched.conf "$out/sched.conf"
printf 'xen %s %s\\n' "$(cat xen/VERSION)" "$arch" > "$out/xen-$arch.img"
echo "wrote $out/xen-$arch.img"
"""

HOST_INSTALL = """\
#!/bin/sh
# Install the built hypervisor on the host.
set -e
echo "installing $(cat "$1") on $LABGATE_HOST"
sleep 0.1
"""

GUEST_START = """\
#!/bin/sh
# Start a guest: needs a scheduler time slice above zero.
set -e
echo "starting a guest with linux $(cat "$1")"
slice=$(sed -n 's/^timeslice_ms=//p' artifacts/*/sched.conf)
if [ "$slice" -le 0 ]; then
    echo "guest did not start: the vCPU never got scheduled (timeslice_ms=$slice)"
    exit 1
fi
echo "guest is up"
"""

GUEST_STOP = """\
#!/bin/sh
echo "stopping the guest"
"""

ANN = ("Ann Maintainer", "ann@xen.example")
BOB = ("Bob Developer", "bob@xen.example")
CHEN = ("Chen Contributor", "chen@xen.example")
LINUS = ("Linus", "linus@kernel.example")

STAGING = [
    (ANN, "Bump version to 4.19-rc2", {"VERSION": "4.19-rc2\n"}),
    (CHEN, "docs: describe the credit2 parameters", {"docs/credit2.txt": "timeslice_ms\n"}),
    (CHEN, "tools: add xl sched-credit2 -s", {"tools/xl.txt": "sched-credit2 -s\n"}),
    (ANN, "x86: tidy the cpuid policy", {"arch/x86/cpuid.txt": "policy v2\n"}),
    (
        BOB,
        "sched: make the credit2 time slice configurable",
        {"sched.conf": "timeslice_ms=0\n", "docs/credit2.txt": "timeslice_ms (0: default)\n"},
    ),
    (CHEN, "arm: fix a typo in the GIC driver", {"arch/arm/gic.txt": "gicv3\n"}),
    (ANN, "build: drop an unused variable", {"Makefile": "all:\n"}),
    (CHEN, "tests: more guest-start logging", {"tests/README": "guest-start logs more\n"}),
    (ANN, "x86: fix the build with clang", {"arch/x86/clang.txt": "ok\n"}),
    (CHEN, "Update the CHANGES file", {"CHANGES": "4.19-rc2\n"}),
]
FIX = (
    BOB,
    "sched: a time slice of 0 means the default (10ms)",
    {"sched.conf": "timeslice_ms=10\n"},
)


def _commit(repo: Path, author: tuple[str, str], message: str, files: dict[str, str]) -> str:
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
        "GIT_COMMITTER_NAME": author[0],
        "GIT_COMMITTER_EMAIL": author[1],
    }
    git(["-c", "commit.gpgsign=false", "commit", "-q", "-m", message], cwd=repo, env=env)
    return git(["rev-parse", "HEAD"], cwd=repo)


def _dev_clone(root: Path, name: str) -> Path:
    """An upstream bare repository at trees/<name>.git and a developer's clone at dev/<name>."""
    bare = root / "trees" / f"{name}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    git(["init", "-q", "--bare", "-b", "master", str(bare)])
    dev = root / "dev" / name
    git(["clone", "-q", str(bare), str(dev)])
    return dev


def make_trees(root: Path) -> dict[str, str]:
    """The demo's trees: xen (master, and staging ten commits ahead with a planted regression)
    and linux (a linux-6.6 release branch). Returns the shas the story refers to."""
    xen = _dev_clone(root, "xen")
    git(["checkout", "-q", "-b", "master"], cwd=xen)
    base = _commit(
        xen,
        ANN,
        "Xen 4.19-rc1",
        {
            "VERSION": "4.19-rc1\n",
            "sched.conf": "timeslice_ms=10\n",
            "build.sh": BUILD_SH,
            "tests/host-install": HOST_INSTALL,
            "tests/guest-start": GUEST_START,
            "tests/guest-stop": GUEST_STOP,
        },
    )
    git(["push", "-q", "origin", "master"], cwd=xen)
    shas = {"master": base}
    for i, (author, message, files) in enumerate(STAGING):
        sha = _commit(xen, author, message, files)
        if i == 4:
            shas["planted"] = sha
    git(["push", "-q", "origin", "HEAD:refs/heads/staging"], cwd=xen)
    shas["staging"] = sha

    linux = _dev_clone(root, "linux")
    git(["checkout", "-q", "-b", "master"], cwd=linux)
    _commit(linux, LINUS, "Linux 6.6", {"VERSION": "6.6.0\n"})
    git(["push", "-q", "origin", "master", "master:refs/heads/linux-6.6"], cwd=linux)
    _commit(linux, LINUS, "Linux 6.7-rc1", {"VERSION": "6.7-rc1\n"})
    git(["push", "-q", "origin", "master"], cwd=linux)
    return shas


def land_fix(root: Path) -> str:
    """The developer fixes the regression on staging."""
    xen = root / "dev" / "xen"
    author, message, files = FIX
    sha = _commit(xen, author, message, files)
    git(["push", "-q", "origin", "HEAD:refs/heads/staging"], cwd=xen)
    return sha


def new_demo_dir(directory: Path | None) -> Path:
    """``directory`` (new or empty), or by default a new ``labgate-demo-*`` directory under the
    system's temporary directory: never inside the current directory, which is often a git
    repository the demo's trees and lab would litter."""
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="labgate-demo-")).resolve()
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} exists and is not empty; name a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    return directory.resolve()


def run_demo(directory: Path | None, console: Console) -> int:
    try:
        root = new_demo_dir(directory)
    except FileExistsError as error:
        fail(str(error))
    where = " (a new temporary directory; `labgate demo DIR` puts it elsewhere)"
    console.print(
        f"[bold]Making a demo lab in {root}[/]" + ("" if directory else where), soft_wrap=True
    )
    shas = make_trees(root)
    (root / "lab.toml").write_text(LAB_TOML)
    lab = load_lab(root)
    console.print(
        f"  trees: xen (staging {len(STAGING)} commits ahead of master), linux (pinned at"
        f" linux-6.6); {len(lab.jobs)} jobs on {len(lab.hosts)} local hosts\n"
    )

    def say(line: str) -> None:
        console.print(f"  {line}", highlight=False, markup=False)

    with Store.open(lab.database_url) as store:
        gate = Gate(lab, store, say=say, progress=lambda _what: FlightProgress(console))
        heading(console, "[bold]1. The gate tests staging: a baseline first, then staging")
        first = asyncio.run(gate.cycle("xen-unstable"))
        _show(console, store, first)
        heading(console, "[bold]2. A fix lands on staging; the gate tests it and pushes it")
        fix = land_fix(root)
        say(f"Bob pushed {fix[:12]} to staging: {FIX[1]}")
        second = asyncio.run(gate.cycle("xen-unstable"))
        _show(console, store, second)
    ok = (
        first.action == "not-pushed"
        and bool(first.bisections)
        and first.bisections[0].culprit is not None
        and first.bisections[0].culprit.commit == shas["planted"]
        and second.pushed_revision == fix
    )
    console.print(
        "\nWhat to try next:\n"
        f"  cd {root}\n"
        "  labgate check                          # the job matrix: jobs per branch, hosts\n"
        "  labgate flight list                    # every flight the story ran\n"
        f"  labgate flight show {first.flight}                 # the flight that regressed\n"
        f"  labgate flight log {first.flight} test-amd64-xl    # its logs\n"
        "  labgate history xen-unstable test-amd64-xl guest-start\n"
        "  (cd dev/xen && git commit --allow-empty -m try && git push origin HEAD:staging)\n"
        "  labgate gate xen-unstable --once       # test staging again, push if it passes\n"
        "  labgate serve                          # the dashboard on http://127.0.0.1:8080/",
        soft_wrap=True,
        markup=False,
    )
    return 0 if ok else 1


def _show(console: Console, store: Store, result: GateResult) -> None:
    if result.flight is not None:
        print_table(console, flight_table(store.get_flight(result.flight)))
    if result.report:
        console.print(Panel(result.report.rstrip(), title="report", expand=False))
