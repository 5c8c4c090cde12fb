"""lab.toml: loading, validation and matrix expansion into a typed :class:`Lab`.

The file has one ``[lab]`` table and arrays of ``[[tree]]``, ``[[branch]]``, ``[[host]]`` and
``[[job]]`` (with ``[[job.step]]``); see the README. Every problem is reported in one pass, each
with the file, the key path (``step[0].timeout``: 0-based indices into the file's arrays, as
written), a job named as the reader knows it (``job[3] (build-{arch}).step[0].timeout`` as
written, ``job[1] (test-arm64-xl).requires`` for one expanded job, with its combination when the
name does not tell it) and a fix. :class:`ConfigError` carries them; no traceback reaches the user.

Templates: every string of a ``[[job]]`` may use ``{var}`` (a matrix var or a runvar); ``{{`` and
``}}`` are literal braces; ``$`` followed by ``{`` is a *shell* expansion (``${HOME}``), copied as
is, never a labgate var. The full rules are in :mod:`labgate.matrix`.

Defaults decided here:

- ``[lab]``: ``database`` is ``sqlite:///<lab dir>/labgate.db`` (a relative SQLite path is taken
  from the lab dir); ``logs = "logs"``, ``work = "work"``, ``artifacts = "artifacts"``,
  ``mirrors = "mirrors"``, all relative to the lab dir; ``poll_interval = 60`` seconds.
- A tree that is neither under test nor pinned by a branch is taken at its remote ``HEAD``: a pin
  is optional (:meth:`Lab.revision_refs` says ``"HEAD"`` for it). Pinning the tree under test is
  an error (it is taken at ``staging``).
- A tree ``url`` with ``://`` or of the scp form ``host:path`` is a URL; anything else is a local
  path, made absolute from the lab dir.
- A job's runvars are its matrix vars then its own runvars; a job without ``branches`` runs on
  every branch; a step without ``timeout`` has none.
- ``[[branch]] allow`` entries default ``step = "*"``; each glob must match something.
- Tree, branch, host, job and step names (after expansion) are usable as file names and URL
  parts: letters, digits and ``- _ . + = @ ,``, not starting with ``.``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
)

from labgate.access.settings import AccessSettings, RawAccess
from labgate.findings.compare import Policy
from labgate.findings.config import RawFindings
from labgate.mailconfig import MailConfig
from labgate.matrix import (
    MAX_JOBS,
    VAR_NAME,
    JobTemplate,
    StepTemplate,
    Template,
    TemplateError,
    job_count,
)
from labgate.matrix import expand_jobs as _expand_jobs
from labgate.matrix import parse_template as _parse_template
from labgate.model import (
    AllowedFailure,
    BranchSpec,
    DisabledTest,
    Embargo,
    GateSettings,
    HostSpec,
    JobSpec,
    Knowledge,
    PerfSettings,
    ReviewSpec,
    TreeSpec,
)
from labgate.rawconfig import (
    HOST_MODELS,
    NAME,
    NAME_FIX,
    REVIEW_MODELS,
    Name,
    RawLocalHost,
    RawReview,
    Text,
    _Invalid,
    _Raw,
    under,
)

LAB_FILE = "lab.toml"
UNPINNED_REF = "HEAD"
RESULT_FORMATS = ("junit", "tap", "sarif")


# --- errors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a lab file: where (``key``), what (``message``) and what to do."""

    file: Path
    key: str
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}: " if self.key else f"{self.file}: "
        return where + self.message + (f". Fix: {self.fix}" if self.fix else "")


class ConfigError(Exception):
    """The lab file is unusable; ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class UnknownNameError(LookupError):
    """A branch (or other named thing) the lab does not have; the message lists those it has."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = list(known)
        self.kind, self.name, self.known = kind, name, known
        hint = _did_you_mean(name, known)
        listed = ", ".join(known) if known else "none"
        super().__init__(f"no {kind} named {name!r}{hint} (known: {listed})")

    def __str__(self) -> str:
        return str(self.args[0])


# --- the lab ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    """A validated lab: every path absolute, every job expanded."""

    dir: Path
    file: Path
    name: str
    database_url: str
    log_dir: Path
    work_dir: Path
    artifacts_dir: Path
    mirror_dir: Path
    poll_interval: float
    trees: Mapping[str, TreeSpec]
    branches: Mapping[str, BranchSpec]
    hosts: tuple[HostSpec, ...]
    jobs: tuple[JobSpec, ...]
    job_branches: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Jobs restricted to some branches (``[[job]] branches``); a job not here runs on all."""
    reviews: tuple[ReviewSpec, ...] = ()
    """``[[review]]``: the code review systems whose patches the lab tests."""
    disabled: tuple[DisabledTest, ...] = ()
    """``[[disable]]``: tests not run, listed in every vote (see ``labgate.flight``)."""
    gate: GateSettings = field(default_factory=GateSettings)
    perf: PerfSettings = field(default_factory=PerfSettings)
    """``[perf]``: how metrics are judged (a step's own keys win: :meth:`perf_for`)."""
    mail: MailConfig | None = None
    """``[mail]``: where reports are sent (None: reports are not mailed)."""
    findings: Policy = field(default_factory=Policy)
    """``[findings]``: what new static analysis findings do to the push."""
    web_token: str | None = None
    """``[web] token``: what the dashboard's actions (cancel, retest) need; None: read-only."""
    web_hosts: tuple[str, ...] = ()
    """``[web] hosts``: the names the dashboard answers to besides loopback and review web_urls."""
    web_anonymous: bool = True
    """``[web] anonymous``: False when every page and the API need a user's token or a login."""
    web_url: str | None = None
    """``[web] url``: the dashboard's public address, the base of the reports' links."""
    step_env: Mapping[str, str] = field(default_factory=dict)
    """``[lab] env``: variables every step gets (see ``labgate.executor.step_environment``)."""
    pass_env: tuple[str, ...] = ()
    """``[lab] pass_env``: the controller's variables every step gets, by name."""
    access: AccessSettings = field(default_factory=AccessSettings)
    """``[access]``: on-demand testing for community members (see ``labgate.access``)."""

    @property
    def secret_env_names(self) -> frozenset[str]:
        """The environment variables lab.toml's ``*_env`` keys name: never given to a step."""
        return secret_env_names(self.mail, self.reviews)

    def branch(self, name: str) -> BranchSpec:
        """The branch called ``name``; UnknownNameError (a LookupError) lists the known ones."""
        try:
            return self.branches[name]
        except KeyError:
            raise UnknownNameError("branch", name, self.branches) from None

    def jobs_for(self, branch: str) -> tuple[JobSpec, ...]:
        """The jobs a flight of ``branch`` runs, in file order."""
        self.branch(branch)
        return tuple(
            j
            for j in self.jobs
            if j.name not in self.job_branches or branch in self.job_branches[j.name]
        )

    def revision_refs(self, branch: str) -> dict[str, str]:
        """The ref each tree is taken at for ``branch``: the tree under test at ``staging``,
        a pinned tree at its pin, any other tree at ``HEAD`` (its remote's default branch)."""
        spec = self.branch(branch)
        pins = spec.pin_dict
        return {
            tree: spec.staging if tree == spec.tree else pins.get(tree, UNPINNED_REF)
            for tree, t in self.trees.items()
            # a private tree only where the branch uses it: every other branch's flights would
            # check it out on hosts and pages open to all
            if not t.private or tree == spec.tree or tree in pins
        }

    def perf_for(self, job: str, step: str) -> PerfSettings:
        """How the metrics of ``job``'s step ``step`` are judged: its own keys, else ``[perf]``
        (also for a job or step no longer in lab.toml)."""
        for spec in self.jobs:
            if spec.name == job:
                for s in spec.steps:
                    if s.name == step and s.perf is not None:
                        return s.perf
        return self.perf

    def host(self, name: str) -> HostSpec:
        """The host called ``name``; UnknownNameError lists the known ones."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise UnknownNameError("host", name, [h.name for h in self.hosts])

    def hosts_for(self, job: JobSpec) -> tuple[HostSpec, ...]:
        """The hosts whose flags include everything ``job`` requires."""
        return tuple(h for h in self.hosts if h.flags.issuperset(job.requires))


def secret_env_names(mail: MailConfig | None, reviews: Iterable[ReviewSpec]) -> frozenset[str]:
    """The variables named by the ``*_env`` keys of ``[mail]`` and ``[[review]]``."""
    named = [mail.username_env, mail.password_env] if mail else []
    for review in reviews:
        named += review.settings.secret_envs()
    return frozenset(name for name in named if name is not None)


# --- the file as written: pydantic models ---------------------------------------------------


def _int_to_str(value: Any) -> Any:
    # Matrix and runvar values are text; a bare integer (``jobs = 4``) reads naturally in TOML.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
Value = Annotated[str, BeforeValidator(_int_to_str)]


class RawLabSection(_Raw):
    name: Text
    database: Text | None = None
    logs: Text = "logs"
    work: Text = "work"
    artifacts: Text = "artifacts"
    mirrors: Text = "mirrors"
    poll_interval: float = Field(default=60.0, gt=0)
    max_jobs: int = Field(default=MAX_JOBS, ge=1)
    env: dict[str, str] = Field(default_factory=dict)
    pass_env: list[str] = Field(default_factory=list)


_GATE = GateSettings()  # the defaults live there; this model adds the bounds a file may give


class RawGate(_Raw):
    flake_threshold: float = Field(default=_GATE.flake_threshold, ge=0, le=1)
    retests: int = Field(default=_GATE.retests, ge=0, le=10)
    bisect_parallel: int = Field(default=_GATE.bisect_parallel, ge=1, le=64)
    bisect_confidence: float = Field(default=_GATE.bisect_confidence, ge=0.5, lt=1)
    bisect_max_flights: int = Field(default=_GATE.bisect_max_flights, ge=2)
    bisect_flaky: Knowledge = _GATE.bisect_flaky
    bisect_intermittent: Knowledge = _GATE.bisect_intermittent
    lease_s: float = Field(default=_GATE.lease_s, gt=0)

    def to_settings(self) -> GateSettings:
        return GateSettings(**self.model_dump())


_PERF = PerfSettings()


class RawPerf(_Raw):
    """``[perf]``: how metrics are judged against the baseline (a step's own keys win)."""

    min_change: float = Field(default=_PERF.min_change, gt=0, lt=10)
    alpha: float = Field(default=_PERF.alpha, gt=0, lt=1)
    max_repeats: int = Field(default=_PERF.max_repeats, ge=2, le=1000)
    block: bool = _PERF.block

    def to_settings(self) -> PerfSettings:
        return PerfSettings(**self.model_dump())


class RawWeb(_Raw):
    """``[web]``: the dashboard (``labgate serve``)."""

    token: Text | None = None
    hosts: list[Text] = Field(default_factory=list)
    anonymous: bool = True
    url: Text | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise _Invalid(
                f"{value!r} is not an http(s) URL",
                'the dashboard\'s public address, e.g. url = "https://lab.example.org"',
            )
        return value

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise _Invalid(
                f"is {len(value)} characters long; a token needs at least 16",
                'use a long random value, e.g. token = "<output of openssl rand -hex 24>"',
            )
        return value


class RawTree(_Raw):
    name: Name
    url: Text
    private: bool = False


class RawAllow(_Raw):
    job: Text
    step: Text = "*"
    reason: Text


# git's rules for a ref name (git check-ref-format), and no leading "-": git reads that as an
# option (staging = "--upload-pack=..." would run a command)
REF = re.compile(r"(?!-)(?!.*\.\.)(?!.*@\{)[^\s~^:?*\[\\\x00-\x1f\x7f]+")


def _check_ref(value: str) -> str:
    if not REF.fullmatch(value):
        raise _Invalid(
            f"{_show(value)} is not a ref name (git would read a leading - as an option)",
            'write a branch, tag or commit, e.g. "staging" or "refs/heads/staging"',
        )
    return value


def rfc3339(value: datetime | str) -> datetime:
    """An RFC 3339 time with its offset (a TOML datetime or a string), as an aware datetime."""
    when = value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            when = None  # type: ignore[assignment]
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise _Invalid(
            f"{_show(str(value))} is not an RFC 3339 time with an offset",
            'write e.g. until = "2026-12-15T12:00:00Z" (Z or +01:00 says which time zone)',
        )
    return when


class RawEmbargo(_Raw):
    """``embargo = { group = "security", until = "2026-12-15T12:00:00Z" }`` on a branch."""

    group: Name
    until: datetime | Text

    @field_validator("until")
    @classmethod
    def _until(cls, value: datetime | str) -> datetime:
        return rfc3339(value)

    def to_embargo(self) -> Embargo:
        assert isinstance(self.until, datetime)
        return Embargo(self.group, self.until)


class RawBranch(_Raw):
    name: Name
    tree: Text
    staging: Text = "staging"
    tested: Text = "master"
    pin: dict[str, Text] = Field(default_factory=dict)
    allow: list[RawAllow] = Field(default_factory=list)
    embargo: RawEmbargo | None = None

    @field_validator("staging", "tested")
    @classmethod
    def _refs(cls, value: str) -> str:
        return _check_ref(value)

    @field_validator("pin")
    @classmethod
    def _pins(cls, value: dict[str, str]) -> dict[str, str]:
        for ref in value.values():
            _check_ref(ref)
        return value


class RawStep(_Raw):
    name: Text
    run: Text
    timeout: float | None = Field(default=None, gt=0)
    results: Text | None = None
    metrics: Text | None = None
    repeat: int = Field(default=1, ge=1, le=1000)
    min_change: float | None = Field(default=None, gt=0, lt=10)
    alpha: float | None = Field(default=None, gt=0, lt=1)
    max_repeats: int | None = Field(default=None, ge=2, le=1000)
    block: bool | None = None

    @field_validator("metrics")
    @classmethod
    def _metrics_format(cls, value: str | None) -> str | None:
        return _file_spec(value, ("json",), 'write e.g. metrics = "json:out/metrics.json"')

    def perf(self, lab: PerfSettings) -> PerfSettings | None:
        """The step's own judging settings over ``[perf]``'s (None: it gives none)."""
        own = {
            key: value
            for key in ("min_change", "alpha", "max_repeats", "block")
            if (value := getattr(self, key)) is not None
        }
        return dataclasses.replace(lab, **own) if own else None

    @field_validator("results")
    @classmethod
    def _results_format(cls, value: str | None) -> str | None:
        fix = 'write e.g. results = "junit:out/*.xml", "tap:results.tap" or "sarif:*.sarif"'
        return _file_spec(value, RESULT_FORMATS, fix)


def _file_spec(value: str | None, formats: Sequence[str], fix: str) -> str | None:
    """A step's ``<format>:<glob>`` key (``results``, ``metrics``), checked."""
    if value is None:
        return value
    kind, sep, glob = value.partition(":")
    if not sep or kind not in formats or not glob:
        kinds = [f"{f}:<glob>" for f in formats]
        wanted = " or ".join(filter(None, [", ".join(kinds[:-1]), kinds[-1]]))
        raise _Invalid(f"must be {wanted} (got {_show(value)})", fix)
    return value


class RawJob(_Raw):
    name: Text
    matrix: dict[str, list[Value]] = Field(default_factory=dict)
    runvars: dict[str, Value] = Field(default_factory=dict)
    requires: list[Text] = Field(default_factory=list)
    depends: list[Text] = Field(default_factory=list)
    exclusive: bool = False
    branches: list[Text] | None = Field(default=None, min_length=1)
    step: list[RawStep] = Field(min_length=1)


class RawDisable(_Raw):
    """``[[disable]]``: a test (job and step globs) the lab does not run."""

    job: Text
    step: Text = "*"
    reason: Text
    bug: Text | None = None


# The model of a table, by the name of the array or table it sits in (for "known keys").
_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "lab": RawLabSection,
    "tree": RawTree,
    "branch": RawBranch,
    "allow": RawAllow,
    "host": RawLocalHost,
    "job": RawJob,
    "step": RawStep,
    "gate": RawGate,
    "perf": RawPerf,
    "mail": MailConfig,
    "web": RawWeb,
    "findings": RawFindings,
    "access": RawAccess,
    "review": RawReview,
    "disable": RawDisable,
}
_TOP_LEVEL = (
    "lab",
    "tree",
    "branch",
    "host",
    "host_class",
    "job",
    "gate",
    "perf",
    "mail",
    "web",
    "findings",
    "access",
    "review",
    "disable",
)

# Stand-ins for invalid inner entries (already reported); names no file can contain.
_INVALID = "\0invalid"
_NESTED: dict[str, tuple[str, type[BaseModel]]] = {
    "job": ("step", RawStep),
    "branch": ("allow", RawAllow),
}
# Keys without which a table can not be checked further (others are dropped to their default).
_VITAL: dict[str, frozenset[str]] = {
    "tree": frozenset({"name"}),
    "branch": frozenset({"name", "tree"}),
    "host": frozenset({"name", "flags"}),
    "job": frozenset({"name", "matrix", "runvars", "branches", "step"}),
    "review": frozenset({"name", "driver", "branch"}),
    "disable": frozenset({"job"}),
}
_PLACEHOLDERS: dict[str, dict[str, str]] = {
    "step": {"name": _INVALID, "run": "true"},
    "allow": {"job": _INVALID, "reason": _INVALID},
}


# --- pydantic errors → problems -------------------------------------------------------------

_TYPE_WORDS = {
    "int_type": ("an integer", "2"),
    "float_type": ("a number", "60"),
    "string_type": ("a string", '"text"'),
    "bool_type": ("true or false", "true"),
    "list_type": ("an array", '["a", "b"]'),
    "dict_type": ("a table", '{ key = "value" }'),
    "model_type": ("a table", '{ key = "value" }'),
}
_UNITS = {"timeout": " seconds", "poll_interval": " seconds"}
_KEY_FIXES = {
    "timeout": "give a positive number of seconds, e.g. timeout = 3600, or leave it out",
    "poll_interval": "give a positive number of seconds, e.g. poll_interval = 60",
    "slots": "give how many jobs the host runs at once, e.g. slots = 2",
    "executor": f'use executor = "local" (known: {", ".join(HOST_MODELS)})',
    "step": 'add a [[job.step]] with name = "..." and run = "<shell command>"',
    "name": 'add name = "..."',
    "run": 'add run = "<shell command>"',
    "url": 'add url = "<git URL or path to the repository>"',
    "reason": 'add reason = "<why this failure is accepted>"',
    "tree": 'add tree = "<name of the [[tree]] under test>"',
    "job": 'add job = "<glob of job names>"',
    "branches": "name at least one [[branch]], or leave branches out to run on every branch",
    "lab": 'write a [lab] table with name = "..."',
    "driver": 'use driver = "gerrit" or driver = "github"',
    "project": 'add project = "<Gerrit project, or GitHub owner/repo>"',
    "branch": 'add branch = "<the [[branch]] whose jobs test the patches>"',
    "retries": "give how many times a run the lab broke is retried, e.g. retries = 2",
}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_JOB_KEY = re.compile(r"job\[(\d+)\](?! \()")


def key_path(loc: Sequence[str | int]) -> str:
    """``("job", 3, "step", 0, "timeout")`` → ``"job[3].step[0].timeout"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else f'"{part}"'
            out += f".{name}" if out else name
    return out


def _show(value: Any) -> str:
    """A value as it would be written in TOML, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _some(names: Sequence[str], shown: int = 8) -> str:
    """A list of names for a fix, the first ``shown`` of them and how many more."""
    if not names:
        return "(none)"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(
    error: Mapping[str, Any], loc: tuple[str | int, ...], model: type[BaseModel] | None = None
) -> tuple[str, str | None]:
    """The message and fix for one pydantic error at ``loc`` (the full path in the file);
    ``model``: the table's own model when the error is about one of its keys (a driver's)."""
    kind = error["type"]
    leaf = next((p for p in reversed(loc) if isinstance(p, str)), "")
    got = f" (got {_show(error.get('input'))})"
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        section = next((p for p in reversed(loc[:-1]) if isinstance(p, str)), "")
        model = model or _SECTION_MODELS.get(section)
        known = list(model.model_fields) if model else []
        return (
            f"unknown key{_did_you_mean(leaf, known)}",
            f"remove it or correct its name (known keys here: {', '.join(known)})",
        )
    if kind == "missing":
        return "is required", _KEY_FIXES.get(leaf, f"add {leaf} = ...")
    if kind in _TYPE_WORDS:
        words, example = _TYPE_WORDS[kind]
        if isinstance(loc[-1], int) and kind == "model_type":
            table = {"step": "[[job.step]]", "allow": "{ job = ..., reason = ... }"}.get(
                leaf, f"[[{leaf}]]"
            )
            return f"must be {words}{got}", f"write each entry as a {table} table"
        return f"must be {words}{got}", _KEY_FIXES.get(leaf, f"write e.g. {leaf} = {example}")
    if kind in ("greater_than", "greater_than_equal"):
        op = ">" if kind == "greater_than" else ">="
        limit = _show(ctx.get("gt", ctx.get("ge")))
        return f"must be {op} {limit}{_UNITS.get(leaf, '')}{got}", _KEY_FIXES.get(leaf)
    if kind == "string_pattern_mismatch":
        return f"{_show(error.get('input'))} is not a usable name", NAME_FIX
    if kind == "string_too_short":
        return "must not be empty", f"give {leaf} a value, or leave the key out if optional"
    if kind == "too_short":
        return "must have at least one entry", _KEY_FIXES.get(leaf)
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}{got}", _KEY_FIXES.get(leaf)
    if kind == "value_error" and isinstance(ctx.get("error"), _Invalid):
        invalid: _Invalid = ctx["error"]
        return invalid.message, invalid.fix
    return f"{error['msg']}{got}", None


# --- the loader -----------------------------------------------------------------------------


@dataclass
class _Expanded:
    """One expanded job with where it came from in the file."""

    index: int
    combination: dict[str, str]
    spec: JobSpec
    template: JobTemplate
    branches: frozenset[str] | None

    def where(self, path: str, *templates: Template) -> str:
        """``job[i] (NAME).<path>``: NAME is the expanded name when the key is about this
        combination (one of ``templates`` uses a matrix var), else the name as written; the
        combination follows when the expanded name does not tell it."""
        used = {v for t in templates for v in t.vars}
        own = bool(self.combination) and (not templates or bool(used & set(self.combination)))
        name = self.spec.name if own else self.template.name.source
        key = f"job[{self.index}] ({name})" + (f".{path}" if path else "")
        if own and not set(self.combination) <= set(self.template.name.vars):
            key += " (" + ", ".join(f"{k}={v}" for k, v in self.combination.items()) + ")"
        return key


class _Loader:
    """One pass over a parsed lab file, collecting problems as it goes."""

    _KINDS: ClassVar[dict[str, type[BaseModel]]] = {
        "tree": RawTree,
        "branch": RawBranch,
        "job": RawJob,
        "review": RawReview,
        "disable": RawDisable,
    }

    def __init__(self, file: Path, lab_dir: Path) -> None:
        self.file = file
        self.lab_dir = lab_dir
        self.problems: list[Problem] = []
        self.incomplete: set[str] = set()  # sections with invalid entries: skip cascades
        self.branch_names: frozenset[str] = frozenset()
        self.job_names: dict[int, str] = {}  # each [[job]]'s name as written, by index
        self.perf = PerfSettings()  # [perf], read before the jobs (their steps' keys win)

    def problem(self, key: str, message: str, fix: str | None = None) -> None:
        item = Problem(self.file, self.named(key), message, fix)
        if item not in self.problems:
            self.problems.append(item)

    def named(self, key: str) -> str:
        """``job[3].step[0].timeout`` → ``job[3] (build-{arch}).step[0].timeout``: a reader
        knows a job by its name, not by its place in the file."""
        match = _JOB_KEY.match(key)
        if match is None or int(match[1]) not in self.job_names:
            return key
        return f"{match[0]} ({self.job_names[int(match[1])]})" + key[match.end() :]

    def validate(
        self,
        model: type[BaseModel],
        data: Any,
        loc: tuple[str | int, ...],
        *,
        vital: frozenset[str] = frozenset(),
        placeholder: Mapping[str, Any] | None = None,
    ) -> tuple[Any, bool]:
        """The validated table and whether it was clean. After reporting its problems, a table
        is repaired when it can be, so that the rest is still checked: its invalid keys are
        dropped (to their defaults, or to ``placeholder``), unless one of them is ``vital``."""
        try:
            return model.model_validate(data), True
        except ValidationError as err:
            bad: set[str | int] = set()
            for error in err.errors(include_url=False):
                full = loc + tuple(error["loc"])
                own = model if len(error["loc"]) == 1 else None
                message, fix = _describe(error, full, own)
                self.problem(key_path(full), message, fix)
                bad.add(error["loc"][0] if error["loc"] else "")
        if not isinstance(data, dict) or bad & vital or "" in bad:
            repaired: Any = placeholder
        else:
            repaired = {**(placeholder or {}), **{k: v for k, v in data.items() if k not in bad}}
        try:
            return (model.model_validate(repaired) if repaired is not None else None), False
        except ValidationError:
            return None, False

    def entries(self, data: dict[str, Any], kind: str) -> list[tuple[int, Any]]:
        """The ``[[kind]]`` entries as (index, raw table)."""
        value = data.get(kind, [])
        if not isinstance(value, list):
            self.problem(
                kind, f"must be an array of tables (got {_show(value)})", f"write [[{kind}]]"
            )
            self.incomplete.add(kind)
            return []
        return list(enumerate(value))

    def section(self, data: dict[str, Any], kind: str) -> dict[int, Any]:
        """Validate every entry of ``[[kind]]``; the usable ones by index."""
        usable: dict[int, Any] = {}
        for index, raw in self.entries(data, kind):
            model = self.driver_model(kind, raw, index)
            if model is None:
                self.incomplete.add(kind)
                continue
            item, _ = self.validate(
                model, self.nested(kind, raw, index), (kind, index), vital=_VITAL[kind]
            )
            if item is None:
                self.incomplete.add(kind)
            else:
                usable[index] = item
        return usable

    def nested(self, kind: str, raw: Any, index: int) -> Any:
        """Validate the inner array of a ``[[job]]`` (``step``) or ``[[branch]]`` (``allow``)
        entry by entry, and give back the table with each invalid entry repaired (or replaced
        by a placeholder), so that the rest of the table is still checked and indices stay as
        in the file."""
        if kind not in _NESTED or not isinstance(raw, dict):
            return raw
        key, model = _NESTED[kind]
        entries = raw.get(key)
        if not isinstance(entries, list):
            return raw
        checked = []
        for i, sub in enumerate(entries):
            item, clean = self.validate(
                model, sub, (kind, index, key, i), placeholder=_PLACEHOLDERS[key]
            )
            if not clean:
                self.incomplete.add(f"{kind}.{key}")
            checked.append(item.model_dump() if item is not None else _PLACEHOLDERS[key])
        return {**raw, key: checked}

    def driver_model(self, kind: str, raw: Any, index: int) -> type[BaseModel] | None:
        """The model of a ``[[kind]]`` entry: a host's is its executor's, a review's its
        driver's (each driver registers its own keys); others have one."""
        drivers: Mapping[str, type[BaseModel]]
        if kind == "host":
            key, default, drivers = "executor", "local", HOST_MODELS
        elif kind == "review":
            key, default, drivers = "driver", None, REVIEW_MODELS
        else:
            return self._KINDS[kind]
        name = raw.get(key, default) if isinstance(raw, dict) else default
        model = drivers.get(name) if isinstance(name, str) else None
        if model is None:
            self.problem(
                f"{kind}[{index}].{key}",
                "is required" if name is None else f"unknown {key} {_show(name)}",
                f"use one of: {', '.join(drivers)}",
            )
        return model

    def unique(self, kind: str, items: Mapping[int, Any]) -> dict[str, Any]:
        """The items by name; a second use of a name is a problem."""
        by_name: dict[str, Any] = {}
        first: dict[str, int] = {}
        for index, item in items.items():
            if item.name in first:
                self.problem(
                    f"{kind}[{index}].name",
                    f"duplicate {kind} name {_show(item.name)} (also {kind}[{first[item.name]}])",
                    "give each a different name",
                )
            else:
                first[item.name] = index
                by_name[item.name] = item
        return by_name

    # --- sections -------------------------------------------------------------------------

    def top_level(self, data: dict[str, Any]) -> None:
        for key in data:
            if key not in _TOP_LEVEL:
                self.problem(
                    key_path((key,)),
                    f"unknown top-level key{_did_you_mean(key, _TOP_LEVEL)}",
                    "a lab file has [lab], [[tree]], [[branch]], [[host]], [[host_class]], [[job]],"
                    " [gate],"
                    " [mail], [web], [findings], [[review]] and [[disable]] only",
                )

    def host_classes(self, data: dict[str, Any]) -> dict[str, Any]:
        """``[[host_class]]`` keys given to the hosts of each class (labgate.hosts.config)."""
        from labgate.hosts.config import merge_host_classes

        merged, problems = merge_host_classes(data)
        for key, message, fix in problems:
            self.problem(key, message, fix)
        return merged

    def gate_section(self, data: dict[str, Any]) -> GateSettings:
        if "gate" not in data:
            return GateSettings()
        section, _ = self.validate(RawGate, data["gate"], ("gate",))
        return section.to_settings() if isinstance(section, RawGate) else GateSettings()

    def perf_section(self, data: dict[str, Any]) -> PerfSettings:
        if "perf" not in data:
            return PerfSettings()
        section, _ = self.validate(RawPerf, data["perf"], ("perf",))
        return section.to_settings() if isinstance(section, RawPerf) else PerfSettings()

    def mail_section(self, data: dict[str, Any]) -> MailConfig | None:
        if "mail" not in data:
            return None
        section, _ = self.validate(MailConfig, data["mail"], ("mail",))
        return section if isinstance(section, MailConfig) else None

    def findings_section(self, data: dict[str, Any]) -> Policy:
        if "findings" not in data:
            return Policy()
        section, _ = self.validate(RawFindings, data["findings"], ("findings",))
        return section.to_policy() if isinstance(section, RawFindings) else Policy()

    def access_section(self, data: dict[str, Any]) -> AccessSettings:
        if "access" not in data:
            return AccessSettings()
        section, _ = self.validate(RawAccess, data["access"], ("access",))
        return section.to_settings() if isinstance(section, RawAccess) else AccessSettings()

    def web_section(self, data: dict[str, Any]) -> RawWeb | None:
        if "web" not in data:
            return None
        section, _ = self.validate(RawWeb, data["web"], ("web",))
        return section if isinstance(section, RawWeb) else None

    def lab_section(self, data: dict[str, Any]) -> RawLabSection | None:
        if "lab" not in data:
            self.problem("lab", "is required", 'add a [lab] table with name = "..."')
            return None
        section, _ = self.validate(RawLabSection, data["lab"], ("lab",), vital=frozenset({"name"}))
        return section if isinstance(section, RawLabSection) else None

    def trees(self, raw: Mapping[str, RawTree]) -> dict[str, TreeSpec]:
        return {
            name: TreeSpec(name, _resolve_url(t.url, self.lab_dir), t.private)
            for name, t in raw.items()
        }

    def branches(
        self, raw: Mapping[int, RawBranch], trees: Mapping[str, TreeSpec]
    ) -> dict[str, BranchSpec]:
        check_trees = "tree" not in self.incomplete
        for index, b in raw.items():
            if check_trees and b.tree not in trees:
                self.problem(
                    f"branch[{index}].tree",
                    f"no [[tree]] named {_show(b.tree)}{_did_you_mean(b.tree, trees)}",
                    f"use one of: {', '.join(trees) or '(none: add a [[tree]])'}",
                )
            for tree in b.pin:
                if tree == b.tree:
                    self.problem(
                        key_path(("branch", index, "pin", tree)),
                        f"pins the tree under test {_show(tree)}",
                        f"remove it: the tree under test is taken at staging ({b.staging})",
                    )
                elif check_trees and tree not in trees:
                    self.problem(
                        key_path(("branch", index, "pin", tree)),
                        f"no [[tree]] named {_show(tree)}{_did_you_mean(tree, trees)}",
                        f"pin one of: {', '.join(t for t in trees if t != b.tree) or '(none)'}",
                    )
            private = [x for x in (b.tree, *b.pin) if x in trees and trees[x].private]
            if private and b.embargo is None:
                self.problem(
                    f"branch[{index}]",
                    f"{_show(b.name)} tests or pins the private tree {_show(private[0])} but is "
                    "not under embargo: its flights, logs and pages would show the undisclosed "
                    "code to everyone",
                    'add embargo = { group = "...", until = "..." } to the branch',
                )
        self.branch_names = frozenset(b.name for b in raw.values())
        return {
            b.name: BranchSpec(
                name=b.name,
                tree=b.tree,
                staging=b.staging,
                tested=b.tested,
                pin=tuple(b.pin.items()),
                allow=tuple(AllowedFailure(a.job, a.step, a.reason) for a in b.allow),
                embargo=b.embargo.to_embargo() if b.embargo else None,
            )
            for b in self.unique("branch", raw).values()
        }

    # --- jobs -----------------------------------------------------------------------------

    def template(self, text: str, key: str) -> Template | None:
        try:
            return _parse_template(text)
        except TemplateError as err:
            self.problem(key, err.message, err.fix)
            return None

    def job_template(self, index: int, job: RawJob) -> JobTemplate | None:
        """Parse a job's strings and check its vars; None when anything is wrong."""
        before = len(self.problems)
        at = f"job[{index}]"
        matrix: list[tuple[str, tuple[str, ...]]] = []
        for var, values in job.matrix.items():
            key = key_path(("job", index, "matrix", var))
            if not VAR_NAME.fullmatch(var):
                self.problem(key, "is not a var name", "use letters, digits and _ (e.g. arch)")
            if not values:
                self.problem(key, "has no values", f'list at least one, e.g. {var} = ["a"]')
            for dup in sorted(v for v, n in Counter(values).items() if n > 1):
                self.problem(key, f"lists {_show(dup)} twice", "list each value once")
            matrix.append((var, tuple(values)))
        for var in job.runvars:
            key = key_path(("job", index, "runvars", var))
            if not VAR_NAME.fullmatch(var):
                self.problem(key, "is not a var name", "use letters, digits and _")
            if var in job.matrix:
                self.problem(key, "is also a matrix var", "rename the runvar or the matrix var")

        matrix_vars = list(job.matrix)
        all_vars = matrix_vars + [v for v in job.runvars if v not in job.matrix]

        def parse(text: str, path: str, known: list[str], what: str) -> Template:
            key = f"{at}.{path}"
            parsed = self.template(text, key)
            for var in parsed.vars if parsed else ():
                if var not in known:
                    self.unknown_var(key, var, known, what, var in job.runvars)
            return parsed or Template(text, (text,))

        runvars = tuple(
            (k, parse(v, key_path(("runvars", k)), matrix_vars, "runvar values"))
            for k, v in job.runvars.items()
        )
        steps = tuple(
            StepTemplate(
                name=parse(s.name, f"step[{i}].name", all_vars, "step names"),
                run=parse(s.run, f"step[{i}].run", all_vars, "commands"),
                timeout=s.timeout,
                results=parse(s.results, f"step[{i}].results", all_vars, "results")
                if s.results is not None
                else None,
                metrics=parse(s.metrics, f"step[{i}].metrics", all_vars, "metrics")
                if s.metrics is not None
                else None,
                repeat=s.repeat,
                perf=s.perf(self.perf),
            )
            for i, s in enumerate(job.step)
        )
        template = JobTemplate(
            name=parse(job.name, "name", all_vars, "names"),
            matrix=tuple(matrix),
            runvars=runvars,
            requires=tuple(
                parse(r, f"requires[{i}]", all_vars, "requires") for i, r in enumerate(job.requires)
            ),
            depends=tuple(
                parse(d, f"depends[{i}]", all_vars, "depends") for i, d in enumerate(job.depends)
            ),
            steps=steps,
            exclusive=job.exclusive,
        )
        return template if len(self.problems) == before else None

    def unknown_var(self, key: str, var: str, known: list[str], what: str, is_runvar: bool) -> None:
        if is_runvar:
            self.problem(
                key,
                f"{{{var}}} is a runvar, and {what} may use matrix vars only",
                "write the value out, or make it a matrix var with one value",
            )
            return
        self.problem(
            key,
            f"unknown var {{{var}}}{_did_you_mean(var, known)}",
            f"use one of: {', '.join(known) or '(none defined)'}; define it in matrix or "
            f"runvars; or write {{{{{var}}}}} for literal braces",
        )

    def jobs(
        self, raw: Mapping[int, RawJob], branches: Mapping[str, BranchSpec], max_jobs: int
    ) -> list[_Expanded]:
        expanded: list[_Expanded] = []
        for index, job in raw.items():
            if job.branches is not None:
                for i, name in enumerate(job.branches):
                    if "branch" not in self.incomplete and name not in branches:
                        self.problem(
                            f"job[{index}].branches[{i}]",
                            f"no [[branch]] named {_show(name)}{_did_you_mean(name, branches)}",
                            f"use one of: {', '.join(branches) or '(none: add a [[branch]])'}",
                        )
            template = self.job_template(index, job)
            if template is None:
                self.incomplete.add("job")
                continue
            count = job_count(template)  # before expanding: a typo can make it a billion
            if len(expanded) + count > max_jobs:
                self.problem(
                    f"job[{index}].matrix",
                    f"expands to {count:,} jobs ({len(expanded) + count:,} with the jobs before "
                    f"it), over the limit of {max_jobs:,} jobs in a lab",
                    "use fewer matrix values, or raise [lab] max_jobs if you mean it",
                )
                self.incomplete.add("job")
                continue
            only = frozenset(job.branches) if job.branches is not None else None
            for combination, spec in _expand_jobs(template):
                expanded.append(_Expanded(index, combination, spec, template, only))
        return expanded

    def check_jobs(self, jobs: list[_Expanded], hosts: Sequence[HostSpec]) -> None:
        by_name: dict[str, _Expanded] = {}
        for job in jobs:
            other = by_name.setdefault(job.spec.name, job)
            if other is not job:
                self.problem(
                    job.where("name"),
                    f"job name {_show(job.spec.name)} is also {other.where('')}",
                    "put every matrix var in the name, or rename one of them",
                )
            self.check_names(job)
            self.check_steps(job)
        complete = "job" not in self.incomplete
        for job in jobs:
            self.check_depends(job, by_name, complete)
        if "host" not in self.incomplete:
            for job in jobs:
                self.check_hosts(job, hosts)
        self.check_cycles(jobs, by_name)

    def check_names(self, job: _Expanded) -> None:
        names = [("name", job.spec.name, job.template.name)] + [
            (f"step[{i}].name", step.name, job.template.steps[i].name)
            for i, step in enumerate(job.spec.steps)
            if step.name != _INVALID
        ]
        for path, name, template in names:
            if not NAME.fullmatch(name):
                self.problem(
                    job.where(path, template), f"{_show(name)} is not a usable name", NAME_FIX
                )

    def check_steps(self, job: _Expanded) -> None:
        seen: dict[str, int] = {}
        for i, step in enumerate(job.spec.steps):
            if step.name == _INVALID:
                continue
            first = seen.setdefault(step.name, i)
            if first != i:
                self.problem(
                    job.where(f"step[{i}].name", job.template.steps[i].name),
                    f"duplicate step name {_show(step.name)} (also step[{first}])",
                    "give each step of a job a different name",
                )

    def check_depends(
        self, job: _Expanded, by_name: Mapping[str, _Expanded], complete: bool
    ) -> None:
        for i, dep in enumerate(job.spec.depends):
            where = job.where(f"depends[{i}]", job.template.depends[i])
            target = by_name.get(dep)
            if target is None:
                if complete:
                    self.problem(
                        where,
                        f"no job named {_show(dep)}{_did_you_mean(dep, by_name)}",
                        "depend on a job of this file, by its name after expansion: "
                        + _some(sorted(by_name)),
                    )
                continue
            if target.branches is None:
                continue
            if job.branches is None:
                only = ", ".join(sorted(target.branches))
                message = f"{_show(dep)} runs only on {only}, this job on every branch"
            elif missing := sorted((job.branches - target.branches) & self.branch_names):
                message = f"{_show(dep)} does not run on {', '.join(missing)}, where this job runs"
            else:
                continue
            self.problem(
                where,
                message,
                f"add those branches to {_show(dep)}'s branches, or limit this job's branches",
            )

    def check_hosts(self, job: _Expanded, hosts: Sequence[HostSpec]) -> None:
        needed = set(job.spec.requires)
        if any(h.flags >= needed for h in hosts):
            return
        where = job.where("requires", *job.template.requires)
        if not hosts:
            self.problem(where, "no [[host]] is defined to run this job", "add a [[host]]")
            return
        have = "; ".join(f"{h.name}: {', '.join(sorted(h.flags)) or '(no flags)'}" for h in hosts)
        self.problem(
            where,
            f"no host has all of {', '.join(job.spec.requires)}",
            f"add the missing flags to a [[host]] or change requires (hosts: {have})",
        )

    def check_cycles(self, jobs: list[_Expanded], by_name: Mapping[str, _Expanded]) -> None:
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        reported: set[frozenset[str]] = set()

        def visit(name: str, path: list[str]) -> None:
            state[name] = 1
            path.append(name)
            for dep in by_name[name].spec.depends:
                if dep not in by_name:
                    continue
                if state.get(dep) == 1:
                    cycle = [*path[path.index(dep) :], dep]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        job = by_name[dep]
                        self.problem(
                            job.where("depends", *job.template.depends),
                            f"depends form a cycle: {' -> '.join(cycle)}",
                            "remove one of these depends",
                        )
                elif dep not in state:
                    visit(dep, path)
            path.pop()
            state[name] = 2

        for job in jobs:
            if job.spec.name not in state:
                visit(job.spec.name, [])

    def reviews(
        self, raw: Mapping[int, RawReview], branches: Mapping[str, BranchSpec]
    ) -> tuple[ReviewSpec, ...]:
        for index, r in raw.items():
            if "branch" not in self.incomplete and r.branch not in branches:
                self.problem(
                    f"review[{index}].branch",
                    f"no [[branch]] named {_show(r.branch)}{_did_you_mean(r.branch, branches)}",
                    f"use one of: {', '.join(branches) or '(none: add a [[branch]])'}",
                )
        return tuple(r.to_spec(self.lab_dir) for r in self.unique("review", raw).values())

    def disabled(self, raw: Mapping[int, RawDisable], jobs: list[_Expanded]) -> list[DisabledTest]:
        if "job" not in self.incomplete:
            for index, d in raw.items():
                matched = [j.spec for j in jobs if fnmatch.fnmatchcase(j.spec.name, d.job)]
                if not matched:
                    self.problem(
                        f"disable[{index}].job",
                        f"{_show(d.job)} matches no job",
                        "correct the glob or remove the entry",
                    )
                elif not any(fnmatch.fnmatchcase(s.name, d.step) for j in matched for s in j.steps):
                    self.problem(
                        f"disable[{index}].step",
                        f"{_show(d.step)} matches no step of the jobs {_show(d.job)} matches",
                        "correct the glob or remove the entry",
                    )
        return [DisabledTest(d.job, d.step, d.reason, d.bug) for d in raw.values()]

    def check_allow(self, raw: Mapping[int, RawBranch], jobs: list[_Expanded]) -> None:
        if "job" in self.incomplete:
            return
        for index, b in raw.items():
            mine = [j.spec for j in jobs if j.branches is None or b.name in j.branches]
            for i, allow in enumerate(b.allow):
                if allow.job == _INVALID:
                    continue
                matched = [j for j in mine if fnmatch.fnmatchcase(j.name, allow.job)]
                at = f"branch[{index}].allow[{i}]"
                if not matched:
                    self.problem(
                        f"{at}.job",
                        f"{_show(allow.job)} matches no job of this branch",
                        "correct the glob or remove the entry",
                    )
                elif "job.step" not in self.incomplete and not any(
                    fnmatch.fnmatchcase(s.name, allow.step) for j in matched for s in j.steps
                ):
                    self.problem(
                        f"{at}.step",
                        f"{_show(allow.step)} matches no step of the jobs "
                        f"{_show(allow.job)} matches",
                        "correct the glob or remove the entry",
                    )

    # --- all together ---------------------------------------------------------------------

    def load(self, data: dict[str, Any]) -> Lab | None:
        jobs = data.get("job")
        for index, raw in enumerate(jobs if isinstance(jobs, list) else []):
            if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]:
                self.job_names[index] = raw["name"]
        self.top_level(data)
        data = self.host_classes(data)
        lab = self.lab_section(data)
        raw_trees = self.section(data, "tree")
        raw_branches = self.section(data, "branch")
        raw_hosts = self.section(data, "host")
        raw_jobs = self.section(data, "job")
        self.perf = self.perf_section(data)
        trees = self.trees(self.unique("tree", raw_trees))
        branches = self.branches(raw_branches, trees)
        hosts = tuple(h.to_spec(self.lab_dir) for h in self.unique("host", raw_hosts).values())
        expanded = self.jobs(raw_jobs, branches, lab.max_jobs if lab else MAX_JOBS)
        self.check_jobs(expanded, hosts)
        self.check_allow(raw_branches, expanded)
        reviews = self.reviews(self.section(data, "review"), branches)
        disabled = self.disabled(self.section(data, "disable"), expanded)
        gate = self.gate_section(data)
        mail = self.mail_section(data)
        web = self.web_section(data)
        findings = self.findings_section(data)
        access = self.access_section(data)
        if lab is not None:
            self.check_step_env(lab, reviews, mail)
        if self.problems or lab is None:
            return None
        return Lab(
            dir=self.lab_dir,
            file=self.file if self.file.is_absolute() else self.lab_dir / self.file.name,
            name=lab.name,
            database_url=_database_url(lab.database, self.lab_dir),
            log_dir=under(self.lab_dir, lab.logs),
            work_dir=under(self.lab_dir, lab.work),
            artifacts_dir=under(self.lab_dir, lab.artifacts),
            mirror_dir=under(self.lab_dir, lab.mirrors),
            poll_interval=lab.poll_interval,
            trees=trees,
            branches=branches,
            hosts=hosts,
            jobs=tuple(j.spec for j in expanded),
            job_branches={j.spec.name: j.branches for j in expanded if j.branches is not None},
            reviews=reviews,
            disabled=tuple(disabled),
            gate=gate,
            perf=self.perf,
            mail=mail,
            findings=findings,
            web_token=web.token if web is not None else None,
            web_hosts=tuple(web.hosts) if web is not None else (),
            web_anonymous=web.anonymous if web is not None else True,
            web_url=web.url if web is not None else None,
            step_env=lab.env,
            pass_env=tuple(lab.pass_env),
            access=access,
        )

    def check_step_env(
        self, lab: RawLabSection, reviews: Sequence[ReviewSpec], mail: MailConfig | None
    ) -> None:
        """``[lab] env`` and ``pass_env``: variable names, none of labgate's own, no secret."""
        secrets = secret_env_names(mail, reviews)
        for key, names in (("env", list(lab.env)), ("pass_env", lab.pass_env)):
            for index, name in enumerate(names):
                at = f"lab.env.{name}" if key == "env" else f"lab.pass_env[{index}]"
                if not ENV_NAME.fullmatch(name):
                    self.problem(at, f"{_show(name)} is not a variable name", "use A-Z, 0-9, _")
                elif key == "env" and name.startswith("LABGATE_"):
                    self.problem(at, "LABGATE_* variables are labgate's own", "use another name")
                elif key == "pass_env" and name in secrets:
                    self.problem(
                        at,
                        f"{name} is a secret (a *_env key names it): steps never get it",
                        f"remove {name}; a step runs code from anyone who sends a patch",
                    )


# --- paths ----------------------------------------------------------------------------------

_SCP_URL = re.compile(r"^[^/:]+:")  # git's rule: "host:path" with no slash before the colon


def _resolve_url(url: str, lab_dir: Path) -> str:
    """A URL as is; a local path made absolute from the lab dir."""
    if "://" in url or _SCP_URL.match(url):
        return url
    return str(under(lab_dir, url))


def _database_url(database: str | None, lab_dir: Path) -> str:
    if database is None:
        return f"sqlite:///{lab_dir}/labgate.db"
    prefix = "sqlite:///"
    if database.startswith(prefix):
        rest = database[len(prefix) :]
        if rest and rest != ":memory:" and not rest.startswith("/"):
            return f"{prefix}{under(lab_dir, rest)}"
    return database


# --- entry points ---------------------------------------------------------------------------

_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _toml_problem(err: tomllib.TOMLDecodeError, file: Path) -> Problem:
    message = str(err)
    at = _TOML_AT.search(message)
    if at:
        key = f"line {at.group(1)}, column {at.group(2)}"
        message = message[: at.start()]
    else:
        key, message = "end of file", message.removesuffix(" (at end of document)")
    message = message[:1].lower() + message[1:]
    return Problem(
        file,
        key,
        f"TOML syntax error: {message}",
        "correct the TOML there (strings need quotes, one key = value per line; see toml.io)",
    )


def parse_lab(text: str, *, file: Path, lab_dir: Path) -> Lab:
    """Parse and validate lab.toml text; ``file`` names it in messages, relative paths in it are
    taken from ``lab_dir``. Raises ConfigError with every problem found."""
    lab_dir = lab_dir.expanduser().resolve()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([_toml_problem(err, file)]) from None
    loader = _Loader(file, lab_dir)
    lab = loader.load(data)
    if lab is None:
        raise ConfigError(loader.problems)
    return lab


def load_lab(lab_dir: Path) -> Lab:
    """Read and validate ``lab_dir / "lab.toml"``; raises ConfigError."""
    file = lab_dir / LAB_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [
                Problem(
                    file,
                    "",
                    "no such file",
                    f"create {LAB_FILE} in {lab_dir}, or point at the lab dir",
                )
            ]
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([Problem(file, "", f"can not read it ({err})", None)]) from None
    return parse_lab(text, file=file, lab_dir=lab_dir)


# --- labgate check --------------------------------------------------------------------------


def render_matrix(lab: Lab) -> str:
    """What ``labgate check`` prints: per branch its revision tuple refs and jobs, then the hosts
    and which hosts can run each job."""
    lines = [
        f"lab {lab.name} ({lab.file})",
        f"  database {lab.database_url}",
        f"  logs {lab.log_dir}  work {lab.work_dir}  artifacts {lab.artifacts_dir}",
        f"  mirrors {lab.mirror_dir}  poll every {lab.poll_interval:g}s",
        "",
    ]
    for name, branch in lab.branches.items():
        lines.extend(_render_branch(lab, name, branch))
    if not lab.branches:
        lines += ["no branches", ""]
    lines.extend(_render_reviews(lab))
    lines.append("hosts")
    for host in lab.hosts:
        flags = ", ".join(sorted(host.flags)) or "(no flags)"
        lines.append(f"  {host.name}  [{flags}]  slots {host.slots}  executor {host.executor}")
    if not lab.hosts:
        lines.append("  (none)")
    lines += ["", "which hosts can run each job"]
    width = max((len(j.name) for j in lab.jobs), default=0)
    for job in lab.jobs:
        hosts = ", ".join(h.name for h in lab.hosts_for(job)) or "(none)"
        lines.append(f"  {job.name:<{width}}  {hosts}")
    return "\n".join(lines) + "\n"


def _render_reviews(lab: Lab) -> list[str]:
    lines = []
    for r in lab.reviews:
        target = f" (changes for {r.target})" if r.target else ""
        mode = "voting" if r.voting else "comments only"
        lines.append(
            f"review {r.name}: {r.driver} {r.server} {r.project}{target} -> branch {r.branch},"
            f" {mode}, recheck /{r.recheck}/"
        )
    if lab.reviews:
        lines.append("")
    if lab.disabled:
        lines.append("disabled tests (not run)")
        for d in lab.disabled:
            bug = f" [{d.bug}]" if d.bug else ""
            lines.append(f"  {d.job} / {d.step}: {d.reason}{bug}")
        lines.append("")
    return lines


def _render_branch(lab: Lab, name: str, branch: BranchSpec) -> list[str]:
    refs = lab.revision_refs(name)
    tuple_text = "  ".join(f"{tree}@{ref}" for tree, ref in refs.items())
    jobs = lab.jobs_for(name)
    lines = [
        f"branch {name}: tests {branch.tree} {branch.staging}, pushes to {branch.tested}",
        f"  revisions  {tuple_text}",
    ]
    lines += [f"  allowed failure  {a.job} / {a.step}: {a.reason}" for a in branch.allow]
    lines.append(f"  jobs ({len(jobs)})")
    for job in jobs:
        lines.extend(_render_job(job))
    lines.append("")
    return lines


def _render_job(job: JobSpec) -> list[str]:
    attrs = [
        f"requires {', '.join(job.requires)}" if job.requires else "",
        f"depends {', '.join(job.depends)}" if job.depends else "",
        "exclusive" if job.exclusive else "",
    ]
    lines = ["    " + "  ".join([job.name, *filter(None, attrs)])]
    if job.runvars:
        lines.append("      runvars  " + " ".join(f"{k}={v}" for k, v in job.runvars))
    for step in job.steps:
        extra = [
            f"timeout {step.timeout:g}s" if step.timeout is not None else "",
            f"results {step.results}" if step.results else "",
            f"metrics {step.metrics}" if step.metrics else "",
            f"repeat {step.repeat}" if step.repeat > 1 else "",
        ]
        shown = "  ".join(filter(None, extra))
        lines.append(f"      step {step.name}: {step.run}" + (f"  ({shown})" if shown else ""))
    return lines


# Real hosts (executor = "ssh", lifecycle keys) register their models in HOST_MODELS.
import labgate.hosts.config  # noqa: E402

# Code review drivers register their [[review]] models in REVIEW_MODELS (light modules: keys
# and settings only; their connectors are imported when a loop runs).
import labgate.review.gerrit.settings  # noqa: E402
import labgate.review.github.settings  # noqa: E402
import labgate.review.reviewboard.settings  # noqa: E402, F401
