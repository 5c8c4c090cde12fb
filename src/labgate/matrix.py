"""Matrix expansion: from a ``[[job]]`` of lab.toml to the jobs a flight runs.

A job's ``matrix`` (``{ arch = ["amd64", "arm64"], toolstack = ["xl", "libvirt"] }``) gives one job
per combination of its values, in file order (the last var varies fastest). Every string of the job
(name, requires, depends, runvar values, step names, commands and results) is a *template*:

- ``{name}`` is replaced by the labgate var ``name``: a matrix var, or a runvar of the job.
  A name is a letter or ``_`` followed by letters, digits and ``_``. A runvar's own value may use
  matrix vars but not other runvars.
- ``{{`` and ``}}`` are a literal ``{`` and ``}`` (``awk '{{print $1}}'``).
- ``$`` followed by ``{`` starts a *shell* expansion (``${HOME}``, ``${VAR:-x}``): it is copied as
  written up to its matching ``}`` and nothing inside it is a labgate var. So a labgate var can not
  directly follow a ``$``; write ``"$"{var}`` if you really need that.
- Any other ``{`` or ``}`` is an error, so a typo never passes through silently.

Pure functions, no I/O; :mod:`labgate.config` turns :class:`TemplateError` into user messages.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from labgate.model import JobSpec, PerfSettings, StepSpec

VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_JOBS = 10_000
"""How many jobs a lab's matrices may expand to, unless ``[lab] max_jobs`` says otherwise: a typo
in a matrix must be an error, not a controller that runs out of memory expanding it."""


class TemplateError(ValueError):
    """A template that can not be parsed; ``fix`` tells the user what to write instead."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


@dataclass(frozen=True)
class Var:
    """A ``{name}`` reference inside a template."""

    name: str


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and var references, in order."""

    source: str
    parts: tuple[str | Var, ...]

    @property
    def vars(self) -> tuple[str, ...]:
        """The var names used, in order of first use."""
        return tuple(dict.fromkeys(p.name for p in self.parts if isinstance(p, Var)))

    def render(self, values: Mapping[str, str]) -> str:
        """The text with every var replaced; a var missing from ``values`` raises KeyError."""
        return "".join(p if isinstance(p, str) else values[p.name] for p in self.parts)


def parse_template(source: str) -> Template:
    """Parse ``source`` by the rules in this module's docstring; raises TemplateError."""
    parts: list[str | Var] = []
    text: list[str] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c == "$" and source.startswith("${", i):
            end = _shell_expansion_end(source, i + 1)
            text.append(source[i:end])
            i = end
        elif source.startswith("{{", i) or source.startswith("}}", i):
            text.append(c)
            i += 2
        elif c == "{":
            close = source.find("}", i)
            name = source[i + 1 : close] if close != -1 else ""
            if close == -1 or not VAR_NAME.fullmatch(name):
                shown = source[i : close + 1] if close != -1 else source[i:]
                raise TemplateError(
                    f"{shown!r} is not a labgate var",
                    "write {name} with a var name, or {{ and }} for literal braces",
                )
            if text:
                parts.append("".join(text))
                text = []
            parts.append(Var(name))
            i = close + 1
        elif c == "}":
            raise TemplateError(f"unmatched '}}' at position {i}", "write }} for a literal '}'")
        else:
            text.append(c)
            i += 1
    if text:
        parts.append("".join(text))
    return Template(source, tuple(parts))


def _shell_expansion_end(source: str, brace: int) -> int:
    """The index just past the ``}`` matching the ``{`` at ``brace`` (nested braces counted)."""
    depth = 0
    for j in range(brace, len(source)):
        if source[j] == "{":
            depth += 1
        elif source[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    raise TemplateError(
        f"shell expansion {source[brace - 1 :]!r} has no closing '}}'",
        "close it with '}'",
    )


def expand(source: str, values: Mapping[str, str]) -> str:
    """Parse and render in one go (raises TemplateError, or KeyError for an unknown var)."""
    return parse_template(source).render(values)


def combinations(matrix: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Every combination of the matrix values, in file order; ``[{}]`` for an empty matrix."""
    names = list(matrix)
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(matrix[n] for n in names))
    ]


@dataclass(frozen=True)
class StepTemplate:
    """A ``[[job.step]]`` with its strings parsed."""

    name: Template
    run: Template
    timeout: float | None = None
    results: Template | None = None
    metrics: Template | None = None
    repeat: int = 1
    perf: PerfSettings | None = None


@dataclass(frozen=True)
class JobTemplate:
    """A ``[[job]]`` with its strings parsed, before matrix expansion."""

    name: Template
    matrix: tuple[tuple[str, tuple[str, ...]], ...]
    runvars: tuple[tuple[str, Template], ...]
    requires: tuple[Template, ...]
    depends: tuple[Template, ...]
    steps: tuple[StepTemplate, ...]
    exclusive: bool = False

    @property
    def matrix_dict(self) -> dict[str, tuple[str, ...]]:
        return dict(self.matrix)


def expand_job(job: JobTemplate, combination: Mapping[str, str]) -> JobSpec:
    """The job for one matrix combination. Its runvars are the matrix vars then the job's runvars
    (values expanded with the matrix vars); every other string is expanded with both."""
    runvars = dict(combination)
    for key, value in job.runvars:
        runvars[key] = value.render(combination)
    steps = tuple(
        StepSpec(
            name=s.name.render(runvars),
            run=s.run.render(runvars),
            timeout=s.timeout,
            results=s.results.render(runvars) if s.results is not None else None,
            metrics=s.metrics.render(runvars) if s.metrics is not None else None,
            repeat=s.repeat,
            perf=s.perf,
        )
        for s in job.steps
    )
    return JobSpec(
        name=job.name.render(runvars),
        steps=steps,
        requires=tuple(r.render(runvars) for r in job.requires),
        depends=tuple(d.render(runvars) for d in job.depends),
        runvars=tuple(runvars.items()),
        exclusive=job.exclusive,
    )


def job_count(job: JobTemplate) -> int:
    """How many jobs the template's matrix expands to, counted without expanding it."""
    return math.prod(len(values) for _, values in job.matrix)


def expand_jobs(job: JobTemplate) -> list[tuple[dict[str, str], JobSpec]]:
    """Every job of the template's matrix, with the combination it came from."""
    return [(c, expand_job(job, c)) for c in combinations(job.matrix_dict)]
