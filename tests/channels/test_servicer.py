"""ChannelsService through a real in-process grpc.aio server on port 0: proto mapping and status codes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc, outbound_pb2
from omni.common.v1 import channel_pb2, message_pb2

from servicekit.errors import FailedPreconditionError, UnavailableError
from servicekit.grpc_clients import call, open_channel
from servicekit.grpc_server import set_serving
from services.channels.config import Settings
from services.channels.server import SERVICE_NAME, create_server
from simulators.evolution import EvolutionSimulator
from tests.channels.conftest import CHAT, MakeHarness
from tests.helpers.mesh_auth import mesh_as


@pytest.fixture
async def channel(make_harness: MakeHarness) -> AsyncIterator[grpc.aio.Channel]:
    settings = Settings(enable_tracing=False, grpc_host="127.0.0.1")
    server, port, health = create_server(settings, make_harness().core, port=0)
    await server.start()
    await set_serving(health, [SERVICE_NAME], True)
    async with open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("router")) as opened:
        yield opened
    await server.stop(None)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> channels_service_pb2_grpc.ChannelsServiceAsyncStub:
    return channels_service_pb2_grpc.ChannelsServiceStub(channel)


def send_request(key: str, *texts: str, instance: str = "acme") -> channels_service_pb2.SendMessageRequest:
    return channels_service_pb2.SendMessageRequest(
        instance_name=instance,
        chat_id=CHAT,
        idempotency_key=key,
        parts=[outbound_pb2.OutboundPart(text=t) for t in texts],
    )


async def test_send_message_returns_part_results(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, sim: EvolutionSimulator
) -> None:
    response = await stub.SendMessage(send_request("g-1", "one", "two"), timeout=10)

    assert [r.state for r in response.results] == [outbound_pb2.PART_STATE_SENT] * 2
    assert [r.channel_message_id for r in response.results] == [m.key_id for m in sim.sent]
    assert [r.index for r in response.results] == [0, 1]


async def test_media_caption_comes_from_the_media_when_text_is_empty(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, sim: EvolutionSimulator
) -> None:
    part = outbound_pb2.OutboundPart(
        media=message_pb2.Media(
            type=channel_pb2.MESSAGE_TYPE_IMAGE, url="https://files.example.com/a.jpg", caption="look"
        )
    )
    request = channels_service_pb2.SendMessageRequest(
        instance_name="acme", chat_id=CHAT, idempotency_key="g-2", parts=[part]
    )

    await stub.SendMessage(request, timeout=10)

    assert sim.sent[0].body["caption"] == "look"


async def test_unknown_instance_is_not_found(stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendMessage(send_request("g-3", "hi", instance="nope"), timeout=10)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_no_parts_is_invalid_argument(stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendMessage(send_request("g-4"), timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_rejected_part_is_failed_precondition_with_the_reason(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, sim: EvolutionSimulator
) -> None:
    sim.fail_next(1, status=400, body={"status": 400, "error": "Bad Request", "response": {"message": ["Nope"]}})

    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await stub.SendMessage(send_request("g-5", "hi"), timeout=10)
    assert raw.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    with pytest.raises(FailedPreconditionError) as caught:
        await call(stub.SendMessage, send_request("g-5", "hi"), timeout=10)
    assert caught.value.reason == "CHANNEL_REQUEST_INVALID"
    assert "Nope" in caught.value.message


async def test_a_transient_failure_is_unavailable_with_a_retry_hint(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, sim: EvolutionSimulator
) -> None:
    sim.fail_next(1, status=429, retry_after=3)

    with pytest.raises(UnavailableError) as caught:
        await call(stub.SendMessage, send_request("g-6", "hi"), timeout=10)

    assert caught.value.retry_after == 3


async def test_presence_and_connection_status(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, sim: EvolutionSimulator
) -> None:
    await stub.SendPresence(
        channels_service_pb2.SendPresenceRequest(
            instance_name="acme", chat_id=CHAT, presence=outbound_pb2.PRESENCE_COMPOSING, duration_ms=5
        ),
        timeout=10,
    )
    status = await stub.GetConnectionStatus(
        channels_service_pb2.GetConnectionStatusRequest(instance_name="acme", include_qr_code=True), timeout=10
    )

    assert status.state == channel_pb2.CONNECTION_STATE_CONNECTED
    assert status.raw_state == "open"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetConnectionStatus(channels_service_pb2.GetConnectionStatusRequest(instance_name="x"), timeout=10)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_health_reports_the_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)

    assert response.status == health_pb2.HealthCheckResponse.SERVING
