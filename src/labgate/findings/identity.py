"""What a finding is known by across revisions, whatever moved around it.

Never a line number: a finding whose lines shift must keep its identity (GitHub's code scanning
learned that line numbers in an identity bring dismissed alerts back). Two keys:

- the *identity*: the tool's ``fingerprints``/``partialFingerprints`` when it gives them (with the
  rule), else a hash of the rule, the normalised source snippet and the enclosing function;
- the *snippet key*: a hash of the rule, the normalised snippet and the normalised message. It
  matches a finding again when its identity changed but its code did not: a renamed function, or
  an edit elsewhere in a function whose tokens the tool hashed (cppcheck's ``hash/v1`` is such a
  hash of the whole function).

Normalising a snippet removes every blank, so reindenting changes nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

__all__ = ["enclosing_function", "identity", "normalise", "snippet_key"]

_BLANKS = re.compile(r"\s+")
_LINE_IN_MESSAGE = re.compile(r"\b(line|lines)\s+\d+(\s*(,|and)\s*\d+)*", re.IGNORECASE)
_C_FUNCTION = re.compile(r"^[A-Za-z_][\w\s\*,]*?\b([A-Za-z_]\w*)\s*\([^;]*$")
_C_KEYWORDS = frozenset({"if", "for", "while", "switch", "return", "sizeof", "do", "else"})
_PY_DEF = re.compile(r"^(\s*)(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)")


def normalise(snippet: str) -> str:
    """The snippet without blanks (reindenting or rewrapping code keeps its identity)."""
    return _BLANKS.sub("", snippet)


IDENTITY_LENGTH = 20  # hex digits of an identity


def _hash(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:IDENTITY_LENGTH]


def identity(rule: str, snippet: str, function: str, fingerprints: Mapping[str, str]) -> str:
    """The finding's identity: the tool's fingerprints if any, else rule + snippet + function."""
    if fingerprints:
        given = "\0".join(f"{k}={fingerprints[k]}" for k in sorted(fingerprints))
        return _hash("tool", rule, given)
    return _hash("labgate", rule, normalise(snippet), function)


def snippet_key(rule: str, snippet: str, message: str) -> str:
    """Rule + normalised snippet + message (without line numbers it names)."""
    return _hash("snippet", rule, normalise(snippet), _LINE_IN_MESSAGE.sub("line #", message))


def enclosing_function(lines: Sequence[str], line: int, path: str) -> str:
    """The name of the function (or, in Python, the ``def``/``class`` chain) that holds 1-based
    ``line`` of a source file, or ``""`` at file scope. A heuristic for C-like code: the nearest
    line above starting in column 0 with ``name(`` and not ending a declaration, unless a ``}``
    in column 0 (the end of an earlier function) comes first."""
    if not 1 <= line <= len(lines):
        return ""
    if path.endswith((".py", ".pyi")):
        return _python_scope(lines, line)
    for text in reversed(lines[: line - 1]):
        if text.startswith("}"):
            return ""
        found = _C_FUNCTION.match(text)
        if found and found.group(1) not in _C_KEYWORDS:
            return found.group(1)
    return ""


def _python_scope(lines: Sequence[str], line: int) -> str:
    names: list[str] = []
    indent = len(lines[line - 1]) - len(lines[line - 1].lstrip())
    for text in reversed(lines[: line - 1]):
        found = _PY_DEF.match(text)
        if found and len(found.group(1)) < indent:
            names.append(found.group(2))
            indent = len(found.group(1))
        elif text.strip() and not text[:1].isspace() and not text.lstrip().startswith(("#", "@")):
            indent = min(indent, 0)
        if indent == 0:
            break
    return ".".join(reversed(names))
