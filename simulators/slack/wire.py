"""Slack's wire formats: ids, message timestamps, `v0` signatures, JSON answers and Events API envelopes.

Everything here is pure (no state), so the Web API, the Events API delivery and Socket Mode build the same shapes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

MAX_TEXT = 40_000
"""Slack's documented `chat.postMessage` text limit; longer text answers `msg_too_long`."""

_ID_ALPHABET = string.ascii_uppercase + string.digits


def new_id(prefix: str, length: int = 10) -> str:
    """A Slack-looking id (`T…` team, `U…` user, `B…` bot, `A…` app, `C…`/`G…`/`D…` conversation, `F…` file)."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def new_token(kind: str) -> str:
    """A token of the given kind (`xoxb` bot, `xapp` app-level) in Slack's dash-separated layout."""
    if kind == "xapp":
        return f"xapp-1-{new_id('A')}-{secrets.randbelow(10**13)}-{secrets.token_hex(32)}"
    return f"{kind}-{secrets.randbelow(10**12)}-{secrets.randbelow(10**13)}-{secrets.token_urlsafe(18)}"


def new_event_id() -> str:
    """An Events API `event_id` (`Ev` + 9 characters, as Slack issues them)."""
    return new_id("Ev", 9)


def new_envelope_id() -> str:
    """A Socket Mode `envelope_id` (a UUID, as Slack's)."""
    return str(uuid.uuid4())


class TsClock:
    """Issues message `ts` strings ("1712345678.000100"): wall-clock microseconds, strictly increasing.

    Slack's `ts` is a message's id within a channel; the hub dedupes and threads on it, so two messages must never
    share one even when created within the same microsecond.
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        now = time.time_ns() // 1000
        self._last = max(now, self._last + 1)
        return f"{self._last // 1_000_000}.{self._last % 1_000_000:06d}"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`v0=hex(hmac_sha256(secret, "v0:{timestamp}:{body}"))`: the `X-Slack-Signature` of a request."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A Web API answer; Slack answers `application/json; charset=utf-8`, which slack_sdk decodes as JSON."""
    response = web.Response(body=orjson.dumps(payload), status=status, headers=headers)
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    return response


def encode_cursor(offset: int) -> str:
    """An opaque `next_cursor` (Slack's are base64 too); empty means "no more pages"."""
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    """The offset a cursor stands for; raises ValueError for one this simulator did not issue."""
    if not cursor:
        return 0
    try:
        kind, _, value = base64.b64decode(cursor.encode(), validate=True).decode().partition(":")
        if kind != "offset":
            raise ValueError(cursor)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc


class SlackError(Exception):
    """A Web API failure: `{"ok": false, "error": code}`, with HTTP 200 as Slack answers unless `status` says."""

    def __init__(self, error: str, status: int = 200, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = headers or {}

    def response(self) -> web.Response:
        return json_response({"ok": False, "error": self.error}, self.status, self.headers)


def event_callback(
    *,
    team_id: str,
    app_id: str,
    bot_user_id: str,
    verification_token: str,
    event: dict[str, Any],
    event_id: str | None = None,
    event_time: int | None = None,
) -> dict[str, Any]:
    """The Events API envelope (`type: event_callback`) of one event for one app installation."""
    return {
        "token": verification_token,
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": None,
        "api_app_id": app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or new_event_id(),
        "event_time": event_time if event_time is not None else int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": "4-" + secrets.token_urlsafe(24),
    }


def socket_envelope(payload: dict[str, Any], envelope_id: str, retry_attempt: int, retry_reason: str) -> dict[str, Any]:
    """The Socket Mode frame carrying an Events API envelope."""
    return {
        "envelope_id": envelope_id,
        "payload": payload,
        "type": "events_api",
        "accepts_response_payload": False,
        "retry_attempt": retry_attempt,
        "retry_reason": retry_reason,
    }
