"""How much of a payload a trace snapshot keeps: the operator's size cap and sensitivity switch.

Two settings, read by every service when it sets up tracing (`servicekit.telemetry.setup_tracing`):

- AUTOMAGIK_OMNI_TRACE_MAX_PAYLOAD_SIZE (characters of JSON per snapshot, default 16384, 0 = no payloads at all):
  a larger snapshot is stored as `{"truncated": true, "head": "<the JSON, cut>"}`.
- AUTOMAGIK_OMNI_TRACE_INCLUDE_SENSITIVE (default false). false: the standard redaction (`servicekit.redaction`):
  every key whose name sounds secret (key, token, secret, signature, cookie, ...) is masked, including WhatsApp
  `mediaKey` and the like, and strings over 1,024 characters keep only their head. true: for debugging an
  integration, the message content is kept whole (long texts and captions, media keys, thumbnails) within the size
  cap; credentials are still masked, whatever this switch says: instance secrets (API keys, tokens, passwords,
  authorization headers, signing secrets, cookies, signatures) never reach the tracing database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic_settings import BaseSettings, SettingsConfigDict

from servicekit import redaction

_CREDENTIAL_NAME = re.compile(
    r"api[_-]?key|apikey|token|secret|password|passwd|authorization|signature|credential|cookie", re.IGNORECASE
)
"""Names masked even with include_sensitive: what authenticates someone, never message content."""


class _PayloadSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUTOMAGIK_OMNI_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    trace_max_payload_size: int = redaction.MAX_PAYLOAD_CHARS
    trace_include_sensitive: bool = False


@dataclass(frozen=True, slots=True)
class PayloadPolicy:
    """The snapshot rules in force in this process."""

    max_size: int = redaction.MAX_PAYLOAD_CHARS
    include_sensitive: bool = False

    @classmethod
    def from_env(cls) -> PayloadPolicy:
        """The policy the AUTOMAGIK_OMNI_TRACE_* variables (or .env) set; a negative size counts as 0."""
        settings = _PayloadSettings()
        return cls(max(0, settings.trace_max_payload_size), settings.trace_include_sensitive)


_policy = PayloadPolicy()


def configure_payloads(policy: PayloadPolicy) -> None:
    """Make `policy` the rules of every later `payload_json` call in this process."""
    global _policy
    _policy = policy


def current_policy() -> PayloadPolicy:
    """The rules in force."""
    return _policy


def _unmask_content(value: Any, depth: int) -> Any:
    """`value` with only credential-named keys masked (the include_sensitive walk); bounded depth."""
    if depth >= redaction.MAX_DEPTH:
        return redaction.TOO_DEEP
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for name, item in value.items():
            key = name if isinstance(name, str) else str(name)
            if _CREDENTIAL_NAME.search(key) and not isinstance(item, Mapping | list | tuple):
                out[key] = redaction.REDACTED if item is not None and not isinstance(item, bool | int | float) else item
            elif _CREDENTIAL_NAME.search(key):
                # Everything under a credential's name is masked, as the standard redaction does.
                out[key] = redaction.redact({"secret": item})[0]["secret"]
            else:
                out[key] = _unmask_content(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_unmask_content(item, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return str(value)


def _dumps(snapshot: Any) -> str:
    try:
        return orjson.dumps(snapshot).decode()
    except TypeError:
        # A lone surrogate is not UTF-8: neither orjson nor the OTLP exporter would take it, so it becomes "?".
        raw = json.dumps(snapshot, ensure_ascii=False, separators=(",", ":"), default=str)
        return raw.encode("utf-8", "replace").decode("utf-8")


def payload_json(value: Any) -> str:
    """The JSON snapshot of a payload for a span attribute under the current policy; `{"truncated": true, "head":
    ...}` when it exceeds the size cap, `{"omitted": true}` when the cap is 0 (payload capture off)."""
    policy = _policy
    if policy.max_size == 0:
        return '{"omitted":true}'
    if policy.include_sensitive:
        text = _dumps(_unmask_content(value, 0))
        truncated = False
    else:
        snapshot, truncated = redaction.redact(value, policy.max_size)
        text = _dumps(snapshot)
    if truncated or len(text) > policy.max_size:
        return orjson.dumps({"truncated": True, "head": text[: policy.max_size]}).decode()
    return text
