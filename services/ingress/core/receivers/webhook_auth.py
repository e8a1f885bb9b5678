"""Webhook authentication by the instance's webhook secret: a header, or an HS256 JWT signed with it.

Evolution has no request signature (its contract §1.4): Omni registers `x-omni-webhook-secret: <secret>` as an
instance webhook header, or the operator uses Evolution's `jwt_key` option, which makes Evolution send
`Authorization: Bearer <JWT>` signed HS256 with the secret and valid for ten minutes. Both are checked here against
every secret the instance accepts right now (the current one, and the one a rotation replaced during its grace
period), always against all of them and in constant time, so neither the response time nor the answer tells a
stranger whether the instance exists or which secret came close.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping

import orjson

from servicekit import errors
from servicekit.instances import WEBHOOK_AUTH_NONE, Instance

log = logging.getLogger(__name__)

WEBHOOK_SECRET_HEADER = "x-omni-webhook-secret"
"""Header carrying an instance's webhook secret (the gateway folds an opt-in `?secret=` into it)."""

JWT_LEEWAY_SECONDS = 30
"""Clock skew tolerated on a JWT's `exp` and `iat` between Evolution's host and ours."""

MAX_JWT_BYTES = 4096


def webhook_unauthenticated() -> errors.UnauthenticatedError:
    """The one answer to every failed webhook authentication, an unknown instance included (no enumeration)."""
    return errors.UnauthenticatedError("webhook authentication failed", reason="WEBHOOK_UNAUTHENTICATED")


_warned_open: set[str] = set()


def check_webhook_secret(instance: Instance, headers: Mapping[str, str], *, now: float | None = None) -> None:
    """Raise `UnauthenticatedError` unless the request carries one of the instance's webhook secrets.

    `webhook_auth: "none"` (a development opt-out the router refuses in production) accepts every request, with a
    warning logged once per instance and process.
    """
    if instance.webhook_auth == WEBHOOK_AUTH_NONE:
        if instance.id not in _warned_open:
            _warned_open.add(instance.id)
            log.warning("instance %s accepts unauthenticated webhooks (webhook_auth: none)", instance.name)
        return
    now = time.time() if now is None else now
    secrets = instance.webhook_secrets(now)
    lowered = {name.lower(): value for name, value in headers.items()}
    presented = lowered.get(WEBHOOK_SECRET_HEADER, "")
    scheme, _, token = lowered.get("authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    ok = False
    for secret in secrets:
        # Every secret is tried (no early exit), so timing does not tell which one matched.
        ok |= bool(presented) and hmac.compare_digest(presented.encode(), secret.encode())
        ok |= bool(bearer) and _jwt_valid(bearer, secret, now)
    if not ok:
        raise webhook_unauthenticated()


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _jwt_valid(token: str, secret: str, now: float) -> bool:
    """True for a compact HS256 JWT signed with `secret` whose `exp` has not passed (an `exp` is required)."""
    if len(token) > MAX_JWT_BYTES or token.count(".") != 2:
        return False
    head, body, signature = token.split(".")
    expected = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_b64url(signature), expected):
            return False
        header = orjson.loads(_b64url(head))
        claims = orjson.loads(_b64url(body))
    except (binascii.Error, ValueError):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        return False
    exp, iat = claims.get("exp"), claims.get("iat", now)
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        return False
    return exp + JWT_LEEWAY_SECONDS > now and iat - JWT_LEEWAY_SECONDS <= now
