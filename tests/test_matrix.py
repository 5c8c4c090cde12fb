"""Templates and matrix expansion (labgate.matrix): pure functions, so many cases and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labgate.matrix import (
    JobTemplate,
    StepTemplate,
    TemplateError,
    Var,
    combinations,
    expand,
    expand_jobs,
    job_count,
    parse_template,
)
from labgate.model import StepSpec


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("build-{arch}", "build-amd64"),
        ("{arch}{arch}", "amd64amd64"),
        ("no vars", "no vars"),
        ("", ""),
        ("{{arch}}", "{arch}"),
        ("awk '{{print $1}}'", "awk '{print $1}'"),
        ("echo ${HOME}", "echo ${HOME}"),
        ('cp -r dist "$LABGATE_ARTIFACTS/"', 'cp -r dist "$LABGATE_ARTIFACTS/"'),
        ("echo ${X:-{arch}}", "echo ${X:-{arch}}"),
        ("${A}-{arch}-${B}", "${A}-amd64-${B}"),
        ('"$"{arch}', '"$"amd64'),
        ("$arch {arch}", "$arch amd64"),
        ("{{}}", "{}"),
        ("{_x1}", "v"),
    ],
)
def test_expand(source: str, expected: str) -> None:
    assert expand(source, {"arch": "amd64", "_x1": "v"}) == expected


@pytest.mark.parametrize(
    "source",
    ["{", "}", "a}b", "{print $1}", "{ arch }", "{1x}", "{arch", "${HOME", "{a-b}", "{}"],
)
def test_bad_templates_are_refused_with_a_fix(source: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse_template(source)
    assert info.value.fix


def test_template_vars_in_order_of_first_use() -> None:
    template = parse_template("{b}-{a}-{b}-${c}-{{d}}")
    assert template.vars == ("b", "a")
    assert Var("a") in template.parts


def test_unknown_var_raises_key_error() -> None:
    with pytest.raises(KeyError):
        expand("{nope}", {})


def test_combinations_order_last_var_fastest() -> None:
    assert combinations({"arch": ["amd64", "arm64"], "ts": ["xl", "libvirt"]}) == [
        {"arch": "amd64", "ts": "xl"},
        {"arch": "amd64", "ts": "libvirt"},
        {"arch": "arm64", "ts": "xl"},
        {"arch": "arm64", "ts": "libvirt"},
    ]
    assert combinations({}) == [{}]


def _job(name: str, matrix: dict[str, list[str]], runvars: dict[str, str]) -> JobTemplate:
    return JobTemplate(
        name=parse_template(name),
        matrix=tuple((k, tuple(v)) for k, v in matrix.items()),
        runvars=tuple((k, parse_template(v)) for k, v in runvars.items()),
        requires=(parse_template("arch-{arch}"),),
        depends=(parse_template("build-{arch}"),),
        steps=(
            StepTemplate(
                parse_template("run-{arch}"),
                parse_template("make {target} ARCH={arch}"),
                timeout=10,
                results=parse_template("junit:out/{arch}/*.xml"),
            ),
        ),
        exclusive=True,
    )


def test_expand_job_uses_matrix_and_runvars() -> None:
    jobs = expand_jobs(_job("test-{arch}", {"arch": ["amd64", "arm64"]}, {"target": "dist-{arch}"}))
    assert [c for c, _ in jobs] == [{"arch": "amd64"}, {"arch": "arm64"}]
    spec = jobs[1][1]
    assert spec.name == "test-arm64"
    assert spec.requires == ("arch-arm64",)
    assert spec.depends == ("build-arm64",)
    assert spec.runvars == (("arch", "arm64"), ("target", "dist-arm64"))
    assert spec.exclusive
    assert spec.steps == (
        StepSpec("run-arm64", "make dist-arm64 ARCH=arm64", 10, "junit:out/arm64/*.xml"),
    )


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
        st.lists(
            st.text(alphabet="abcxyz019-.", min_size=1, max_size=5),
            min_size=1,
            max_size=4,
            unique=True,
        ),
        max_size=4,
    )
)
def test_matrix_gives_the_product_with_unique_names(matrix: dict[str, list[str]]) -> None:
    name = "job" + "".join(f"_{{{var}}}" for var in matrix)
    template = JobTemplate(
        name=parse_template(name),
        matrix=tuple((k, tuple(v)) for k, v in matrix.items()),
        runvars=(),
        requires=(),
        depends=(),
        steps=(StepTemplate(parse_template("s"), parse_template("true")),),
    )
    jobs = expand_jobs(template)
    assert len(jobs) == math.prod(len(v) for v in matrix.values())
    # Values may contain "_", so names are compared through their runvars, which must be unique.
    assert len({spec.runvars for _, spec in jobs}) == len(jobs)
    for combination, spec in jobs:
        assert spec.runvar_dict == combination


@given(st.text(alphabet="ab{}$ x", max_size=12))
def test_parse_never_crashes_and_literal_text_round_trips(source: str) -> None:
    try:
        template = parse_template(source)
    except TemplateError:
        return
    rendered = template.render({v: "{" + v + "}" for v in template.vars})
    # Rendering every var as itself gives back the source with escapes undone.
    assert rendered.replace("{", "").replace("}", "") == source.replace("{", "").replace("}", "")


@given(st.text(alphabet="abc $-_./\"'", max_size=20))
def test_text_without_braces_is_unchanged(source: str) -> None:
    assert expand(source, {}) == source


@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,3}", fullmatch=True),
        st.lists(st.text("xyz", min_size=1, max_size=2), min_size=1, max_size=3, unique=True),
        max_size=3,
    )
)
def test_job_count_is_the_number_of_jobs_expanded(matrix: dict[str, list[str]]) -> None:
    matrix = {"arch": ["a", "b"], **matrix}  # _job's templates use {arch}
    template = _job("job" + "".join(f"_{{{var}}}" for var in matrix), matrix, {"target": "t"})
    assert job_count(template) == len(expand_jobs(template))


def test_job_count_of_a_billion_does_not_expand() -> None:
    matrix = {"arch": ["a"], **{f"v{i}": [str(n) for n in range(10)] for i in range(9)}}
    assert job_count(_job("j", matrix, {})) == 10**9
