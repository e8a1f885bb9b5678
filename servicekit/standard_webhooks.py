"""Standard Webhooks signatures (https://www.standardwebhooks.com/): how an agent knows a call came from Omni.

Every agent call carries `webhook-id`, `webhook-timestamp` (integer Unix seconds) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the instance's
`agent_signing_secret` ("whsec_" + base64 of the key bytes). The scheme is the published standard rather than a
home-made one so agents can verify with any Standard Webhooks library, and the signed content binds the id and the
timestamp so a captured request cannot be replayed later (`verify` refuses timestamps outside a tolerance window).

The signature covers the exact bytes sent: callers sign the serialized body once and send those same bytes.
This module has no I/O, so the router, the echo agent and the tests share one implementation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
"""Key length of generated secrets: the spec asks for 24 to 64 bytes; 32 matches SHA-256's block strength."""
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
"""How far a timestamp may be from the verifier's clock, either way (the spec's recommended five minutes)."""

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class WebhookVerificationError(Exception):
    """A request whose signature cannot be trusted; the message says why (safe to show to the sender)."""


def new_signing_secret() -> str:
    """A fresh secret in the Standard Webhooks format: "whsec_" + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: the base64-decoded part after "whsec_" (a bare base64 secret is accepted too,
    as the reference libraries do). Raises `ValueError` for a secret that is not base64."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret is 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("the signing secret is empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The `webhook-signature` value of one message: "v1," + base64 HMAC-SHA256 of "{id}.{timestamp}.{body}".

    A verifier passes the timestamp header as received (a str), so the content signed is byte for byte what came.
    """
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def new_message_id() -> str:
    """A unique `webhook-id`; receivers may use it to drop a replayed or retried delivery they already handled."""
    return f"msg_{uuid.uuid4().hex}"


def headers_for(secret: str, body: bytes, *, msg_id: str | None = None, now: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for sending `body` (the exact bytes that go on the wire)."""
    identifier = msg_id or new_message_id()
    timestamp = int(time.time() if now is None else now)
    return {
        HEADER_ID: identifier,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(secret, identifier, timestamp, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header by case-insensitive name (plain dicts are not case-insensitive, aiohttp's headers are)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value or ""


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Check a received request; returns None when authentic, raises `WebhookVerificationError` otherwise.

    The header may list several space-separated signatures (a sender rotating its secret signs with both); one
    matching `v1` entry is enough. Signatures are compared in constant time.
    """
    msg_id = _header(headers, HEADER_ID)
    raw_timestamp = _header(headers, HEADER_TIMESTAMP)
    signatures = _header(headers, HEADER_SIGNATURE)
    present = {HEADER_ID: msg_id, HEADER_TIMESTAMP: raw_timestamp, HEADER_SIGNATURE: signatures}
    missing = [name for name, value in present.items() if not value]
    if missing:
        raise WebhookVerificationError(f"missing header(s): {', '.join(missing)}")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookVerificationError(f"{HEADER_TIMESTAMP} is not an integer") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError(f"{HEADER_TIMESTAMP} is too old (more than {tolerance:g}s ago)")
    if timestamp > current + tolerance:
        raise WebhookVerificationError(f"{HEADER_TIMESTAMP} is in the future (more than {tolerance:g}s ahead)")
    expected = sign(secret, msg_id, raw_timestamp, body).encode("ascii")
    matched = False
    for candidate in signatures.split():
        # No early exit: every entry is compared, so timing says nothing about which one matched.
        matched |= hmac.compare_digest(candidate.encode("utf-8", "replace"), expected)
    if not matched:
        raise WebhookVerificationError("no matching signature")
