"""Mail against a real SMTP server (aiosmtpd on 127.0.0.1): headers, envelope recipients, body,
the outbox keeping what a down or refusing server did not take, STARTTLS with login."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import socket
import ssl
import stat
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session  # noqa: E402

from labgate.mail import (  # noqa: E402
    MailConfig,
    Outbox,
    build_bisection_mail,
    build_flight_mail,
)
from labgate.report import BisectionSummary  # noqa: E402

LIST = "devel@lists.example.org"
OTHER = "reports@example.org"
FROM = "labgate <labgate@example.org>"


class Recorder:
    """An aiosmtpd handler that keeps every envelope and refuses the recipients it is told to."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.envelopes: list[Envelope] = []
        self.refuse = refuse

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        parsed = []
        for envelope in self.envelopes:
            content = envelope.original_content or envelope.content
            assert isinstance(content, bytes)
            message = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            parsed.append(message)
        return parsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ServerFactory = Callable[..., Recorder]


@pytest.fixture
def smtp_server() -> Iterator[ServerFactory]:
    """``start(port, refuse=..., **smtp_parameters)`` runs a recording SMTP server until the test
    ends."""
    controllers = []

    def start(port: int, refuse: frozenset[str] = frozenset(), **parameters: Any) -> Recorder:
        recorder = Recorder(refuse)
        controller = aiosmtpd_controller.Controller(
            recorder, hostname="127.0.0.1", port=port, **parameters
        )
        controller.start()
        controllers.append(controller)
        return recorder

    yield start
    for controller in controllers:
        controller.stop()


def config(port: int, **overrides: Any) -> MailConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "from": FROM,
        "to": [LIST, OTHER],
        "helo": "labgate.test",
        "timeout": 5,
    }
    values.update(overrides)
    return MailConfig.model_validate(values)


DATE = datetime.datetime(2026, 11, 25, 15, 0, tzinfo=datetime.UTC)
BODY = "flight 12 xen-unstable real [real]\n\nRegressions :-(\n\nNot pushing.\n"
SUBJECT = "[xen-unstable test] 12: regressions - FAIL"

SUMMARY = BisectionSummary(
    job="test-amd64-xl",
    step="guest-start",
    tree="xen",
    commit="c" * 40,
    author="Émile Auteur",
    email="emile@example.net",
    subject="x86: frob the widget",
    confidence=0.97,
    executions=9,
    flights=(20, 21, 22),
    branch="xen-unstable",
)


def test_flight_report_reaches_the_list(tmp_path: Path, smtp_server: ServerFactory) -> None:
    port = free_port()
    server = smtp_server(port)
    cfg = config(port)
    outbox = Outbox(tmp_path / "outbox")
    outbox.enqueue(build_flight_mail(cfg, flight=12, subject=SUBJECT, body=BODY, date=DATE))

    result = outbox.flush(cfg)

    assert (result.sent, result.kept, result.errors) == (1, 0, ())
    assert outbox.pending() == []
    [envelope] = server.envelopes
    assert envelope.mail_from == "labgate@example.org"
    assert envelope.rcpt_tos == [LIST, OTHER]
    [message] = server.messages()
    assert message["From"] == FROM
    assert message["To"] == f"{LIST}, {OTHER}"
    assert message["Cc"] is None
    assert message["Subject"] == SUBJECT
    assert message["Date"] == "Wed, 25 Nov 2026 15:00:00 +0000"
    assert message["Message-ID"].startswith("<")
    assert message["Message-ID"].endswith("@example.org>")
    assert "flight-12" in message["Message-ID"]
    assert message["X-Labgate-Flight"] == "12"
    assert message.get_content().replace("\r\n", "\n") == BODY


def test_bisection_report_goes_to_the_author_with_the_list_in_cc(
    tmp_path: Path, smtp_server: ServerFactory
) -> None:
    port = free_port()
    server = smtp_server(port)
    cfg = config(port)
    outbox = Outbox(tmp_path / "outbox")
    outbox.enqueue(build_bisection_mail(cfg, SUMMARY, flight=12, date=DATE))

    assert outbox.flush(cfg).sent == 1

    [envelope] = server.envelopes
    assert envelope.rcpt_tos == ["emile@example.net", LIST, OTHER]
    [message] = server.messages()
    assert message["To"] == "Émile Auteur <emile@example.net>"
    assert message["Cc"] == f"{LIST}, {OTHER}"
    assert message["Subject"] == "[xen-unstable bisection] complete test-amd64-xl"
    assert message["X-Labgate-Flight"] == "12"
    body = message.get_content()
    assert f"xen {'c' * 40} is the first bad commit" in body
    assert "Author: Émile Auteur <emile@example.net>" in body


def test_bisection_without_a_usable_author_goes_to_the_list() -> None:
    cfg = config(25)
    for email_address in (None, "not an address"):
        summary = BisectionSummary(**{**SUMMARY.__dict__, "email": email_address})
        message = build_bisection_mail(cfg, summary)
        assert message["To"] == f"{LIST}, {OTHER}"
        assert message["Cc"] is None
        assert message["X-Labgate-Flight"] == "22"


def test_a_down_server_never_loses_a_report(tmp_path: Path, smtp_server: ServerFactory) -> None:
    port = free_port()
    cfg = config(port)
    outbox = Outbox(tmp_path / "outbox")
    first = outbox.enqueue(build_flight_mail(cfg, flight=12, subject=SUBJECT, body=BODY))
    second = outbox.enqueue(build_flight_mail(cfg, flight=13, subject="second", body="two\n"))

    down = outbox.flush(cfg)

    assert (down.sent, down.kept) == (0, 2)
    [error] = down.errors
    assert f"127.0.0.1:{port}" in error
    assert "Connection" in error or "refused" in error
    assert outbox.pending() == [first, second]

    server = smtp_server(port)
    up = outbox.flush(cfg)

    assert (up.sent, up.kept, up.errors) == (2, 0, ())
    assert outbox.pending() == []
    assert [m["X-Labgate-Flight"] for m in server.messages()] == ["12", "13"]
    assert outbox.flush(cfg) == type(up)(0, 0, ())


def test_a_refused_message_is_kept_and_the_others_are_sent(
    tmp_path: Path, smtp_server: ServerFactory
) -> None:
    port = free_port()
    server = smtp_server(port, refuse=frozenset({"gone@example.org"}))
    outbox = Outbox(tmp_path / "outbox")
    refused = outbox.enqueue(
        build_flight_mail(config(port, to=["gone@example.org"]), flight=1, subject="s", body="b\n")
    )
    outbox.enqueue(build_flight_mail(config(port), flight=2, subject="s", body="b\n"))
    partly = outbox.enqueue(
        build_flight_mail(
            config(port, to=[LIST, "gone@example.org"]), flight=3, subject="s", body="b\n"
        )
    )

    result = outbox.flush(config(port))

    assert (result.sent, result.kept) == (2, 1)
    assert outbox.pending() == [refused]
    assert any(refused.name in e and "550" in e for e in result.errors)
    assert any(partly.name in e and "gone@example.org" in e for e in result.errors)
    assert [e.rcpt_tos for e in server.envelopes] == [[LIST, OTHER], [LIST]]


def test_missing_credentials_keep_the_message(tmp_path: Path, smtp_server: ServerFactory) -> None:
    port = free_port()
    smtp_server(port)
    cfg = config(port, username_env="LABGATE_TEST_SMTP_USER", password_env="LABGATE_TEST_SMTP_PW")
    outbox = Outbox(tmp_path / "outbox")
    outbox.enqueue(build_flight_mail(cfg, flight=1, subject="s", body="b\n"))
    result = outbox.flush(cfg, environ={})
    assert (result.sent, result.kept) == (0, 1)
    assert "LABGATE_TEST_SMTP_USER" in result.errors[0]


def test_enqueue_is_atomic_private_and_ordered(tmp_path: Path) -> None:
    cfg = config(25)
    outbox = Outbox(tmp_path / "outbox")
    paths = [
        outbox.enqueue(build_flight_mail(cfg, flight=n, subject=f"s{n}", body="b\n"))
        for n in range(3)
    ]
    assert outbox.pending() == paths
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == [p.name for p in paths]
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o600
    with paths[1].open("rb") as file:
        stored = email.message_from_binary_file(file, policy=email.policy.default)
    assert stored["Subject"] == "s1"
    # A temporary file left by a crash mid-enqueue is never sent.
    (tmp_path / "outbox" / ".123-abc.eml.tmp").write_bytes(b"Subject: half\n")
    assert outbox.pending() == paths


def test_mail_config_validates_addresses_and_names_the_key() -> None:
    with pytest.raises(ValueError, match="from"):
        MailConfig.model_validate({"from": "nobody", "to": [LIST]})
    with pytest.raises(ValueError, match="to"):
        MailConfig.model_validate({"from": FROM, "to": []})
    with pytest.raises(ValueError, match="extra"):
        MailConfig.model_validate({"from": FROM, "to": [LIST], "password": "secret"})
    cfg = MailConfig.model_validate({"from_addr": FROM, "to": [LIST]})
    assert (cfg.host, cfg.port, cfg.starttls, cfg.credentials()) == ("localhost", 25, False, None)


# --- STARTTLS and login --------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (certificate, key) PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_starttls_and_login(tmp_path: Path, smtp_server: ServerFactory) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(
        server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        ok = (data.login, data.password) == (b"lab", b"s3cret")
        return AuthResult(success=ok, handled=False)

    port = free_port()
    server = smtp_server(
        port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    cfg = config(
        port,
        starttls=True,
        cafile=str(cert),
        username_env="LABGATE_TEST_SMTP_USER",
        password_env="LABGATE_TEST_SMTP_PW",
    )
    outbox = Outbox(tmp_path / "outbox")
    outbox.enqueue(build_flight_mail(cfg, flight=12, subject=SUBJECT, body=BODY))

    wrong = outbox.flush(
        cfg, environ={"LABGATE_TEST_SMTP_USER": "lab", "LABGATE_TEST_SMTP_PW": "x"}
    )
    assert (wrong.sent, wrong.kept) == (0, 1)
    assert "535" in wrong.errors[0]

    environ = {"LABGATE_TEST_SMTP_USER": "lab", "LABGATE_TEST_SMTP_PW": "s3cret"}
    assert outbox.flush(cfg, environ=environ).sent == 1
    assert logins[-1] == (b"lab", b"s3cret")
    assert [m["Subject"] for m in server.messages()] == [SUBJECT]
    assert outbox.pending() == []


def test_starttls_to_an_untrusted_certificate_keeps_the_message(
    tmp_path: Path, smtp_server: ServerFactory
) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    smtp_server(port, tls_context=context, require_starttls=True)
    cfg = config(port, starttls=True)
    outbox = Outbox(tmp_path / "outbox")
    outbox.enqueue(build_flight_mail(cfg, flight=12, subject=SUBJECT, body=BODY))
    result = outbox.flush(cfg)
    assert (result.sent, result.kept) == (0, 1)
    assert "CERTIFICATE_VERIFY_FAILED" in result.errors[0]
