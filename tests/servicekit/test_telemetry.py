"""Payload snapshots never carry a secret or a whole file, and stay valid JSON."""

from __future__ import annotations

import orjson
import pytest

from servicekit.telemetry import MAX_PAYLOAD_CHARS, payload_json


@pytest.mark.parametrize(
    ("payload", "secret"),
    [
        ({"apikey": "EVO-KEY-1"}, "EVO-KEY-1"),
        ({"data": {"agent_api_key": "AGENT-KEY-2"}}, "AGENT-KEY-2"),
        ({"headers": {"Authorization": "Bearer JWT-3"}}, "JWT-3"),
        ({"items": [{"slack_bot_token": "xoxb-4"}]}, "xoxb-4"),
        ({"webhook": {"client_secret": 'with "quotes" 5'}}, "quotes"),
    ],
)
def test_secret_values_are_masked(payload: dict[str, object], secret: str) -> None:
    text = payload_json(payload)
    assert secret not in text
    assert "***" in text
    orjson.loads(text)


def test_other_fields_survive_even_when_they_mention_secrets() -> None:
    payload = {"message": 'my "token": "abc" is here', "token_count": 3, "token": None}
    assert orjson.loads(payload_json(payload)) == payload


def test_base64_media_is_shortened_and_the_whole_is_capped() -> None:
    snapshot = orjson.loads(payload_json({"base64": "A" * 200_000, "caption": "hi"}))
    assert snapshot["caption"] == "hi"
    assert len(snapshot["base64"]) < 100
    huge = payload_json({f"k{i}": "x" * 900 for i in range(100)})
    assert orjson.loads(huge)["truncated"] is True
    assert len(huge) < MAX_PAYLOAD_CHARS + 1000
