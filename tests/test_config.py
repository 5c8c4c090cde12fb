"""lab.toml loading (labgate.config): the example of the contract, defaults, and every problem
with its exact key path and a fix."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labgate.config import (
    ConfigError,
    Lab,
    Problem,
    UnknownNameError,
    load_lab,
    parse_lab,
    render_matrix,
)
from labgate.model import AllowedFailure, JobSpec, StepSpec

LAB_DIR = Path("/srv/lab")
FILE = Path("lab.toml")

HEAD = """
[lab]
name = "xen-lab"

[[tree]]
name = "xen"
url = "https://xenbits.example/xen.git"

[[tree]]
name = "linux"
url = "repos/linux.git"

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
"""

JOBS = """
[[job]]
name = "build-{arch}"
matrix = { arch = ["amd64", "arm64"] }
requires = ["arch-{arch}"]
runvars = { kconfig = "defconfig" }
[[job.step]]
name = "build"
run = "make -C xen dist && cp -r dist \\"$LABGATE_ARTIFACTS/\\""
timeout = 3600

[[job]]
name = "test-{arch}-xl"
matrix = { arch = ["amd64", "arm64"] }
requires = ["arch-{arch}"]
depends = ["build-{arch}"]
exclusive = true
[[job.step]]
name = "guest-start"
run = "./artifacts/build-{arch}/dist/install.sh && ./tests/guest-start"
"""

EXAMPLE = HEAD + JOBS


def parse(text: str) -> Lab:
    return parse_lab(text, file=FILE, lab_dir=LAB_DIR)


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


def problem_at(text: str, key: str) -> Problem:
    """The one problem at ``key``; fails listing all of them otherwise."""
    found = problems(text)
    at = [p for p in found if p.key == key]
    assert len(at) == 1, "\n".join(str(p) for p in found)
    assert at[0].fix, at[0]
    assert at[0].file == FILE
    return at[0]


def job(name: str, run: str = "true", extra: str = "") -> str:
    return f'\n[[job]]\nname = "{name}"\n{extra}\n[[job.step]]\nname = "s"\nrun = "{run}"\n'


# --- the example and defaults ---------------------------------------------------------------


def test_example_parses_to_the_expanded_jobs() -> None:
    lab = parse(EXAMPLE)
    build = 'make -C xen dist && cp -r dist "$LABGATE_ARTIFACTS/"'
    assert lab.jobs == (
        JobSpec(
            name="build-amd64",
            steps=(StepSpec("build", build, 3600),),
            requires=("arch-amd64",),
            runvars=(("arch", "amd64"), ("kconfig", "defconfig")),
        ),
        JobSpec(
            name="build-arm64",
            steps=(StepSpec("build", build, 3600),),
            requires=("arch-arm64",),
            runvars=(("arch", "arm64"), ("kconfig", "defconfig")),
        ),
        JobSpec(
            name="test-amd64-xl",
            steps=(
                StepSpec(
                    "guest-start", "./artifacts/build-amd64/dist/install.sh && ./tests/guest-start"
                ),
            ),
            requires=("arch-amd64",),
            depends=("build-amd64",),
            runvars=(("arch", "amd64"),),
            exclusive=True,
        ),
        JobSpec(
            name="test-arm64-xl",
            steps=(
                StepSpec(
                    "guest-start", "./artifacts/build-arm64/dist/install.sh && ./tests/guest-start"
                ),
            ),
            requires=("arch-arm64",),
            depends=("build-arm64",),
            runvars=(("arch", "arm64"),),
            exclusive=True,
        ),
    )


def test_example_lab_values_and_defaults() -> None:
    lab = parse(EXAMPLE)
    assert lab.name == "xen-lab"
    assert lab.dir == LAB_DIR
    assert lab.file == LAB_DIR / "lab.toml"
    assert lab.database_url == "sqlite:////srv/lab/labgate.db"
    assert lab.log_dir == LAB_DIR / "logs"
    assert lab.work_dir == LAB_DIR / "work"
    assert lab.artifacts_dir == LAB_DIR / "artifacts"
    assert lab.mirror_dir == LAB_DIR / "mirrors"
    assert lab.poll_interval == 60
    assert lab.trees["xen"].url == "https://xenbits.example/xen.git"
    assert lab.trees["linux"].url == "/srv/lab/repos/linux.git"
    branch = lab.branch("xen-unstable")
    assert (branch.tree, branch.staging, branch.tested) == ("xen", "staging", "master")
    assert branch.pin_dict == {"linux": "linux-6.6"}
    assert [(h.name, h.flags, h.slots, h.executor) for h in lab.hosts] == [
        ("italia0", frozenset({"arch-amd64", "cpu-intel"}), 2, "local"),
        ("rochester0", frozenset({"arch-arm64"}), 1, "local"),
    ]
    assert lab.jobs_for("xen-unstable") == lab.jobs


def test_lab_optional_keys() -> None:
    text = EXAMPLE.replace(
        'name = "xen-lab"',
        'name = "xen-lab"\ndatabase = "postgresql+psycopg://lab@db/lab"\nlogs = "/var/log/lab"\n'
        'work = "w"\nartifacts = "../art"\nmirrors = "m"\npoll_interval = 5.5',
    )
    lab = parse(text)
    assert lab.database_url == "postgresql+psycopg://lab@db/lab"
    assert lab.log_dir == Path("/var/log/lab")
    assert lab.work_dir == LAB_DIR / "w"
    assert lab.artifacts_dir == Path("/srv/art")
    assert lab.mirror_dir == LAB_DIR / "m"
    assert lab.poll_interval == 5.5


@pytest.mark.parametrize(
    ("database", "url"),
    [
        ("sqlite:///state/lab.db", "sqlite:////srv/lab/state/lab.db"),
        ("sqlite:////abs/lab.db", "sqlite:////abs/lab.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
    ],
)
def test_relative_sqlite_database_is_taken_from_the_lab_dir(database: str, url: str) -> None:
    text = EXAMPLE.replace('name = "xen-lab"', f'name = "xen-lab"\ndatabase = "{database}"')
    assert parse(text).database_url == url


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        ("git@github.com:xen/xen.git", "git@github.com:xen/xen.git"),
        ("file:///srv/xen.git", "file:///srv/xen.git"),
        ("/abs/xen.git", "/abs/xen.git"),
        ("../xen.git", "/srv/xen.git"),
        ("./xen", "/srv/lab/xen"),
    ],
)
def test_tree_urls(url: str, resolved: str) -> None:
    text = EXAMPLE.replace("https://xenbits.example/xen.git", url)
    assert parse(text).trees["xen"].url == resolved


def test_revision_tuple_refs_unpinned_tree_at_head() -> None:
    text = EXAMPLE.replace('pin = { linux = "linux-6.6" }', "") + (
        '\n[[tree]]\nname = "qemu"\nurl = "/q"\n'
        '\n[[branch]]\nname = "linux-next"\ntree = "linux"\nstaging = "next"\n'
        'pin = { xen = "stable-4.19" }\n'
    )
    lab = parse(text)
    assert lab.revision_refs("xen-unstable") == {"xen": "staging", "linux": "HEAD", "qemu": "HEAD"}
    assert lab.revision_refs("linux-next") == {
        "xen": "stable-4.19",
        "linux": "next",
        "qemu": "HEAD",
    }


def test_unknown_branch_lists_the_known_ones() -> None:
    lab = parse(EXAMPLE)
    with pytest.raises(LookupError) as info:
        lab.branch("xen-unstabel")
    assert isinstance(info.value, UnknownNameError)
    assert "xen-unstable" in str(info.value)
    assert "did you mean" in str(info.value)
    with pytest.raises(LookupError):
        lab.jobs_for("nope")


def test_job_branches_restrict_jobs_for() -> None:
    text = (
        EXAMPLE
        + '\n[[branch]]\nname = "other"\ntree = "linux"\n'
        + job("only-xen", extra='branches = ["xen-unstable"]')
    )
    lab = parse(text)
    assert "only-xen" in [j.name for j in lab.jobs_for("xen-unstable")]
    assert "only-xen" not in [j.name for j in lab.jobs_for("other")]
    assert len(lab.jobs_for("other")) == 4


def test_results_and_allow() -> None:
    text = (
        HEAD.replace(
            'pin = { linux = "linux-6.6" }',
            'pin = { linux = "linux-6.6" }\n'
            'allow = [{ job = "test-*", step = "guest-*", reason = "flaky guest" },'
            ' { job = "build-amd64", reason = "known" }]',
        )
        + JOBS
        + '\n[[job]]\nname = "unit"\nrequires = ["arch-amd64"]\n[[job.step]]\nname = "t"\n'
        'run = "make test"\nresults = "junit:out/*.xml"\n'
    )
    lab = parse(text)
    assert lab.branch("xen-unstable").allow == (
        AllowedFailure("test-*", "guest-*", "flaky guest"),
        AllowedFailure("build-amd64", "*", "known"),
    )
    assert lab.jobs[-1].steps[0].results == "junit:out/*.xml"


# --- expansion ------------------------------------------------------------------------------


def test_multi_variable_matrix() -> None:
    text = HEAD + job(
        "test-{arch}-{toolstack}",
        run="run {toolstack} on {arch}",
        extra='matrix = { arch = ["amd64", "arm64"], toolstack = ["xl", "libvirt", "qemu"] }\n'
        'requires = ["arch-{arch}"]',
    )
    lab = parse(text)
    assert [j.name for j in lab.jobs] == [
        "test-amd64-xl",
        "test-amd64-libvirt",
        "test-amd64-qemu",
        "test-arm64-xl",
        "test-arm64-libvirt",
        "test-arm64-qemu",
    ]
    assert lab.jobs[4].steps[0].run == "run libvirt on arm64"
    assert lab.jobs[4].runvar_dict == {"arch": "arm64", "toolstack": "libvirt"}


def test_vars_from_runvars_and_runvars_from_matrix() -> None:
    text = HEAD + job(
        "build-{arch}-{cfg}",
        run="make {cfg} ARCH={arch}",
        extra='matrix = { arch = ["amd64"] }\nrunvars = { cfg = "{arch}_defconfig", jobs = 8 }',
    )
    (spec,) = parse(text).jobs
    assert spec.name == "build-amd64-amd64_defconfig"
    assert spec.steps[0].run == "make amd64_defconfig ARCH=amd64"
    assert spec.runvars == (("arch", "amd64"), ("cfg", "amd64_defconfig"), ("jobs", "8"))


def test_escapes_and_shell_expansions_pass_through() -> None:
    text = HEAD + job(
        "j",
        run="awk '{{print $1}}' ${HOME}/f ${X:-{{y}}} && echo {{arch}} $LABGATE_ARTIFACTS",
    )
    (spec,) = parse(text).jobs
    assert (
        spec.steps[0].run
        == "awk '{print $1}' ${HOME}/f ${X:-{{y}}} && echo {arch} $LABGATE_ARTIFACTS"
    )


def test_literal_shell_function_braces_need_escaping() -> None:
    p = problem_at(HEAD + job("j", run="f() { true; }"), "job[0] (j).step[0].run")
    assert "not a labgate var" in p.message
    assert "{{" in (p.fix or "")


@settings(max_examples=30, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9]{0,4}", fullmatch=True),
        st.lists(
            st.from_regex(r"[a-z0-9]{1,4}", fullmatch=True), min_size=1, max_size=3, unique=True
        ),
        min_size=1,
        max_size=3,
    )
)
def test_matrix_expands_to_the_product_with_unique_names(matrix: dict[str, list[str]]) -> None:
    name = "j" + "".join(f"-{{{var}}}" for var in matrix)
    inline = ", ".join(f"{var} = {json.dumps(values)}" for var, values in matrix.items())
    text = HEAD + job(name, extra=f"matrix = {{ {inline} }}")
    lab = parse(text)
    assert len(lab.jobs) == math.prod(len(v) for v in matrix.values())
    assert len({j.name for j in lab.jobs}) == len(lab.jobs)


# --- problems: every one with its key path and a fix ------------------------------------------


def test_toml_syntax_error_has_line_and_column() -> None:
    (p,) = problems('[lab]\nname = "x"\nslots = \n')
    assert p.key == "line 3, column 9"
    assert "TOML syntax error" in p.message
    assert p.fix


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (EXAMPLE + "\n[extra]\nx = 1\n", "extra", "unknown top-level key"),
        (
            EXAMPLE.replace('name = "xen-lab"', 'name = "xen-lab"\ncolour = 1'),
            "lab.colour",
            "unknown key",
        ),
        (
            EXAMPLE.replace("slots = 2", "slots = 2\nslot = 3"),
            "host[0].slot",
            "did you mean 'slots'",
        ),
        (
            EXAMPLE.replace("timeout = 3600", "timout = 3600"),
            "job[0] (build-{arch}).step[0].timout",
            "unknown key",
        ),
        (
            EXAMPLE.replace("exclusive = true", "exclusiv = true"),
            "job[1] (test-{arch}-xl).exclusiv",
            "unknown key",
        ),
    ],
)
def test_unknown_keys(text: str, key: str, words: str) -> None:
    assert words in problem_at(text, key).message


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ("slots = 2", 'slots = "two"', "host[0].slots", 'must be an integer (got "two")'),
        ("slots = 2", "slots = 0", "host[0].slots", "must be >= 1 (got 0)"),
        (
            "timeout = 3600",
            "timeout = -1",
            "job[0] (build-{arch}).step[0].timeout",
            "must be > 0 seconds (got -1)",
        ),
        (
            "timeout = 3600",
            'timeout = "1h"',
            "job[0] (build-{arch}).step[0].timeout",
            "must be a number",
        ),
        (
            "exclusive = true",
            'exclusive = "yes"',
            "job[1] (test-{arch}-xl).exclusive",
            "must be true or false",
        ),
        ('flags = ["arch-arm64"]', 'flags = "arch-arm64"', "host[1].flags", "must be an array"),
        (
            'name = "xen-lab"',
            'name = "xen-lab"\npoll_interval = 0',
            "lab.poll_interval",
            "> 0 seconds",
        ),
        ('pin = { linux = "linux-6.6" }', "pin = { linux = 6 }", "branch[0].pin.linux", "a string"),
        (
            'name = "rochester0"',
            'name = "rochester0"\nexecutor = "ipmi"',
            "host[1].executor",
            "ipmi",
        ),
    ],
)
def test_bad_types_and_values(old: str, new: str, key: str, message: str) -> None:
    text = EXAMPLE.replace(old, new, 1)
    assert old in EXAMPLE
    assert message in problem_at(text, key).message


def test_str_of_a_problem() -> None:
    text = EXAMPLE.replace("timeout = 3600", "timeout = -1")
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value) == (
        "lab.toml: job[0] (build-{arch}).step[0].timeout: must be > 0 seconds (got -1). "
        "Fix: give a positive number of seconds, e.g. timeout = 3600, or leave it out"
    )


def test_missing_lab_and_required_keys() -> None:
    text = EXAMPLE.replace('[lab]\nname = "xen-lab"', "").replace('url = "repos/linux.git"', "")
    found = {p.key: p for p in problems(text)}
    assert "lab" in found
    assert found["tree[1].url"].message == "is required"


def test_job_without_steps() -> None:
    text = HEAD + '\n[[job]]\nname = "j"\n'
    assert "[[job.step]]" in (problem_at(text, "job[0] (j).step").fix or "")


def test_array_written_as_a_table() -> None:
    text = EXAMPLE.replace('[[host]]\nname = "rochester0"', '[hostx]\nname = "rochester0"')
    assert problems(text)[0].key == "hostx"
    text = '[lab]\nname = "x"\n[tree]\nname = "xen"\nurl = "/x"\n'
    assert problem_at(text, "tree").fix == "write [[tree]]"


def test_results_prefix_is_validated() -> None:
    text = EXAMPLE.replace("timeout = 3600", 'timeout = 3600\nresults = "xml:out/*.xml"')
    assert "junit:<glob>" in problem_at(text, "job[0] (build-{arch}).step[0].results").message


def test_allow_needs_a_reason_and_globs_that_match() -> None:
    text = (
        HEAD.replace(
            'pin = { linux = "linux-6.6" }',
            'allow = [{ job = "build-*" }, { job = "nope-*", reason = "r" },'
            ' { job = "build-*", step = "nope", reason = "r" }]',
        )
        + JOBS
    )
    assert problem_at(text, "branch[0].allow[0].reason").message == "is required"
    assert "matches no job" in problem_at(text, "branch[0].allow[1].job").message
    assert "matches no step" in problem_at(text, "branch[0].allow[2].step").message


@pytest.mark.parametrize("kind", ["tree", "branch", "host"])
def test_duplicate_names(kind: str) -> None:
    extra = {
        "tree": '\n[[tree]]\nname = "xen"\nurl = "/x"\n',
        "branch": '\n[[branch]]\nname = "xen-unstable"\ntree = "linux"\n',
        "host": '\n[[host]]\nname = "italia0"\nflags = []\n',
    }[kind]
    p = problem_at(EXAMPLE + extra, f"{kind}[2].name" if kind != "branch" else "branch[1].name")
    assert "duplicate" in p.message
    assert f"{kind}[0]" in p.message


def test_duplicate_expanded_job_names_name_the_combination() -> None:
    text = HEAD + job("build", extra='matrix = { arch = ["amd64", "arm64"] }')
    p = problem_at(text, "job[0] (build).name (arch=arm64)")
    assert p.message == 'job name "build" is also job[0] (build) (arch=amd64)'
    assert "matrix var" in (p.fix or "")


def test_duplicate_job_names_across_jobs() -> None:
    text = EXAMPLE + job("build-amd64")
    p = problem_at(text, "job[2] (build-amd64).name")
    assert "job[0] (build-amd64)" in p.message


def test_duplicate_step_names() -> None:
    text = EXAMPLE.replace(
        "timeout = 3600", 'timeout = 3600\n[[job.step]]\nname = "build"\nrun = "true"'
    )
    assert "step[0]" in problem_at(text, "job[0] (build-{arch}).step[1].name").message


def test_branch_unknown_tree_and_pins() -> None:
    text = EXAMPLE.replace('tree = "xen"', 'tree = "xne"').replace(
        'pin = { linux = "linux-6.6" }', 'pin = { linxu = "v", linux = "w" }'
    )
    p = problem_at(text, "branch[0].tree")
    assert "did you mean 'xen'" in p.message
    assert "linux" in problem_at(text, "branch[0].pin.linxu").message


def test_pinning_the_tree_under_test_is_refused() -> None:
    text = EXAMPLE.replace('pin = { linux = "linux-6.6" }', 'pin = { xen = "v" }')
    assert "tree under test" in problem_at(text, "branch[0].pin.xen").message


def test_unknown_var_names_the_key_and_the_known_vars() -> None:
    text = EXAMPLE.replace("make -C xen dist", "make -C xen {target}")
    p = problem_at(text, "job[0] (build-{arch}).step[0].run")
    assert p.message == "unknown var {target}"
    assert "arch, kconfig" in (p.fix or "")
    assert "{{target}}" in (p.fix or "")


def test_unknown_var_in_name_requires_and_depends() -> None:
    text = HEAD + job(
        "a-{ach}",
        extra='matrix = { arch = ["amd64"] }\nrequires = ["arch-{x}"]\ndepends = ["{y}"]',
    )
    keys = {p.key for p in problems(text)}
    assert keys == {
        "job[0] (a-{ach}).name",
        "job[0] (a-{ach}).requires[0]",
        "job[0] (a-{ach}).depends[0]",
    }
    assert "did you mean 'arch'" in problem_at(text, "job[0] (a-{ach}).name").message


def test_runvar_values_may_use_matrix_vars_only() -> None:
    text = HEAD + job("j", extra='runvars = { a = "x", b = "{a}" }')
    assert "matrix vars only" in problem_at(text, "job[0] (j).runvars.b").message


def test_matrix_problems() -> None:
    text = HEAD + job(
        "j-{arch}-{x}",
        extra='matrix = { arch = [], x = ["a", "a"], "bad-name" = ["v"] }\nrunvars = { x = "1" }',
    )
    keys = {p.key: p.message for p in problems(text)}
    assert keys["job[0] (j-{arch}-{x}).matrix.arch"] == "has no values"
    assert keys["job[0] (j-{arch}-{x}).matrix.x"] == 'lists "a" twice'
    assert keys["job[0] (j-{arch}-{x}).matrix.bad-name"] == "is not a var name"
    assert keys["job[0] (j-{arch}-{x}).runvars.x"] == "is also a matrix var"


def test_unknown_depends_names_the_combination() -> None:
    text = EXAMPLE.replace('depends = ["build-{arch}"]', 'depends = ["biuld-{arch}"]')
    p = problem_at(text, "job[1] (test-arm64-xl).depends[0]")
    assert "did you mean 'build-arm64'" in p.message
    assert len(problems(text)) == 2


def test_unknown_depends_fix_lists_the_jobs_there_are_never_the_missing_one() -> None:
    text = HEAD + job("build") + job("test", extra='depends = ["build-amd64"]')
    p = problem_at(text, "job[1] (test).depends[0]")
    assert p.message == "no job named \"build-amd64\" (did you mean 'build'?)"
    assert p.fix == "depend on a job of this file, by its name after expansion: build, test"
    assert str(p).startswith('lab.toml: job[1] (test).depends[0]: no job named "build-amd64"')


def test_cyclic_depends() -> None:
    text = EXAMPLE.replace(
        'runvars = { kconfig = "defconfig" }',
        'runvars = { kconfig = "defconfig" }\ndepends = ["test-{arch}-xl"]',
    )
    found = problems(text)
    assert [p.key for p in found] == [
        "job[0] (build-amd64).depends",
        "job[0] (build-arm64).depends",
    ]
    assert "build-amd64 -> test-amd64-xl -> build-amd64" in found[0].message


def test_self_dependency_is_a_cycle() -> None:
    p = problem_at(HEAD + job("j", extra='depends = ["j"]'), "job[0] (j).depends")
    assert "cycle: j -> j" in p.message


def test_job_no_host_can_run() -> None:
    text = EXAMPLE.replace('flags = ["arch-arm64"]', 'flags = ["arm64"]')
    p = problem_at(text, "job[0] (build-arm64).requires")
    assert p.message == "no host has all of arch-arm64"
    assert "rochester0: arm64" in (p.fix or "")
    assert {q.key for q in problems(text)} == {
        "job[0] (build-arm64).requires",
        "job[1] (test-arm64-xl).requires",
    }


def test_no_hosts_at_all() -> None:
    text = '[lab]\nname = "x"\n' + job("j")
    assert problem_at(text, "job[0] (j).requires").fix == "add a [[host]]"


def test_job_branches_must_exist_and_cover_their_depends() -> None:
    text = (
        EXAMPLE
        + '\n[[branch]]\nname = "other"\ntree = "linux"\n'
        + job("a", extra='branches = ["xen-unstable"]')
        + job("b", extra='depends = ["a"]')
        + job("c", extra='branches = ["other", "nope"]\ndepends = ["a"]')
    )
    assert "did you mean" not in problem_at(text, "job[4] (c).branches[1]").message
    assert "runs only on xen-unstable" in problem_at(text, "job[3] (b).depends[0]").message
    assert "does not run on other" in problem_at(text, "job[4] (c).depends[0]").message


def test_all_problems_in_one_pass() -> None:
    text = (
        EXAMPLE.replace("slots = 2", 'slots = "two"')
        .replace("timeout = 3600", "timeout = -1")
        .replace('tree = "xen"', 'tree = "xne"')
        .replace('depends = ["build-{arch}"]', 'depends = ["build-{arch}", "nope"]')
        + '\n[[tree]]\nname = "xen"\nurl = "/x"\n'
    )
    keys = [p.key for p in problems(text)]
    assert keys == [
        "host[0].slots",
        "job[0] (build-{arch}).step[0].timeout",
        "tree[2].name",
        "branch[0].tree",
        "job[1] (test-{arch}-xl).depends[1]",
    ]


def test_problems_inside_an_invalid_step_still_check_the_rest() -> None:
    text = EXAMPLE.replace("timeout = 3600", "timeout = -1").replace(
        "make -C xen dist", "make {nope}"
    )
    keys = {p.key for p in problems(text)}
    assert keys == {"job[0] (build-{arch}).step[0].timeout", "job[0] (build-{arch}).step[0].run"}


# --- files and rendering --------------------------------------------------------------------


def test_load_lab_reads_lab_toml(tmp_path: Path) -> None:
    (tmp_path / "lab.toml").write_text(EXAMPLE)
    lab = load_lab(tmp_path)
    assert lab.file == tmp_path / "lab.toml"
    assert lab.trees["linux"].url == str(tmp_path / "repos/linux.git")
    assert lab.database_url == f"sqlite:///{tmp_path}/labgate.db"


def test_load_lab_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_lab(tmp_path)
    (p,) = info.value.problems
    assert p.file == tmp_path / "lab.toml"
    assert p.message == "no such file"
    assert str(p).startswith(f"{tmp_path / 'lab.toml'}: no such file. Fix: ")


def test_load_lab_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "lab.toml").write_text(EXAMPLE.replace("slots = 2", "slots = -2"))
    with pytest.raises(ConfigError) as info:
        load_lab(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}/lab.toml: host[0].slots: must be >= 1")


def test_render_plan() -> None:
    text = (
        HEAD.replace(
            'pin = { linux = "linux-6.6" }',
            'pin = { linux = "linux-6.6" }\nallow = [{ job = "test-*", reason = "flaky" }]',
        )
        + JOBS
    )
    out = render_matrix(parse(text))
    assert "branch xen-unstable: tests xen staging, pushes to master" in out
    assert "xen@staging  linux@linux-6.6" in out
    assert "allowed failure  test-* / *: flaky" in out
    assert "test-arm64-xl  requires arch-arm64  depends build-arm64  exclusive" in out
    assert "runvars  arch=amd64 kconfig=defconfig" in out
    assert "step build: make -C xen dist" in out
    assert "(timeout 3600s)" in out
    assert "italia0  [arch-amd64, cpu-intel]  slots 2  executor local" in out
    assert "build-arm64    rochester0" in out


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (HEAD + job("a b"), "job[0] (a b).name"),
        (HEAD + job("j").replace('name = "s"', 'name = "x/y"'), "job[0] (j).step[0].name"),
        (HEAD + job("j-{v}", extra='matrix = { v = ["ok", "a/b"] }'), "job[0] (j-a/b).name"),
        (HEAD + job("{v}", extra='matrix = { v = [".."] }'), "job[0] (..).name"),
        (EXAMPLE.replace('name = "italia0"', 'name = "italia 0"'), "host[0].name"),
        (EXAMPLE.replace('name = "xen-unstable"', 'name = "xen/unstable"'), "branch[0].name"),
    ],
)
def test_names_must_be_usable_as_file_names(text: str, key: str) -> None:
    p = problem_at(text, key)
    assert "is not a usable name" in p.message
    assert "file names" in (p.fix or "")


def test_matrix_values_may_be_integers_not_booleans() -> None:
    lab = parse(HEAD + job("j-{n}", extra="matrix = { n = [1, 2] }"))
    assert [j.name for j in lab.jobs] == ["j-1", "j-2"]
    p = problem_at(
        HEAD + job("j-{n}", extra="matrix = { n = [true] }"), "job[0] (j-{n}).matrix.n[0]"
    )
    assert p.message == "must be a string (got true)"


def test_empty_branches_list_is_refused() -> None:
    p = problem_at(HEAD + job("j", extra="branches = []"), "job[0] (j).branches")
    assert p.message == "must have at least one entry"


def test_entries_that_are_not_tables() -> None:
    text = HEAD + '\n[[job]]\nname = "j"\nstep = ["make"]\n'
    p = problem_at(text, "job[0] (j).step[0]")
    assert p.message == 'must be a table (got "make")'
    assert p.fix == "write each entry as a [[job.step]] table"
    p = problem_at('tree = ["xen"]\n[lab]\nname = "x"\n', "tree[0]")
    assert p.fix == "write each entry as a [[tree]] table"
