"""Trace payload capture limits: AUTOMAGIK_OMNI_TRACE_MAX_PAYLOAD_SIZE and _TRACE_INCLUDE_SENSITIVE honoured, and
credentials masked whatever the switch says."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from servicekit.payload_policy import PayloadPolicy, configure_payloads, current_policy
from servicekit.telemetry import payload_json

WEBHOOK = {
    "apikey": "evo-secret-token",
    "headers": {"Authorization": "Bearer abc", "x-omni-webhook-secret": "whsec"},
    "agent_api_key": "sk-agent",
    "data": {
        "key": {"id": "3EB0", "remoteJid": "5511@s.whatsapp.net"},
        "message": {"conversation": "x" * 2_000, "imageMessage": {"mediaKey": "media-decryption-key"}},
    },
}


@pytest.fixture(autouse=True)
def restore_policy() -> Iterator[None]:
    before = current_policy()
    yield
    configure_payloads(before)


def test_default_masks_secret_names_and_caps_long_strings() -> None:
    configure_payloads(PayloadPolicy())
    snapshot = orjson.loads(payload_json(WEBHOOK))
    assert snapshot["apikey"] == "***"
    assert snapshot["agent_api_key"] == "***"
    assert snapshot["headers"] == {"Authorization": "***", "x-omni-webhook-secret": "***"}
    assert snapshot["data"]["message"]["imageMessage"]["mediaKey"] == "***"
    assert snapshot["data"]["key"]["id"] == "3EB0"
    assert len(snapshot["data"]["message"]["conversation"]) < 100


def test_include_sensitive_keeps_content_but_never_credentials() -> None:
    configure_payloads(PayloadPolicy(include_sensitive=True))
    snapshot = orjson.loads(payload_json(WEBHOOK))
    assert snapshot["data"]["message"]["conversation"] == "x" * 2_000
    assert snapshot["data"]["message"]["imageMessage"]["mediaKey"] == "media-decryption-key"
    assert snapshot["apikey"] == "***"
    assert snapshot["agent_api_key"] == "***"
    assert snapshot["headers"] == {"Authorization": "***", "x-omni-webhook-secret": "***"}


@pytest.mark.parametrize("sensitive", [False, True])
def test_max_size_truncates(sensitive: bool) -> None:
    configure_payloads(PayloadPolicy(max_size=300, include_sensitive=sensitive))
    text = payload_json(WEBHOOK)
    snapshot = orjson.loads(text)
    assert snapshot["truncated"] is True
    assert len(snapshot["head"]) <= 300
    assert "evo-secret-token" not in text
    assert "sk-agent" not in text


def test_size_zero_captures_nothing() -> None:
    configure_payloads(PayloadPolicy(max_size=0))
    assert orjson.loads(payload_json(WEBHOOK)) == {"omitted": True}


def test_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOMAGIK_OMNI_TRACE_MAX_PAYLOAD_SIZE", "2048")
    monkeypatch.setenv("AUTOMAGIK_OMNI_TRACE_INCLUDE_SENSITIVE", "true")
    assert PayloadPolicy.from_env() == PayloadPolicy(max_size=2048, include_sensitive=True)
    monkeypatch.setenv("AUTOMAGIK_OMNI_TRACE_MAX_PAYLOAD_SIZE", "-5")
    assert PayloadPolicy.from_env().max_size == 0
