"""What every review driver's webhook receiver shares: refusals with a status and a reason, a
body read under a size limit, the HMAC signature check of the ``X-Hub-Signature`` family (GitHub
signs with SHA-256, Review Board with SHA-1) and the JSON object a delivery must be."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Literal

from starlette.requests import Request

MAX_BODY = 1024 * 1024
"""The events labgate reads are a few kB; GitHub caps payloads at 25 MB."""


class Refused(Exception):
    """A delivery answered ``status`` (4xx, 5xx) with ``message`` saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Digest = Literal["sha1", "sha256"]


def signature(secret: str, body: bytes, digest: Digest) -> str:
    """The signature header's value for ``body`` under ``secret``: ``<digest>=<hex HMAC>``."""
    return f"{digest}=" + hmac.new(secret.encode(), body, getattr(hashlib, digest)).hexdigest()


def check_signature(
    secret: str, body: bytes, header: str, value: str | None, digest: Digest
) -> None:
    """Refuse (401) a delivery whose ``header`` is missing or is not the body's signature
    (compared in constant time)."""
    if not value:
        raise Refused(401, f"no {header} header (is the webhook's secret set?)")
    if not hmac.compare_digest(signature(secret, body, digest).encode(), value.encode()):
        raise Refused(401, f"{header} does not match the body (another secret?)")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) more than ``limit`` bytes without reading them all."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise Refused(400, "bad Content-Length")
        if int(length) > limit:
            raise Refused(413, f"body of {length} bytes is over the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, f"body is over the limit of {limit} bytes")
    return bytes(body)


def check_json(request: Request) -> None:
    """Refuse (415) a delivery that is not ``application/json``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/json":
        raise Refused(415, f"content type {content_type or '(none)'}: want application/json")


def json_object(body: bytes) -> Mapping[str, Any]:
    """The body as a JSON object; refused (400) otherwise."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise Refused(400, f"body is not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise Refused(400, "body is not a JSON object")
    return payload
