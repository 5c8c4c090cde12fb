"""The values of static analysis: a finding, its level, its triage."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Level(StrEnum):
    """A SARIF result's level (``none`` is kept as ``note``: both only inform)."""

    NOTE = "note"
    WARNING = "warning"
    ERROR = "error"


class TriageState(StrEnum):
    FALSE_POSITIVE = "false-positive"
    INTENTIONAL = "intentional"


@dataclass(frozen=True)
class Finding:
    """One result of an analyser, as stored for a flight's step.

    ``identity`` is what the finding is known by across revisions: the tool's fingerprints when it
    gives them, else a hash of rule, normalised snippet and enclosing function; never a line.
    ``snippet_key`` (rule, normalised snippet, message) matches it again when its identity changed
    (a renamed function, an edit elsewhere in the function a tool hashed). ``path`` is relative
    to the job's work dir (``<tree>/<file>``); ``line`` and ``column`` say where it is at this
    revision.
    """

    job: str
    step: str
    rule: str
    level: Level
    message: str
    path: str
    line: int | None
    column: int | None
    function: str
    identity: str
    snippet_key: str
    tool: str = ""

    @property
    def tree(self) -> str | None:
        """The tree the file belongs to (the first part of ``path``), if it has one."""
        head, sep, _ = self.path.partition("/")
        return head if sep else None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "job": self.job,
            "step": self.step,
            "tool": self.tool,
            "rule": self.rule,
            "level": str(self.level),
            "message": self.message,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "function": self.function,
        }


@dataclass(frozen=True)
class Triage:
    """What a person said of a finding (by its identity): not a defect, or meant so."""

    identity: str
    state: TriageState
    reason: str
    by: str
    at: str = ""

    def to_json(self) -> dict[str, str]:
        return {"state": str(self.state), "reason": self.reason, "by": self.by, "at": self.at}
