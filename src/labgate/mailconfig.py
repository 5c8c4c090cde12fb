"""``[mail]`` in lab.toml (:class:`MailConfig`), apart from the sending (:mod:`labgate.mail`):
loading lab.toml needs the settings, not smtplib, ssl and the report texts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from email.utils import parseaddr
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MailConfig", "MailError"]


class MailError(Exception):
    """Mail cannot be sent as configured (a credential variable is missing...)."""


def _check_address(value: str) -> str:
    if "@" not in parseaddr(value)[1]:
        raise ValueError(f"{value!r} is not a mail address (expected 'name@domain')")
    return value


class MailConfig(BaseModel):
    """``[mail]`` in lab.toml. Credentials are read at send time from the environment variables
    named by ``username_env``/``password_env``; ``cafile`` trusts a private CA for STARTTLS;
    ``helo`` is the name given in EHLO (default: this machine's FQDN)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        defer_build=True,  # see labgate.rawconfig._Raw
    )

    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    username_env: str | None = None
    password_env: str | None = None
    from_addr: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    cafile: Path | None = None
    helo: str | None = None
    timeout: float = Field(default=30.0, gt=0)

    @field_validator("from_addr")
    @classmethod
    def _from_is_address(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("to")
    @classmethod
    def _to_are_addresses(cls, value: list[str]) -> list[str]:
        return [_check_address(v) for v in value]

    def credentials(self, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
        """(username, password) from the environment, or None when none are configured."""
        if self.username_env is None and self.password_env is None:
            return None
        env = os.environ if environ is None else environ
        values = []
        for key in ("username_env", "password_env"):
            name = getattr(self, key)
            if name is None:
                raise MailError(f"[mail] {key} is missing: set both username_env and password_env")
            if name not in env:
                raise MailError(f"environment variable {name} ([mail] {key}) is not set")
            values.append(env[name])
        return values[0], values[1]
