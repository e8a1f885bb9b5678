"""Payload snapshots for traces: secrets masked at any depth, large values capped, bounded work whatever the input.

Traces show what went in and out of every hop (the webhook, the agent request and answer, the send), so the
snapshot is where a key, a token or a whole base64 file would leak into the tracing database. Rules:

- A key whose name contains a secret word (key, token, secret, password, passwd, authorization, signature,
  credential, cookie; case-insensitive, so `apikey`, `agent_api_key`, `Authorization`, `x-omni-webhook-secret`,
  `mediaKey` all count) has every string under it masked, however deep and inside arrays too. Numbers, booleans
  and nulls are kept (`token_count: 3` is not a credential). One exception: a bare `key` holding an object is the
  WhatsApp message key (`remoteJid`, `fromMe`, `id`), the message's address rather than a credential; it is walked
  like any other object (a bare `key` with a string value is still masked).
- Strings longer than MAX_STRING_CHARS keep their first 64 characters and their length.
- The snapshot stops growing at about MAX_PAYLOAD_CHARS of JSON; then it is marked truncated.
- Nesting deeper than MAX_DEPTH is replaced by a marker.

The walk is one pass that stops when its output budget is spent, so its cost is bounded by the budget (plus the
length of the keys it reads), not by the payload: a 100k-element array or a body of repeated secret words costs
the same few thousand steps. A string is never scanned, only sliced. Secret-name checks are cached per key name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

MAX_PAYLOAD_CHARS = 16_384
MAX_STRING_CHARS = 1_024
MAX_DEPTH = 32
REDACTED = "***"
TOO_DEEP = "…<nested too deep>"
SHORT_HEAD = 64
"""Characters kept of a capped string (enough to recognise a data URL or a base64 header)."""

_SECRET_NAME = re.compile("key|token|secret|password|passwd|authorization|signature|credential|cookie", re.IGNORECASE)
_MESSAGE_KEY = "key"
_NAME_CACHE_SIZE = 4_096
_name_cache: dict[str, bool] = {}
_SCALAR_COST = 8
"""Approximate JSON characters of a number, boolean or null and its separator."""


def is_secret_name(name: str) -> bool:
    """Whether a key called `name` holds a secret (before the message-key exception)."""
    cached = _name_cache.get(name)
    if cached is not None:
        return cached
    secret = _SECRET_NAME.search(name) is not None
    if len(name) <= 64:
        if len(_name_cache) >= _NAME_CACHE_SIZE:
            _name_cache.clear()
        _name_cache[name] = secret
    return secret


def _capped(text: str) -> str:
    if len(text) <= MAX_STRING_CHARS:
        return text
    return f"{text[:SHORT_HEAD]}…<{len(text)} chars>"


class _Budget:
    """What is left of the output allowance, and whether anything was left out."""

    __slots__ = ("left", "truncated")

    def __init__(self, left: int) -> None:
        self.left = left
        self.truncated = False


def _walk(value: Any, depth: int, budget: _Budget, masked: bool) -> Any:
    kind = type(value)
    if kind is str or isinstance(value, str):
        shown = REDACTED if masked else _capped(value)
        budget.left -= len(shown) + 3
        return shown
    if value is None or kind is bool or kind is int or kind is float:
        budget.left -= _SCALAR_COST
        return value
    if kind is dict or isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            budget.left -= len(TOO_DEEP)
            return TOO_DEEP
        obj: dict[str, Any] = {}
        for name, item in value.items():
            if budget.left < 0:
                budget.truncated = True
                break
            key = name if type(name) is str else str(name)
            secret = masked or (is_secret_name(key) and not (key == _MESSAGE_KEY and isinstance(item, Mapping)))
            if len(key) > MAX_STRING_CHARS:
                key = _capped(key)
            item_kind = type(item)
            # Scalars inline: most nodes of a webhook are, and a call per node is most of the walk's cost.
            if item_kind is str:
                shown = REDACTED if secret else item if len(item) <= MAX_STRING_CHARS else _capped(item)
                budget.left -= len(key) + len(shown) + 7
                obj[key] = shown
            elif item is None or item_kind is bool or item_kind is int or item_kind is float:
                budget.left -= len(key) + _SCALAR_COST + 4
                obj[key] = item
            else:
                budget.left -= len(key) + 4
                obj[key] = _walk(item, depth + 1, budget, secret)
        return obj
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            budget.left -= len(TOO_DEEP)
            return TOO_DEEP
        array: list[Any] = []
        for item in value:
            if budget.left < 0:
                budget.truncated = True
                break
            array.append(_walk(item, depth + 1, budget, masked))
            budget.left -= 1
        return array
    if isinstance(value, int | float):
        budget.left -= _SCALAR_COST
        return value
    if isinstance(value, bytes | bytearray):
        shown = REDACTED if masked else f"<{len(value)} bytes>"
        budget.left -= len(shown) + 3
        return shown
    return _walk(str(value), depth, budget, masked)


def redact(value: Any, max_chars: int = MAX_PAYLOAD_CHARS) -> tuple[Any, bool]:
    """A copy of `value` with secrets masked and large strings capped, and whether it was cut short to stay within
    about `max_chars` characters of JSON."""
    budget = _Budget(max_chars)
    return _walk(value, 0, budget, False), budget.truncated


def payload_json(value: Any) -> str:
    """The JSON snapshot of a payload for a span attribute: `redact`ed, at most about MAX_PAYLOAD_CHARS characters;
    a snapshot that had to be cut is `{"truncated": true, "head": "<the JSON text, cut>"}`."""
    snapshot, truncated = redact(value)
    try:
        text = orjson.dumps(snapshot).decode()
    except TypeError:
        # A lone surrogate (the standard library's parser lets "\ud800" through) is not UTF-8: neither orjson nor the
        # OTLP exporter would take it, so it becomes "?".
        raw = json.dumps(snapshot, ensure_ascii=False, separators=(",", ":"))
        text = raw.encode("utf-8", "replace").decode("utf-8")
    if truncated or len(text) > MAX_PAYLOAD_CHARS:
        return orjson.dumps({"truncated": True, "head": text[:MAX_PAYLOAD_CHARS]}).decode()
    return text
