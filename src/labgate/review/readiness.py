"""The text of ``labgate review discrepancies`` (the command line and the web page share it):
the ready-to-vote figures of each review target, and each patch set where labgate and another
CI account disagree."""

from __future__ import annotations

from labgate.store.review import Discrepancy, Readiness


def duration(seconds: float | None) -> str:
    """``45s``, ``3m12s``, ``2h05m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def share(part: int, whole: int) -> str:
    """``9 of 10 (90%)``, or ``none of 0`` when there is nothing to count."""
    if not whole:
        return "none of 0"
    return f"{part} of {whole} ({100 * part / whole:.0f}%)"


def readiness_line(r: Readiness) -> str:
    return (
        f"{r.connector} -> {r.target or '(any branch)'}: last {r.patchsets} patch sets: "
        f"agreement with other CI {share(r.agreed, r.compared)}; "
        f"broken runs {share(r.broken, r.runs)}; "
        f"patch set to result p50 {duration(r.to_result_p50_s)}, "
        f"p95 {duration(r.to_result_p95_s)}"
    )


def discrepancy_line(d: Discrepancy) -> str:
    non_voting = " (non-voting)" if not d.voting else ""
    where = f" {d.url}" if d.url else ""
    return (
        f"{d.connector} change {d.change} patch set {d.patchset[:12]} ({d.revision[:12]}): "
        f"labgate {d.labgate:+d}{non_voting} (run {d.run}, flight {d.flight}) vs "
        f"{d.account} {d.label} {d.value:+d}{where}"
    )
