"""Static analysis per revision: a step's SARIF 2.1.0 findings, tracked across commits.

A step declares ``results = "sarif:<glob>"``; its findings are read (`labgate.findings.sarif`),
given an identity that survives code moving (`labgate.findings.identity`), stored per flight, and
compared with the baseline's (`labgate.findings.compare`): ``new``, ``unchanged`` or ``fixed``,
with the triage people gave them and, for a new one, the commit blamed for it
(`labgate.findings.blame`).
"""

from labgate.findings.model import Finding, Level, Triage

__all__ = ["Finding", "Level", "Triage"]
