"""``[findings]`` in lab.toml: what a new static analysis finding does to the push.

```toml
[findings]
block = ["error"]                 # levels whose new findings block the push (default)
rules = { memleak = "block", unusedFunction = "ignore", E501 = "report" }
```

A rule named in ``rules`` gets its action whatever its level (``block``, ``report`` or
``ignore``); the others block when their level is in ``block`` and are reported otherwise. A
finding triaged ``false-positive`` or ``intentional`` never blocks.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from labgate.findings.compare import Action, Policy
from labgate.findings.model import Level


class RawFindings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)  # see rawconfig

    block: list[Level] = Field(default_factory=lambda: [Level.ERROR])
    rules: dict[str, Action] = Field(default_factory=dict)

    def to_policy(self) -> Policy:
        return Policy(block=frozenset(self.block), rules=dict(self.rules))
