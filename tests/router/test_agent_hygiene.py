"""The router's agent call through the real router server: signed requests, no redirects, bounded replies, and
instances refused when they point at link-local or cloud-metadata addresses.

The fake agents here are real aiohttp servers (a redirecting one, a flooding one) next to the harness's echo agent,
which verifies Standard Webhooks signatures itself when given the instance's secret.
"""

from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest
from aiohttp import web
from google.protobuf import field_mask_pb2
from omni.common.v1 import channel_pb2
from omni.router.v1 import instance_pb2, router_service_pb2

from servicekit import standard_webhooks
from services.router.core.agent_client import DEFAULT_MAX_RESPONSE_BYTES
from tests.helpers.http_servers import ServerFactory, flooding
from tests.router.conftest import Harness, inbound, wait_for, whatsapp_instance
from tests.router.test_instances import violations

SENT = channel_pb2.MESSAGE_OUTCOME_SENT
ERROR = channel_pb2.MESSAGE_OUTCOME_ERROR


async def create(h: Harness, agent_url: str, **overrides: Any) -> router_service_pb2.CreateInstanceResponse:
    response: router_service_pb2.CreateInstanceResponse = await h.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(agent_url, **overrides))
    )
    return response


async def route(h: Harness, message_id: str = "msg-1") -> router_service_pb2.RouteMessageResponse:
    response: router_service_pb2.RouteMessageResponse = await h.stub.RouteMessage(
        router_service_pb2.RouteMessageRequest(message=inbound(message_id), attempt=1), timeout=30
    )
    return response


def agent_span_error(h: Harness) -> str:
    [span] = h.spans("agent.call")
    return str((span.attributes or {}).get("omni.error_message", ""))


async def test_the_agent_receives_a_valid_signature(harness: Harness) -> None:
    created = await create(harness, harness.agent.url)
    secret = created.agent_signing_secret
    assert secret.startswith("whsec_")
    harness.agent.signing_secret = secret  # the echo agent now refuses anything not signed with it

    response = await route(harness)

    assert response.outcome == SENT
    assert harness.agent.rejections == []
    [headers] = harness.agent.headers
    assert headers["webhook-id"] == "msg_msg-1"
    [body] = harness.agent.calls
    # The signature covers exactly the bytes the router serialized: re-serializing the parsed body gives them back.
    standard_webhooks.verify(secret, headers, orjson.dumps(body))


async def test_retries_keep_the_webhook_id_and_are_each_signed(harness: Harness) -> None:
    created = await create(harness, harness.agent.url)
    harness.agent.signing_secret = created.agent_signing_secret
    harness.agent.fail_next(1, status=503)

    assert (await route(harness)).outcome == SENT
    first, second = harness.agent.headers
    assert first["webhook-id"] == second["webhook-id"] == "msg_msg-1"
    assert harness.agent.rejections == []


async def test_a_wrong_secret_is_refused_by_the_agent(harness: Harness) -> None:
    await create(harness, harness.agent.url)
    harness.agent.signing_secret = standard_webhooks.new_signing_secret()

    response = await route(harness)

    assert response.outcome == ERROR
    assert response.error_message.startswith("agent returned HTTP 401")
    assert "invalid signature: no matching signature" in response.error_message


async def test_a_redirect_is_an_agent_error_and_is_not_followed(harness: Harness, servers: ServerFactory) -> None:
    async def steal(request: web.Request) -> web.StreamResponse:
        return web.json_response({"text": "stolen"})

    target = await servers(steal)

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(target.url + "/collect")

    agent = await servers(redirect)
    await create(harness, agent.url)

    response = await route(harness)

    assert response.outcome == ERROR
    assert response.error_message == (
        f"agent answered HTTP 302 redirecting to {target.url}/collect; redirects are not followed"
    )
    assert agent.paths == ["/api/agent/chat"]  # asked once: a redirect is not retried either
    assert target.paths == []
    assert harness.channels.requests == []
    assert "redirects are not followed" in agent_span_error(harness)


async def test_an_oversized_reply_is_an_agent_error_without_reading_it_all(
    harness: Harness, servers: ServerFactory
) -> None:
    """A body streamed without Content-Length, far bigger than the cap: the router stops reading at the cap."""
    total = 256 * 1024 * 1024
    written: list[int] = []
    agent = await servers(flooding(total, written))
    await create(harness, agent.url)

    response = await route(harness)

    assert response.outcome == ERROR
    assert response.error_message == (
        f"agent reply refused: response body larger than {DEFAULT_MAX_RESPONSE_BYTES} bytes"
    )
    assert harness.channels.requests == []
    await wait_for(lambda: bool(written))  # the flood ends when the router hangs up
    assert written[0] < total // 4


async def test_a_declared_oversized_reply_is_refused_before_reading(harness: Harness, servers: ServerFactory) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{" + b" " * (DEFAULT_MAX_RESPONSE_BYTES + 10) + b"}", content_type="text/plain")

    agent = await servers(big)
    await create(harness, agent.url)

    response = await route(harness)

    assert response.outcome == ERROR
    assert f"(Content-Length {DEFAULT_MAX_RESPONSE_BYTES + 12})" in response.error_message


@pytest.mark.parametrize(
    ("overrides", "field_path"),
    [
        ({"agent_api_url": "http://169.254.169.254/"}, "agent_api_url"),
        ({"agent_api_url": "http://[fd00:ec2::254]/latest"}, "agent_api_url"),
        ({"agent_api_url": "http://metadata.google.internal/computeMetadata/v1"}, "agent_api_url"),
        (
            {
                "whatsapp": instance_pb2.WhatsAppConfig(
                    evolution_url="http://169.254.10.20:8080", whatsapp_instance="acme-support"
                )
            },
            "whatsapp.evolution_url",
        ),
    ],
)
async def test_link_local_and_metadata_urls_are_invalid(
    harness: Harness, overrides: dict[str, Any], field_path: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(harness, harness.agent.url, **overrides)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(err.value)
    assert found[field_path].startswith("refused address: ")
    assert "AUTOMAGIK_OMNI_ALLOW_LINK_LOCAL_URLS" in found[field_path]


async def test_an_update_to_a_metadata_url_is_invalid(harness: Harness) -> None:
    await create(harness, harness.agent.url)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.stub.UpdateInstance(
            router_service_pb2.UpdateInstanceRequest(
                instance=instance_pb2.Instance(name="acme", agent_api_url="http://169.254.169.254/"),
                update_mask=field_mask_pb2.FieldMask(paths=["agent_api_url"]),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "agent_api_url" in violations(err.value)
