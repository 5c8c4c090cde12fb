"""The base of lab.toml's typed tables: what every table model, and every driver's own keys,
build on (a driver's module extends :class:`RawHost` and registers it in :data:`HOST_MODELS`
without importing the loader, :mod:`labgate.config`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from labgate.model import HostSpec, Lifecycle

Text = Annotated[str, StringConstraints(min_length=1)]
# Names become file names and URL parts (logs/<flight>/<job>/<step>.log, /host/<name>).
NAME = re.compile(r"[A-Za-z0-9_+=@,-][A-Za-z0-9_.+=@,-]*")
NAME_FIX = "use letters, digits and - _ . + = @ , only (names become file names and URLs)"
Name = Annotated[str, StringConstraints(min_length=1, pattern=f"^(?:{NAME.pattern})$")]


class _Raw(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


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
