"""The gate's reports by mail, through a real SMTP server (aiosmtpd on 127.0.0.1): the flight
report to the list, the bisection report to the culprit's author with the list in Cc, and a
report kept in the outbox while the server is down, sent by the next cycle."""

from __future__ import annotations

from pathlib import Path

from integration.test_mail import ServerFactory, free_port, smtp_server  # noqa: F401
from test_gate import BOB, Upstream, cycle, history, write_gate_lab

LIST = "xen-devel@lists.example"


def mail_section(port: int) -> str:
    return (
        f'\n[mail]\nhost = "127.0.0.1"\nport = {port}\nfrom = "lab@xen.example"\n'
        f'to = ["{LIST}"]\ntimeout = 5\n'
    )


def test_flight_and_bisection_reports_are_mailed(
    tmp_path: Path,
    smtp_server: ServerFactory,  # noqa: F811
) -> None:
    port = free_port()
    recorder = smtp_server(port)
    upstream = Upstream(tmp_path)
    shas = history(upstream, bad_at=3, length=6)
    lab_dir = write_gate_lab(tmp_path, upstream, database=None)
    with (lab_dir / "lab.toml").open("a") as toml:
        toml.write(mail_section(port))
    result = cycle(lab_dir)
    assert result.action == "not-pushed"
    flight_mail, bisection_mail = recorder.messages()
    assert flight_mail["To"] == LIST and flight_mail["From"] == "lab@xen.example"
    assert flight_mail["Subject"] == f"[xen-unstable test] {result.flight}: regressions - FAIL"
    assert flight_mail["X-Labgate-Flight"] == str(result.flight)
    assert "REGR. vs." in flight_mail.get_content()
    assert bisection_mail["To"] == f"{BOB[0]} <{BOB[1]}>"
    assert bisection_mail["Cc"] == LIST
    assert f"xen {shas[3]} is the first bad commit" in bisection_mail.get_content()
    envelopes = recorder.envelopes
    assert sorted(envelopes[1].rcpt_tos) == sorted([BOB[1], LIST])
    assert not list((lab_dir / "outbox").glob("*.eml"))


def test_a_report_waits_in_the_outbox_while_the_mail_server_is_down(
    tmp_path: Path,
    smtp_server: ServerFactory,  # noqa: F811
) -> None:
    port = free_port()  # nothing listens there yet
    upstream = Upstream(tmp_path)
    history(upstream, bad_at=99, length=1)
    lab_dir = write_gate_lab(tmp_path, upstream, database=None)
    with (lab_dir / "lab.toml").open("a") as toml:
        toml.write(mail_section(port))
    first = cycle(lab_dir)
    assert first.action == "pushed"
    kept = [p for p in (lab_dir / "outbox").iterdir() if not p.name.startswith(".")]
    assert len(kept) == 1
    recorder = smtp_server(port)
    fix = upstream.commit("more", {"g": "1\n"}, BOB)
    upstream.push(fix, "staging")
    second = cycle(lab_dir)
    assert second.action == "pushed"
    subjects = [m["Subject"] for m in recorder.messages()]
    assert subjects == [
        f"[xen-unstable test] {first.flight}: all pass - PUSHED",
        f"[xen-unstable test] {second.flight}: all pass - PUSHED",
    ]
