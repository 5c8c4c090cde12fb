"""The base of lab.toml's typed tables: what every table model, and every driver's own keys,
build on (an executor's module extends :class:`RawHost` and registers it in :data:`HOST_MODELS`,
a code review driver's extends :class:`RawReview` into :data:`REVIEW_MODELS`, without importing
the loader, :mod:`labgate.config`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from labgate.model import HostSpec, Lifecycle, ReviewSettings, ReviewSpec

Text = Annotated[str, StringConstraints(min_length=1)]
S = TypeVar("S")
# Names become file names and URL parts (logs/<flight>/<job>/<step>.log, /host/<name>).
NAME = re.compile(r"[A-Za-z0-9_+=@,-][A-Za-z0-9_.+=@,-]*")
NAME_FIX = "use letters, digits and - _ . + = @ , only (names become file names and URLs)"
Name = Annotated[str, StringConstraints(min_length=1, pattern=f"^(?:{NAME.pattern})$")]


class _Raw(BaseModel):
    # a model's validator is built when it first validates, not when its module is imported:
    # a lab without [[review]], [access] or [mail] never builds theirs (start-up time)
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class _Invalid(ValueError):
    """A validator's refusal that carries its own fix."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


class RawHost(_Raw):
    """Keys every host has; each executor adds its own in a subclass (see HOST_MODELS)."""

    name: Name
    flags: list[Text] = Field(default_factory=list)
    slots: int = Field(default=1, ge=1)
    executor: str = "local"

    def lifecycle(self) -> Lifecycle:
        """The host's lifecycle commands (a driver with lifecycle keys says which)."""
        return Lifecycle()

    def connection(self, lab_dir: Path) -> object | None:
        """The executor's own typed settings, paths made absolute (None: a local host)."""
        return None

    def address(self) -> str | None:
        """Where lifecycle commands find the host ($LABGATE_HOST_ADDRESS), if it has one."""
        return None

    def to_spec(self, lab_dir: Path) -> HostSpec:
        return HostSpec(
            name=self.name,
            flags=frozenset(self.flags),
            slots=self.slots,
            executor=self.executor,
            lifecycle=self.lifecycle(),
            connection=self.connection(lab_dir),
            address=self.address(),
        )


class RawLocalHost(RawHost):
    executor: Literal["local"] = "local"


# An executor with its own keys (ssh: address, user, ...) adds a RawHost subclass here.
HOST_MODELS: dict[str, type[RawHost]] = {"local": RawLocalHost}


class RawReview(_Raw):
    """``[[review]]``: keys every code review driver has; each driver adds its own in a subclass
    registered in :data:`REVIEW_MODELS` (its credentials, how it reports) and says what its
    settings are (:meth:`settings`)."""

    name: Name
    driver: str
    server: Text
    project: Text
    branch: Text
    target: Text | None = None
    voting: bool = True
    recheck: Text = r"^recheck( labgate)?$"
    web_url: Text | None = None
    retries: int = Field(default=2, ge=0)
    ci_accounts: list[Text] = Field(default_factory=list)

    @field_validator("recheck")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise _Invalid(
                f"is not a regular expression ({error})", 'write e.g. recheck = "^recheck$"'
            ) from None
        return value

    def settings(self, lab_dir: Path) -> ReviewSettings:
        """The driver's own typed settings, paths made absolute (``ReviewSpec.settings``)."""
        raise NotImplementedError

    def to_spec(self, lab_dir: Path) -> ReviewSpec:
        return ReviewSpec(
            name=self.name,
            driver=self.driver,
            server=self.server.rstrip("/"),
            project=self.project,
            branch=self.branch,
            target=self.target,
            voting=self.voting,
            recheck=self.recheck,
            web_url=self.web_url,
            retries=self.retries,
            ci_accounts=tuple(self.ci_accounts),
            settings=self.settings(lab_dir),
        )


def under(lab_dir: Path, value: str) -> Path:
    """``value`` as an absolute, normalised path; relative ones are taken from the lab dir."""
    return Path(os.path.normpath(lab_dir / Path(value).expanduser()))


def settings_of(spec: ReviewSpec, kind: type[S]) -> S:
    """The driver settings of ``spec``, which must be of ``kind`` (a connector's own)."""
    if not isinstance(spec.settings, kind):
        raise TypeError(f"[[review]] {spec.name}: driver {spec.driver}, not {kind.__name__}")
    return spec.settings


# A code review driver adds its RawReview subclass here (its module is imported by the loader).
REVIEW_MODELS: dict[str, type[RawReview]] = {}
