"""FetchMedia over a real in-process gRPC server against the Evolution simulator's getBase64FromMediaMessage: the
file's bytes, "Message not found", the cap (declared and read), an unreachable Evolution, and channels without it."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servicekit import trace_attributes as attrs
from servicekit.errors import FailedPreconditionError
from servicekit.grpc_clients import open_channel
from servicekit.instances import DiscordConfig, Instance
from services.channels.config import Settings
from services.channels.core.evolution_media import answer_cap
from services.channels.server import create_server
from simulators.evolution import EvolutionSimulator
from tests.channels.conftest import EVOLUTION_INSTANCE, Harness, MakeHarness
from tests.helpers.mesh_auth import mesh_as

CHAT_JID = "5521991234567@s.whatsapp.net"
Request = channels_service_pb2.FetchMediaRequest


@pytest.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    return make_harness()


@pytest.fixture
async def stub(harness: Harness) -> AsyncIterator[channels_service_pb2_grpc.ChannelsServiceAsyncStub]:
    settings = Settings(enable_tracing=False, grpc_host="127.0.0.1")
    server, port, _ = create_server(settings, harness.core, port=0)
    await server.start()
    async with open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("router")) as channel:
        yield channels_service_pb2_grpc.ChannelsServiceStub(channel)
    await server.stop(None)


async def fetch_error(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, request: channels_service_pb2.FetchMediaRequest
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.FetchMedia(request, timeout=10)
    return failure.value


async def test_the_received_file_comes_back_whole(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, sim: EvolutionSimulator
) -> None:
    data = bytes(range(256)) * 64
    sim.store_media("KEY-IMG", data, "image/jpeg", instance=EVOLUTION_INSTANCE)

    answer = await stub.FetchMedia(
        Request(instance_name="acme", channel_message_id="KEY-IMG", chat_id=CHAT_JID), timeout=10
    )

    assert (answer.data, answer.mime_type, answer.filename) == (data, "image/jpeg", "KEY-IMG.jpeg")
    assert sim.media_fetches == [
        {"message": {"key": {"id": "KEY-IMG"}}, "convertToMp4": False, "instance": EVOLUTION_INSTANCE}
    ]


async def test_the_simulator_answers_the_contract_fixture_shape(
    sim: EvolutionSimulator, harness: Harness, evolution_fixtures: Path
) -> None:
    """The simulator's answer has the keys of the recorded Evolution answer (the hub reads mimetype, base64,
    fileName and size.fileLength)."""
    fixture = json.loads((evolution_fixtures / "rest" / "get-base64-from-media-message.json").read_text())
    expected = fixture["response"]["body"]
    original = base64.b64decode(expected["base64"])
    sim.store_media(fixture["request"]["message"]["key"]["id"], original, expected["mimetype"])
    fetched = await harness.core.fetch_media("acme", fixture["request"]["message"]["key"]["id"], CHAT_JID, 1 << 20)
    assert fetched.data == original
    assert fetched.filename == expected["fileName"]


async def test_unknown_message_is_failed_precondition(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, sim: EvolutionSimulator
) -> None:
    error = await fetch_error(stub, Request(instance_name="acme", channel_message_id="NOPE", chat_id=CHAT_JID))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "Message not found" in (error.details() or "")


async def test_another_instance_file_is_not_found_there(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, sim: EvolutionSimulator
) -> None:
    sim.store_media("KEY-OTHER", b"secret", "image/png", instance="someone-else")
    error = await fetch_error(stub, Request(instance_name="acme", channel_message_id="KEY-OTHER"))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_over_the_cap_is_refused_and_traced(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, sim: EvolutionSimulator, spans: InMemorySpanExporter
) -> None:
    sim.store_media("KEY-BIG", b"z" * 5000, "video/mp4")
    error = await fetch_error(stub, Request(instance_name="acme", channel_message_id="KEY-BIG", max_bytes=4999))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "over the 4999-byte cap" in (error.details() or "")
    [span] = [s for s in spans.get_finished_spans() if s.name == "channels.fetch_media"]
    assert span.attributes is not None
    assert "4999" in str(span.attributes[attrs.MEDIA_NOTE])


async def test_an_answer_bigger_than_the_cap_is_abandoned_unread(sim: EvolutionSimulator, harness: Harness) -> None:
    """Without a declared size (an older Evolution), the read itself stops at the base64 of the cap."""
    sim.store_media("KEY-HUGE", b"q" * (answer_cap(10_000) + 10), "application/pdf")
    with pytest.raises(FailedPreconditionError, match="larger than 10000 bytes") as failure:
        await harness.core.fetch_media("acme", "KEY-HUGE", CHAT_JID, 10_000)
    assert failure.value.reason == "MEDIA_TOO_LARGE"


async def test_unreachable_evolution_is_unavailable(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, sim: EvolutionSimulator
) -> None:
    await sim.stop()
    error = await fetch_error(stub, Request(instance_name="acme", channel_message_id="KEY"))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


async def test_unknown_instance_and_missing_id(
    stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, harness: Harness
) -> None:
    assert (await fetch_error(stub, Request(instance_name="ghost", channel_message_id="K"))).code() is (
        grpc.StatusCode.NOT_FOUND
    )
    assert (await fetch_error(stub, Request(instance_name="acme"))).code() is grpc.StatusCode.INVALID_ARGUMENT
    harness.directory.instances["disco"] = Instance(name="disco", config=DiscordConfig(bot_token="t"))
    error = await fetch_error(stub, Request(instance_name="disco", channel_message_id="K"))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
