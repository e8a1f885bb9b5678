"""Trace payload snapshots: every secret-named key masked at any depth, values capped, bounded work on hostile input."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from servicekit.redaction import MAX_DEPTH, MAX_PAYLOAD_CHARS, REDACTED, TOO_DEEP, payload_json


def _snapshot(value: Any) -> Any:
    return orjson.loads(payload_json(value))


@pytest.mark.parametrize(
    "name",
    [
        "apikey",
        "ApiKey",
        "evolution_key",
        "agent_api_key",
        "Authorization",
        "x-omni-webhook-secret",
        "webhook_secret",
        "slack_signing_secret",
        "discord_bot_token",
        "PASSWORD",
        "webhook-signature",
        "mediaKey",
        "Cookie",
    ],
)
def test_secret_named_keys_are_masked_at_any_depth_and_inside_arrays(name: str) -> None:
    payload = {"a": [{"b": [{"c": {name: "s3cr3t"}}]}], name: "s3cr3t", "list": [[{name: "s3cr3t"}]]}
    text = payload_json(payload)
    assert "s3cr3t" not in text
    snapshot = orjson.loads(text)
    assert snapshot["a"][0]["b"][0]["c"][name] == REDACTED
    assert snapshot["list"][0][0][name] == REDACTED


def test_everything_under_a_secret_key_is_masked_but_numbers_and_nulls_survive() -> None:
    payload = {"credentials": {"user": "u1", "tokens": ["t1", "t2"], "expires": 60}, "token": None, "token_count": 3}
    assert _snapshot(payload) == {
        "credentials": {"user": REDACTED, "tokens": [REDACTED, REDACTED], "expires": 60},
        "token": None,
        "token_count": 3,
    }


def test_the_whatsapp_message_key_is_an_address_not_a_secret() -> None:
    payload = {"data": {"key": {"remoteJid": "5511@s.whatsapp.net", "id": "ABC", "fromMe": False}}, "apikey": "k"}
    snapshot = _snapshot(payload)
    assert snapshot["data"]["key"] == payload["data"]["key"]  # type: ignore[index]
    assert snapshot["apikey"] == REDACTED
    assert _snapshot({"key": "sk-live-1"}) == {"key": REDACTED}


def test_long_strings_and_long_keys_are_capped() -> None:
    snapshot = _snapshot({"base64": "A" * 300_000, "k" * 5000: "v"})
    assert snapshot["base64"].startswith("A" * 64)
    assert snapshot["base64"].endswith("<300000 chars>")
    assert all(len(key) < 100 for key in snapshot)


def test_deep_nesting_is_cut_without_recursion_errors() -> None:
    value: Any = "leaf"
    for _ in range(5000):
        value = {"a": [value]}
    text = payload_json(value)
    assert TOO_DEEP in text
    assert text.count("[") <= MAX_DEPTH


def test_a_100k_element_array_is_bounded_in_time_and_size() -> None:
    payload = {"items": [{"token": "t" * 20, "n": i} for i in range(100_000)]}
    started = time.perf_counter()
    text = payload_json(payload)
    assert time.perf_counter() - started < 1.0
    assert len(text) < MAX_PAYLOAD_CHARS + 1000
    snapshot = orjson.loads(text)
    assert snapshot["truncated"] is True
    assert "tttt" not in snapshot["head"]


def test_100k_keys_and_repeated_secret_words_are_bounded() -> None:
    words = "token secret apikey password authorization signature "
    payloads: list[Any] = [
        {f"{words * 3}{i}": words * 3 for i in range(100_000)},
        {"message": words * 100_000, words * 10_000: words, "nested": [{"text": words * 1000}] * 10_000},
        [words] * 100_000,
    ]
    for payload in payloads:
        started = time.perf_counter()
        text = payload_json(payload)
        assert time.perf_counter() - started < 1.0
        assert len(text) < MAX_PAYLOAD_CHARS + 1000
        orjson.loads(text)


def test_other_values_survive_and_the_output_is_valid_json() -> None:
    payload = {"message": 'my "token": "abc" is here', "n": 1.5, "ok": True, "nested": {"list": [1, "two", None]}}
    assert _snapshot(payload) == payload
    assert _snapshot({"text": "\ud800 lone surrogate"})["text"] == "? lone surrogate"
    assert _snapshot({1: b"raw", "t": (1, 2)}) == {"1": "<3 bytes>", "t": [1, 2]}
