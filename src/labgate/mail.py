"""Mail: flight reports to the list, bisection reports to the culprit's author with the list in Cc,
through a durable outbox so that a mail server that is down never loses a report.

``[mail]`` in lab.toml is `MailConfig`::

    [mail]
    host = "smtp.example.org"
    port = 587
    starttls = true
    username_env = "LABGATE_SMTP_USER"      # names of environment variables, never the secrets
    password_env = "LABGATE_SMTP_PASSWORD"
    from = "labgate <labgate@example.org>"
    to = ["devel@lists.example.org"]

A report is first written to the `Outbox` (one ``.eml`` file per message, written to a temporary
file, fsynced and renamed, so a crash leaves either the whole message or nothing), then
`Outbox.flush` sends every queued message and deletes each only after the server accepted it. A
server that is down or refuses keeps the message for the next flush; the error is returned, not
raised.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import fcntl
import os
import smtplib
import ssl
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path

from labgate.mailconfig import MailConfig, MailError
from labgate.report import BisectionSummary, bisection_subject, data, render_bisection_report

__all__ = [
    "FlushResult",
    "MailConfig",
    "MailError",
    "Outbox",
    "build_bisection_mail",
    "build_flight_mail",
]


@dataclass(frozen=True)
class FlushResult:
    """What a flush did: messages accepted by the server, messages still queued, and why."""

    sent: int
    kept: int
    errors: tuple[str, ...] = ()


class Outbox:
    """A directory of messages waiting to be sent, oldest first."""

    SUFFIX = ".eml"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def enqueue(self, message: EmailMessage) -> Path:
        """Write ``message`` durably into the outbox and return its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}{self.SUFFIX}"
        final = self.directory / name
        temporary = self.directory / f".{name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(message.as_bytes(policy=email.policy.default))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._sync_directory()
        return final

    def pending(self) -> list[Path]:
        """The queued messages, oldest first (temporary files of an unfinished enqueue are not)."""
        if not self.directory.is_dir():
            return []
        return sorted(
            p for p in self.directory.iterdir() if p.suffix == self.SUFFIX and p.name[0] != "."
        )

    def flush(self, config: MailConfig, *, environ: Mapping[str, str] | None = None) -> FlushResult:
        """Send every queued message over one SMTP connection; delete each once accepted."""
        if not self.pending():
            return FlushResult(0, 0)
        with self._locked() as locked:
            paths = self.pending()
            if not locked:
                return FlushResult(0, len(paths), ("another flush is sending this outbox",))
            try:
                smtp = _connect(config, environ)
            except (OSError, smtplib.SMTPException, MailError) as error:
                where = f"{config.host}:{config.port}"
                return FlushResult(0, len(paths), (f"{where}: {_describe(error)}",))
            sent, errors = self._send(smtp, paths)
        return FlushResult(sent, len(paths) - sent, tuple(errors))

    def _send(self, smtp: smtplib.SMTP, paths: list[Path]) -> tuple[int, list[str]]:
        sent, errors = 0, []
        with smtp:
            for path in paths:
                try:
                    with path.open("rb") as file:
                        message = email.message_from_binary_file(file, policy=email.policy.default)
                    refused = smtp.send_message(message)
                except smtplib.SMTPServerDisconnected as error:
                    errors.append(f"{path.name}: {_describe(error)}")
                    break  # the connection is gone: everything left stays queued
                except (smtplib.SMTPException, ValueError) as error:
                    errors.append(f"{path.name}: {_describe(error)}")
                    continue  # this message was refused: the next one may not be
                except OSError as error:  # SMTPException is an OSError: caught above
                    errors.append(f"{path.name}: {_describe(error)}")
                    break
                # Accepted: recipients the server refused cannot be retried alone without
                # resending to the others, so they are reported and the message is done.
                path.unlink()
                self._sync_directory()
                sent += 1
                if refused:
                    errors.append(f"{path.name}: refused recipients {', '.join(sorted(refused))}")
        return sent, errors

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        """Hold the outbox's lock (True) or learn that another process holds it (False)."""
        with (self.directory / ".lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _connect(config: MailConfig, environ: Mapping[str, str] | None) -> smtplib.SMTP:
    credentials = config.credentials(environ)
    smtp = smtplib.SMTP(
        config.host, config.port, local_hostname=config.helo, timeout=config.timeout
    )
    try:
        if config.starttls:
            cafile = str(config.cafile) if config.cafile else None
            smtp.starttls(context=ssl.create_default_context(cafile=cafile))
        if credentials is not None:
            smtp.login(*credentials)
    except BaseException:
        smtp.close()
        raise
    return smtp


# --- messages ------------------------------------------------------------------------------


def _message(
    config: MailConfig,
    *,
    to: list[str],
    cc: list[str],
    subject: str,
    body: str,
    flight: int | None,
    date: datetime | None,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = config.from_addr
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = data(subject)
    message["Date"] = format_datetime(date or datetime.now(UTC))
    domain = parseaddr(config.from_addr)[1].rpartition("@")[2] or "labgate.invalid"
    idstring = f"flight-{flight}" if flight is not None else "labgate"
    message["Message-ID"] = make_msgid(idstring=idstring, domain=domain)
    if flight is not None:
        message["X-Labgate-Flight"] = str(flight)
    message.set_content(body)
    return message


def build_flight_mail(
    config: MailConfig,
    *,
    flight: int,
    subject: str,
    body: str,
    date: datetime | None = None,
    only_to: Sequence[str] | None = None,
) -> EmailMessage:
    """A flight report to the list (``report_subject`` and ``render_flight_report`` give the
    subject and body); to ``only_to`` alone when given (an embargoed flight's group)."""
    to = list(config.to) if only_to is None else list(only_to)
    return _message(config, to=to, cc=[], subject=subject, body=body, flight=flight, date=date)


def build_bisection_mail(
    config: MailConfig,
    summary: BisectionSummary,
    *,
    flight: int | None = None,
    date: datetime | None = None,
    only_to: Sequence[str] | None = None,
) -> EmailMessage:
    """A bisection report to the culprit's author with the list in Cc; to the list alone when
    there is no culprit or its address is unusable; to ``only_to`` alone when given (an
    embargoed flight's group: the author may be outside it). ``flight`` is the flight whose
    regression was bisected (``X-Labgate-Flight``; default: the last flight the bisection
    used)."""
    author = _author_address(summary)
    to, cc = ([author], list(config.to)) if author else (list(config.to), [])
    if only_to is not None:
        to, cc = list(only_to), []
    if flight is None and summary.flights:
        flight = summary.flights[-1]
    body = render_bisection_report(summary)
    subject = bisection_subject(summary)
    return _message(config, to=to, cc=cc, subject=subject, body=body, flight=flight, date=date)


def _author_address(summary: BisectionSummary) -> str | None:
    if not summary.found or not summary.email:
        return None
    try:
        return str(Address(display_name=data(summary.author or ""), addr_spec=summary.email))
    except (ValueError, HeaderParseError):
        return None
