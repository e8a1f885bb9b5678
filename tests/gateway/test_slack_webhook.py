"""The Slack Events API route: raw bytes and Slack's headers go to ingress as a SLACK webhook; a verified
url_verification is answered with its challenge."""

from __future__ import annotations

import httpx
from omni.common.v1 import channel_pb2

from tests.gateway.conftest import FakeMesh

URL = "/api/v1/webhook/slack/acme"
HEADERS = {
    "content-type": "application/json",
    "X-Slack-Request-Timestamp": "1712345678",
    "X-Slack-Signature": "v0=abc",
    "X-Slack-Retry-Num": "1",
}


async def test_an_event_is_forwarded_raw_with_slacks_headers(anon: httpx.AsyncClient, mesh: FakeMesh) -> None:
    body = b'{"type": "event_callback", "event": {"type": "message", "text": "hi"}}'
    response = await anon.post(URL, content=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    [forwarded] = mesh.script.calls["ReceiveWebhook"]
    assert forwarded.channel == channel_pb2.CHANNEL_SLACK
    assert forwarded.body == body
    assert forwarded.headers["x-slack-signature"] == "v0=abc"
    assert forwarded.headers["x-slack-retry-num"] == "1"


async def test_url_verification_answers_the_challenge(anon: httpx.AsyncClient) -> None:
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = b'{"type": "url_verification", "token": "t", "challenge": "' + challenge.encode() + b'"}'
    response = await anon.post(URL, content=body, headers=HEADERS)
    assert response.status_code == 200
    assert response.json() == {"challenge": challenge}


async def test_an_unknown_instance_is_401(anon: httpx.AsyncClient) -> None:
    response = await anon.post("/api/v1/webhook/slack/ghost", content=b"{}", headers=HEADERS)
    assert response.status_code == 401


async def test_slack_instances_show_their_request_url(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/v1/instances",
        json={
            "name": "workspace",
            "channel_type": "slack",
            "slack_bot_token": "xoxb-1-2-abc",
            "slack_signing_secret": "8f742231b10e8888abcd99yyyzzz85a5",
            "agent_api_url": "http://agent.example",
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["webhook_url"].endswith("/api/v1/webhook/slack/workspace")
