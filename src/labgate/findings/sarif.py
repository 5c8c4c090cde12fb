"""Reading SARIF 2.1.0 (any analyser's) into `Finding` values.

Each result gives its rule (``ruleId``, or ``rule.id``, or the rule ``rule.index`` points at), its
level (the result's, else the rule's ``defaultConfiguration``, else ``warning``; ``none`` reads as
``note``), its message and its first physical location. The location's URI is made relative to
the job's work dir: a ``file://`` URI under it, or a relative one resolved against its
``uriBaseId`` (``originalUriBaseIds``), the SARIF file's dir, the work dir or a tree's dir under
it, whichever holds the file. The source file (at this revision, in the work dir) gives the
snippet and the enclosing function the identity is made of; a file that cannot be read falls back
to ``region.snippet`` and the result's ``logicalLocations``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from labgate.findings.identity import enclosing_function, identity, snippet_key
from labgate.findings.model import Finding, Level

__all__ = ["SarifError", "parse_sarif"]

SNIPPET_LINES = 5  # a region longer than this is known by its first lines


class SarifError(Exception):
    """A SARIF file labgate cannot read; the message names the file and where in it."""


_LEVELS = {"error": Level.ERROR, "warning": Level.WARNING, "note": Level.NOTE, "none": Level.NOTE}


def parse_sarif(path: Path, workdir: Path, job: str, step: str) -> list[Finding]:
    """The findings of one SARIF file a step of ``job`` left in ``workdir``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SarifError(f"{path}: cannot read: {error.strerror or error}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SarifError(f"{path}: not JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("runs"), list):
        raise SarifError(f"{path}: not a SARIF 2.1.0 log (no 'runs' array)")
    version = document.get("version")
    if version is not None and version != "2.1.0":
        raise SarifError(f"{path}: SARIF version {version!r}; labgate reads 2.1.0")
    reader = _Reader(path, workdir, job, step)
    findings: list[Finding] = []
    for r, run in enumerate(document["runs"]):
        findings += reader.run(run, f"runs[{r}]")
    return findings


class _Reader:
    def __init__(self, path: Path, workdir: Path, job: str, step: str) -> None:
        self.path, self.workdir, self.job, self.step = path, workdir.resolve(), job, step
        self.sources: dict[str, list[str] | None] = {}
        self.roots = [path.parent, self.workdir]
        self.roots += sorted(p for p in self.workdir.iterdir() if p.is_dir())

    def fail(self, where: str, problem: str) -> SarifError:
        return SarifError(f"{self.path}: {where}: {problem}")

    def run(self, run: Any, where: str) -> list[Finding]:
        if not isinstance(run, dict):
            raise self.fail(where, "not an object")
        driver = _get(run, "tool", "driver") or {}
        tool = str(driver.get("name", "")) if isinstance(driver, dict) else ""
        rules = driver.get("rules", []) if isinstance(driver, dict) else []
        bases = run.get("originalUriBaseIds") or {}
        results = run.get("results") or []
        if not isinstance(results, list):
            raise self.fail(f"{where}.results", "not an array")
        out = []
        for i, result in enumerate(results):
            here = f"{where}.results[{i}]"
            if not isinstance(result, dict):
                raise self.fail(here, "not an object")
            out.append(self.result(result, here, tool, rules, bases))
        return out

    def result(
        self, result: dict[str, Any], where: str, tool: str, rules: Any, bases: Any
    ) -> Finding:
        rule_obj = _rule(result, rules)
        rule = result.get("ruleId") or _get(result, "rule", "id") or rule_obj.get("id")
        if not isinstance(rule, str) or not rule:
            raise self.fail(where, "no ruleId (nor rule.id, nor a rule at rule.index)")
        level_name = result.get("level") or _get(rule_obj, "defaultConfiguration", "level")
        level = _LEVELS.get(str(level_name or "warning"))
        if level is None:
            raise self.fail(f"{where}.level", f"{level_name!r} is not a SARIF level")
        message = _get(result, "message", "text")
        if not isinstance(message, str):
            message = _get(result, "message", "markdown") or ""
        location = _get(result, "locations", 0, "physicalLocation") or {}
        uri = _get(location, "artifactLocation", "uri")
        base = _get(location, "artifactLocation", "uriBaseId")
        rel = self.relative(str(uri), base, bases) if uri else ""
        region = location.get("region") or {} if isinstance(location, dict) else {}
        line = _int(region.get("startLine"))
        end = _int(region.get("endLine")) or line
        column = _int(region.get("startColumn"))
        source = self.source(rel) if rel else None
        snippet, function = "", ""
        if source is not None and line is not None:
            last = min(end or line, line + SNIPPET_LINES - 1)
            snippet = "\n".join(source[line - 1 : last])
            function = enclosing_function(source, line, rel)
        if not snippet:
            snippet = str(_get(region, "snippet", "text") or "")
        if not function:
            function = _logical_function(result)
        fingerprints = {
            **_strings(result.get("partialFingerprints")),
            **_strings(result.get("fingerprints")),
        }
        key_snippet = snippet or message
        return Finding(
            job=self.job,
            step=self.step,
            rule=rule,
            level=level,
            message=str(message),
            path=rel,
            line=line,
            column=column,
            function=function,
            identity=identity(rule, key_snippet, function, fingerprints),
            snippet_key=snippet_key(rule, key_snippet, str(message)),
            tool=tool,
        )

    def relative(self, uri: str, base: Any, bases: Any) -> str:
        """The file's path relative to the work dir (as given when it is not under it)."""
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            candidates = [Path(unquote(parsed.path))]
        elif parsed.scheme:
            return uri
        else:
            rel = unquote(uri)
            roots = []
            base_uri = _get(bases, base, "uri") if isinstance(base, str) else None
            if isinstance(base_uri, str):
                roots.append(Path(unquote(urlparse(base_uri).path)))
            roots += self.roots
            candidates = [root / rel for root in roots]
        for candidate in candidates:
            try:
                resolved = candidate.resolve()
                inside = resolved.relative_to(self.workdir)
            except (OSError, ValueError):
                continue
            if resolved.is_file():
                return inside.as_posix()
        return uri

    def source(self, rel: str) -> list[str] | None:
        if rel not in self.sources:
            file = self.workdir / rel
            try:
                inside = file.resolve().is_relative_to(self.workdir)
                text = file.read_text(encoding="utf-8", errors="replace") if inside else None
            except OSError:
                text = None
            self.sources[rel] = text.splitlines() if text is not None else None
        return self.sources[rel]


def _get(value: Any, *keys: str | int) -> Any:
    for key in keys:
        if isinstance(key, int):
            if not isinstance(value, list) or len(value) <= key:
                return None
        elif not isinstance(value, dict):
            return None
        value = value[key] if isinstance(key, int) else value.get(key)
    return value


def _rule(result: Mapping[str, Any], rules: Any) -> dict[str, Any]:
    index = _get(result, "rule", "index")
    if index is None:
        index = result.get("ruleIndex")
    if isinstance(index, int) and isinstance(rules, list) and 0 <= index < len(rules):
        found = rules[index]
        return found if isinstance(found, dict) else {}
    rule_id = result.get("ruleId")
    if isinstance(rules, list):
        for rule in rules:
            if isinstance(rule, dict) and rule.get("id") == rule_id:
                return rule
    return {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int)}


def _logical_function(result: Mapping[str, Any]) -> str:
    locations: Sequence[Any] = _get(result, "locations", 0, "logicalLocations") or []
    for logical in locations:
        if isinstance(logical, dict) and logical.get("kind") in (None, "function", "member"):
            name = logical.get("fullyQualifiedName") or logical.get("name")
            if isinstance(name, str):
                return name
    return ""
