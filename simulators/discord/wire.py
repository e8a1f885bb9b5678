"""Discord v10 wire constants and the JSON shapes the simulator answers with.

Kept apart from the state so REST, gateway and control code build the same objects the same way, and so the
shapes can be read in one place against Discord's API documentation. Field sets are what discord.py 2.7.1
reads (it raises KeyError on a missing required key), plus the usual companions a real payload carries.
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from aiohttp import web

DISCORD_EPOCH_MS: Final = 1_420_070_400_000
API_VERSION: Final = 10

# Gateway opcodes.
OP_DISPATCH: Final = 0
OP_HEARTBEAT: Final = 1
OP_IDENTIFY: Final = 2
OP_PRESENCE_UPDATE: Final = 3
OP_VOICE_STATE_UPDATE: Final = 4
OP_RESUME: Final = 6
OP_RECONNECT: Final = 7
OP_REQUEST_GUILD_MEMBERS: Final = 8
OP_INVALID_SESSION: Final = 9
OP_HELLO: Final = 10
OP_HEARTBEAT_ACK: Final = 11

# Gateway close codes.
CLOSE_UNKNOWN_ERROR: Final = 4000
CLOSE_UNKNOWN_OPCODE: Final = 4001
CLOSE_DECODE_ERROR: Final = 4002
CLOSE_NOT_AUTHENTICATED: Final = 4003
CLOSE_AUTHENTICATION_FAILED: Final = 4004
CLOSE_ALREADY_AUTHENTICATED: Final = 4005
CLOSE_SESSION_TIMED_OUT: Final = 4009
CLOSE_INVALID_SHARD: Final = 4010
CLOSE_INVALID_INTENTS: Final = 4013
CLOSE_DISALLOWED_INTENTS: Final = 4014

CLOSE_REASONS: Final = {
    CLOSE_UNKNOWN_ERROR: "Unknown error.",
    CLOSE_UNKNOWN_OPCODE: "Unknown opcode.",
    CLOSE_DECODE_ERROR: "Decode error.",
    CLOSE_NOT_AUTHENTICATED: "Not authenticated.",
    CLOSE_AUTHENTICATION_FAILED: "Authentication failed.",
    CLOSE_ALREADY_AUTHENTICATED: "Already authenticated.",
    CLOSE_SESSION_TIMED_OUT: "Session timed out.",
    CLOSE_INVALID_SHARD: "Invalid shard.",
    CLOSE_INVALID_INTENTS: "Invalid intent(s).",
    CLOSE_DISALLOWED_INTENTS: "Disallowed intent(s).",
}

# Gateway intents (only the ones the simulator acts on).
INTENT_GUILD_MEMBERS: Final = 1 << 1
INTENT_GUILD_PRESENCES: Final = 1 << 8
INTENT_GUILD_MESSAGES: Final = 1 << 9
INTENT_DIRECT_MESSAGES: Final = 1 << 12
INTENT_MESSAGE_CONTENT: Final = 1 << 15
PRIVILEGED_INTENTS: Final = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT
ALL_INTENTS: Final = (1 << 26) - 1

# Application flags telling a client which privileged intents the portal enabled.
APP_FLAG_GATEWAY_PRESENCE: Final = 1 << 12
APP_FLAG_GATEWAY_GUILD_MEMBERS: Final = 1 << 14
APP_FLAG_GATEWAY_MESSAGE_CONTENT: Final = 1 << 18
APP_FLAGS_PRIVILEGED: Final = (
    APP_FLAG_GATEWAY_PRESENCE | APP_FLAG_GATEWAY_GUILD_MEMBERS | APP_FLAG_GATEWAY_MESSAGE_CONTENT
)

# Channel and message types.
CHANNEL_GUILD_TEXT: Final = 0
CHANNEL_DM: Final = 1
CHANNEL_PUBLIC_THREAD: Final = 11
MESSAGE_DEFAULT: Final = 0
MESSAGE_REPLY: Final = 19

# What @everyone may do in a simulated guild: view, send, embed, attach, read history, react, use threads.
EVERYONE_PERMISSIONS: Final = str(
    (1 << 6) | (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 18) | (1 << 35) | (1 << 38)
)
MAX_CONTENT_LENGTH: Final = 2000
MAX_EMBEDS: Final = 10
MAX_EMBED_TOTAL: Final = 6000


class Snowflakes:
    """Real-shaped snowflake ids: milliseconds since the Discord epoch << 22 | worker | process | increment.

    Ids are strictly increasing, so sorting by id is sorting by creation time, as with Discord.
    """

    def __init__(self) -> None:
        self._last = 0
        self._increment = itertools.count()
        self._low_bits = (1 << 17) | ((os.getpid() & 0x1F) << 12)

    def next_int(self) -> int:
        """A new id as an integer."""
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        candidate = (millis << 22) | self._low_bits | (next(self._increment) & 0xFFF)
        self._last = candidate if candidate > self._last else self._last + 1
        return self._last

    def next(self) -> str:
        """A new id as Discord puts it on the wire (a string)."""
        return str(self.next_int())


def iso(moment: float | None = None) -> str:
    """An ISO-8601 timestamp with microseconds and an explicit UTC offset, Discord's format."""
    return datetime.fromtimestamp(time.time() if moment is None else moment, UTC).isoformat()


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer whose Content-Type is exactly `application/json`.

    discord.py decodes a body only when the header equals that string, and `web.json_response` appends
    `; charset=utf-8`, which would hand the client raw strings instead of dicts.
    """
    response = web.Response(body=orjson.dumps(payload), status=status, headers=headers)
    response.headers["Content-Type"] = "application/json"
    return response


class DiscordHTTPError(Exception):
    """A REST error answer, rendered as Discord's `{"message", "code"[, "errors"]}` body."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON body Discord sends for this error."""
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def generic_error(status: int) -> DiscordHTTPError:
    """Discord's body for a status without a JSON error code (`{"message": "404: Not Found", "code": 0}`)."""
    reason = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }.get(status, "Error")
    return DiscordHTTPError(status, 0, f"{status}: {reason}")


def form_error(field: str, code: str, message: str) -> DiscordHTTPError:
    """A 400 `Invalid Form Body` (code 50035) naming one field, as Discord's validation does."""
    errors = {field: {"_errors": [{"code": code, "message": message}]}}
    return DiscordHTTPError(400, 50035, "Invalid Form Body", errors)


def unknown(kind: str) -> DiscordHTTPError:
    """404 `Unknown Channel` / `Unknown Guild` / `Unknown Message` / `Unknown User` with its JSON code."""
    codes = {"Channel": 10003, "Guild": 10004, "Message": 10008, "User": 10013}
    return DiscordHTTPError(404, codes[kind], f"Unknown {kind}")


def missing_access() -> DiscordHTTPError:
    """403 code 50001: the bot cannot see the channel or guild."""
    return DiscordHTTPError(403, 50001, "Missing Access")


def dumps(payload: Any) -> str:
    """Compact JSON as text (gateway frames must be text frames)."""
    return orjson.dumps(payload).decode()


def dispatch_frame(event: str, sequence: int, data_json: str) -> str:
    """An op-0 frame around already-serialized event data, so a payload fanned out to many sessions is
    serialized once and only its sequence number differs."""
    return f'{{"op":0,"s":{sequence},"t":"{event}","d":{data_json}}}'


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (`{}` for an empty body); raises ValueError for anything else."""
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body
