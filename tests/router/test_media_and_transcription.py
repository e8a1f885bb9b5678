"""Files and voice notes before the agent turn, through the real router server: the bytes come from a fake ingress
(GetMedia) or a fake channels service (FetchMedia) over real gRPC, the voice note is transcribed by the fake
OpenAI-compatible server over HTTP, and the real echo agent records what it got."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc
from omni.common.v1 import channel_pb2, message_pb2
from omni.ingress.v1 import ingress_service_pb2, ingress_service_pb2_grpc
from omni.router.v1 import instance_pb2, router_service_pb2, router_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from examples.agent_echo import EchoAgent
from servicekit import trace_attributes as attrs
from servicekit.database import migrate, open_database
from servicekit.errors import FailedPreconditionError, NotFoundError, UnavailableError
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import bind, new_server
from services.router.api_key_store import ApiKeyRepository
from services.router.channel_client import GrpcAccountChecker, GrpcChannelSender
from services.router.channel_media_client import GrpcChannelMedia
from services.router.config import Settings
from services.router.core.agent_client import AgentClient
from services.router.core.api_keys import ApiKeyService
from services.router.core.api_sends import ApiSender
from services.router.core.broadcaster import InstanceBroadcaster
from services.router.core.instances import InstanceService
from services.router.core.media_resolver import MediaResolver
from services.router.core.router import MessageRouter
from services.router.core.transcription import TRANSCRIPTION_FAILED_TEXT, Transcriber, TranscriptionSettings
from services.router.ingress_client import GrpcStoredMedia
from services.router.secret_box import SecretBox
from services.router.server import create_server
from services.router.storage import MIGRATIONS, SCHEMA, IdentityRepository, InstanceRepository, RouteRepository
from tests.helpers.mesh_auth import mesh_as
from tests.helpers.transcription_server import FakeTranscriptionServer
from tests.router.conftest import AGENT_KEY, FakeChannels, RecordingPurger, whatsapp_instance

SENT = channel_pb2.MESSAGE_OUTCOME_SENT
MAX_BYTES = 64 * 1024
"""The harness router's AUTOMAGIK_OMNI_MAX_MEDIA_BYTES."""
GLOBAL_KEY = "global-transcription-key"
INSTANCE_KEY = "instance-transcription-key"
VOICE = b"OggS\x00\x02fake opus voice note" * 20


class MediaChannels(FakeChannels):
    """FakeChannels plus FetchMedia: serves the files registered in `files` by channel message id."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, tuple[bytes, str, str]] = {}
        self.fetches: list[channels_service_pb2.FetchMediaRequest] = []
        self.down = False

    async def FetchMedia(
        self, request: channels_service_pb2.FetchMediaRequest, context: Any
    ) -> channels_service_pb2.FetchMediaResponse:
        self.fetches.append(request)
        if self.down:
            raise UnavailableError("Evolution could not be asked: connection refused")
        if request.channel_message_id not in self.files:
            raise FailedPreconditionError("whatsapp did not give the file: Message not found")
        data, mime, filename = self.files[request.channel_message_id]
        return channels_service_pb2.FetchMediaResponse(data=data, mime_type=mime, filename=filename)


class FakeIngress(ingress_service_pb2_grpc.IngressServiceServicer):
    """IngressService.GetMedia over a dict of (instance, blob id) → (bytes, MIME type)."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.requests: list[ingress_service_pb2.GetMediaRequest] = []

    async def GetMedia(
        self, request: ingress_service_pb2.GetMediaRequest, context: Any
    ) -> ingress_service_pb2.GetMediaResponse:
        self.requests.append(request)
        found = self.blobs.get((request.instance_name, request.blob_id))
        if found is None:
            raise NotFoundError(f"no stored media {request.blob_id!r}")
        return ingress_service_pb2.GetMediaResponse(data=found[0], mime_type=found[1])


@dataclass
class World:
    stub: router_service_pb2_grpc.RouterServiceAsyncStub
    agent: EchoAgent
    channels: MediaChannels
    ingress: FakeIngress
    whisper: FakeTranscriptionServer
    exporter: InMemorySpanExporter

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def call_for(self, message_id: str) -> dict[str, Any]:
        return next(c for c in self.agent.calls if c["context"]["message_id"] == f"WA-{message_id}")


async def _grpc_server(service: str, add: Any, servicer: Any) -> tuple[Any, int]:
    server = new_server(service, tracing=False)
    add(servicer, server)
    port = bind(server, "127.0.0.1", 0)
    await server.start()
    return server, port


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    db = await open_database(db_url, SCHEMA)
    await migrate(db, MIGRATIONS, lock_key=SCHEMA)
    channels = MediaChannels()  # type: ignore[abstract]  # only the RPCs under test are served
    ingress = FakeIngress()  # type: ignore[abstract]
    channels_server, channels_port = await _grpc_server(
        "channels", channels_service_pb2_grpc.add_ChannelsServiceServicer_to_server, channels
    )
    ingress_server, ingress_port = await _grpc_server(
        "ingress", ingress_service_pb2_grpc.add_IngressServiceServicer_to_server, ingress
    )
    channels_channel = open_channel(f"127.0.0.1:{channels_port}", tracing=False)
    ingress_channel = open_channel(f"127.0.0.1:{ingress_port}", tracing=False)
    channels_stub = channels_service_pb2_grpc.ChannelsServiceStub(channels_channel)
    agent = EchoAgent(api_key=AGENT_KEY, prefix="Echo: ")
    await agent.start()
    whisper = FakeTranscriptionServer(text="quero marcar uma consulta")
    await whisper.start()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    session = aiohttp.ClientSession()
    box = SecretBox.generate()
    identities = IdentityRepository(db)
    instances = InstanceRepository(db, box, cache_seconds=0.0, on_delete=identities.forget_instance)
    sender = GrpcChannelSender(channels_stub, send_timeout=5)
    router = MessageRouter(
        instances=instances,
        identities=identities,
        routes=RouteRepository(db),
        agent=AgentClient(session, backoff=(0.05,), tracer=tracer),
        channels=sender,
        tracer=tracer,
        typing_delay=-1,
        media=MediaResolver(
            GrpcStoredMedia(ingress_service_pb2_grpc.IngressServiceStub(ingress_channel), timeout=5),
            GrpcChannelMedia(channels_stub, timeout=5),
            max_bytes=MAX_BYTES,
            tracer=tracer,
        ),
        transcriber=Transcriber(
            session,
            defaults=TranscriptionSettings(url=whisper.url, api_key=GLOBAL_KEY, model="whisper-1", timeout_seconds=1),
            tracer=tracer,
        ),
    )
    server, port, _ = create_server(
        Settings(sqlite_database_path=str(tmp_path / "omni.db"), enable_tracing=False),
        instances=InstanceService(
            instances, InstanceBroadcaster(queue_size=10), GrpcAccountChecker(channels_stub), purger=RecordingPurger()
        ),
        router=router,
        api_sender=ApiSender(instances=instances, channels=sender, tracer=tracer),
        api_keys=ApiKeyService(ApiKeyRepository(db), instances),
        port=0,
        tracing=False,
    )
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("ingress"))
    stub = router_service_pb2_grpc.RouterServiceStub(channel)
    await stub.CreateInstance(router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(agent.url)))
    try:
        yield World(stub, agent, channels, ingress, whisper, exporter)
    finally:
        await channel.close(None)
        await server.stop(None)
        await router.aclose()
        await session.close()
        await whisper.stop()
        await agent.stop()
        for closing in (channels_channel, ingress_channel):
            await closing.close(None)
        for stopping in (channels_server, ingress_server):
            await stopping.stop(None)
        await db.close()
        provider.shutdown()


def media_message(
    message_id: str,
    *,
    kind: channel_pb2.MessageType.ValueType = channel_pb2.MESSAGE_TYPE_IMAGE,
    text: str = "",
    instance: str = "acme",
    channel: channel_pb2.Channel.ValueType = channel_pb2.CHANNEL_WHATSAPP,
    **media: Any,
) -> message_pb2.InboundMessage:
    return message_pb2.InboundMessage(
        id=message_id,
        instance_name=instance,
        channel=channel,
        channel_message_id=f"WA-{message_id}",
        chat_id="5511999990001@s.whatsapp.net",
        sender=message_pb2.Sender(id="5511999990001@s.whatsapp.net", display_name="Maria"),
        message_type=kind,
        text=text,
        media=[message_pb2.Media(type=kind, **media)],
    )


async def route(world: World, message: message_pb2.InboundMessage) -> router_service_pb2.RouteMessageResponse:
    return await world.stub.RouteMessage(router_service_pb2.RouteMessageRequest(message=message), timeout=30)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------- files


async def test_stored_file_reaches_the_agent_as_base64(world: World) -> None:
    picture = b"\xff\xd8\xff\xe0 a jpeg" * 100
    world.ingress.blobs[("acme", "blob-1")] = (picture, "image/jpeg")

    response = await route(world, media_message("img-1", mime_type="image/jpeg", blob_id="blob-1", caption="oi"))

    assert response.outcome == SENT
    [media] = world.call_for("img-1")["media"]
    assert base64.b64decode(media["base64"]) == picture
    assert (media["type"], media["mime_type"], media["caption"], media["size_bytes"]) == (
        "image",
        "image/jpeg",
        "oi",
        len(picture),
    )
    assert [(r.instance_name, r.blob_id) for r in world.ingress.requests] == [("acme", "blob-1")]
    assert world.channels.fetches == []
    [span] = world.spans("media.fetch")
    assert span.attributes is not None
    assert span.attributes[attrs.MEDIA_RESOLVED_COUNT] == 1
    assert attrs.MEDIA_NOTE not in span.attributes


async def test_file_without_bytes_is_downloaded_from_the_channel(world: World) -> None:
    pdf = b"%PDF-1.7 boleto" * 50
    world.channels.files["WA-doc-1"] = (pdf, "application/pdf", "boleto.pdf")

    await route(world, media_message("doc-1", kind=channel_pb2.MESSAGE_TYPE_DOCUMENT, mime_type="application/pdf"))

    [media] = world.call_for("doc-1")["media"]
    assert base64.b64decode(media["base64"]) == pdf
    assert media["filename"] == "boleto.pdf"
    [fetch] = world.channels.fetches
    assert (fetch.instance_name, fetch.channel_message_id, fetch.chat_id, fetch.max_bytes) == (
        "acme",
        "WA-doc-1",
        "5511999990001@s.whatsapp.net",
        MAX_BYTES,
    )


async def test_expired_stored_file_falls_back_to_the_channel(world: World) -> None:
    world.channels.files["WA-img-2"] = (b"again", "image/png", "")
    await route(world, media_message("img-2", mime_type="image/png", blob_id="expired"))
    [media] = world.call_for("img-2")["media"]
    assert base64.b64decode(media["base64"]) == b"again"


async def test_unavailable_file_still_reaches_the_agent_and_the_trace_says_why(world: World) -> None:
    world.channels.down = True
    response = await route(world, media_message("img-3", mime_type="image/jpeg", size_bytes=1234, caption="look"))

    assert response.outcome == SENT
    [media] = world.call_for("img-3")["media"]
    assert "base64" not in media
    assert (media["type"], media["mime_type"], media["size_bytes"], media["caption"]) == (
        "image",
        "image/jpeg",
        1234,
        "look",
    )
    [span] = world.spans("media.fetch")
    assert span.attributes is not None
    assert "connection refused" in str(span.attributes[attrs.MEDIA_NOTE])
    assert [e.name for e in span.events] == ["media.unavailable"]


async def test_over_the_cap_is_not_downloaded(world: World) -> None:
    world.channels.files["WA-vid-1"] = (b"v" * 10, "video/mp4", "")
    await route(world, media_message("vid-1", kind=channel_pb2.MESSAGE_TYPE_VIDEO, size_bytes=MAX_BYTES + 1))
    [media] = world.call_for("vid-1")["media"]
    assert "base64" not in media
    assert world.channels.fetches == []
    [span] = world.spans("media.fetch")
    assert span.attributes is not None
    assert f"over the {MAX_BYTES}-byte cap" in str(span.attributes[attrs.MEDIA_NOTE])


async def test_inline_bytes_and_text_messages_need_no_fetch(world: World) -> None:
    await route(world, media_message("img-4", mime_type="image/gif", base64=b64(b"GIF89a")))
    assert base64.b64decode(world.call_for("img-4")["media"][0]["base64"]) == b"GIF89a"
    assert world.spans("media.fetch") == []
    assert world.ingress.requests == []
    assert world.channels.fetches == []


async def test_a_retry_after_the_agent_answered_fetches_nothing_again(world: World) -> None:
    world.ingress.blobs[("acme", "blob-r")] = (b"once", "image/jpeg")
    message = media_message("img-5", blob_id="blob-r")
    await route(world, message)
    await route(world, message)
    assert len(world.ingress.requests) == 1
    assert len(world.agent.calls) == 1


# ---------------------------------------------------------------------- voice notes


def voice_note(message_id: str, **media: Any) -> message_pb2.InboundMessage:
    values: dict[str, Any] = {"mime_type": "audio/ogg; codecs=opus", "voice_note": True, "duration_seconds": 9}
    values.update(media)
    return media_message(message_id, kind=channel_pb2.MESSAGE_TYPE_AUDIO, **values)


async def test_voice_note_is_transcribed_before_the_agent_turn(world: World) -> None:
    world.ingress.blobs[("acme", "voice-1")] = (VOICE, "audio/ogg; codecs=opus")

    assert (await route(world, voice_note("ptt-1", blob_id="voice-1"))).outcome == SENT

    call = world.call_for("ptt-1")
    assert call["message"] == "quero marcar uma consulta"
    assert call["message_type"] == "audio"
    [media] = call["media"]
    assert base64.b64decode(media["base64"]) == VOICE
    assert media["voice_note"] is True
    [request] = world.whisper.requests
    assert (request.authorization, request.model, request.response_format) == (
        f"Bearer {GLOBAL_KEY}",
        "whisper-1",
        "json",
    )
    assert (request.filename, request.content_type, request.audio) == ("voice.ogg", "audio/ogg; codecs=opus", VOICE)
    [span] = world.spans("transcription")
    assert span.attributes is not None
    assert span.attributes[attrs.TRANSCRIPTION_OUTCOME] == "ok"
    assert span.end_time is not None
    assert span.start_time is not None
    assert span.end_time > span.start_time
    assert float(str(span.attributes[attrs.TRANSCRIPTION_DURATION_MS])) > 0
    # the media fetch and the transcription both happen before the agent call
    [agent_span] = world.spans("agent.call")
    assert agent_span.start_time is not None
    assert span.end_time <= agent_span.start_time


async def test_instance_endpoint_wins_and_never_gets_the_deployment_key(world: World) -> None:
    other = FakeTranscriptionServer(text="do próprio tenant", api_key=INSTANCE_KEY)
    await other.start()
    try:
        await world.stub.CreateInstance(
            router_service_pb2.CreateInstanceRequest(
                instance=whatsapp_instance(
                    world.agent.url,
                    name="tenant",
                    transcription_url=other.url + "/",
                    transcription_api_key=instance_pb2.SecretValue(value=INSTANCE_KEY),
                    transcription_model="large-v3",
                )
            )
        )
        await route(world, voice_note("ptt-2", instance="tenant", base64=b64(VOICE)))
        assert world.call_for("ptt-2")["message"] == "do próprio tenant"
        [request] = other.requests
        assert (request.authorization, request.model) == (f"Bearer {INSTANCE_KEY}", "large-v3")
        assert world.whisper.requests == []
    finally:
        await other.stop()


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"delay": 1.5}, "no answer within 1s"),
        ({"fail_status": 500}, "HTTP 500"),
        ({"raw_body": "<html>oops</html>"}, "not JSON"),
        ({"raw_body": '{"transcript": "x"}'}, 'no "text"'),
    ],
)
async def test_failed_transcription_still_reaches_the_agent_with_a_note(
    world: World, fault: dict[str, Any], reason: str
) -> None:
    for name, value in fault.items():
        setattr(world.whisper, name, value)

    assert (await route(world, voice_note("ptt-3", base64=b64(VOICE)))).outcome == SENT

    call = world.call_for("ptt-3")
    assert call["message"] == TRANSCRIPTION_FAILED_TEXT
    assert base64.b64decode(call["media"][0]["base64"]) == VOICE
    [span] = world.spans("transcription")
    assert span.attributes is not None
    assert span.attributes[attrs.TRANSCRIPTION_OUTCOME] == "failed"
    assert reason in str(span.attributes[attrs.TRANSCRIPTION_ERROR])


async def test_audio_whose_bytes_are_gone_gets_the_note_without_a_call(world: World) -> None:
    await route(world, voice_note("ptt-4", blob_id="gone"))
    assert world.call_for("ptt-4")["message"] == TRANSCRIPTION_FAILED_TEXT
    assert world.whisper.requests == []
    [span] = world.spans("transcription")
    assert span.attributes is not None
    assert "not available" in str(span.attributes[attrs.TRANSCRIPTION_ERROR])


async def test_audio_file_is_named_after_its_type_and_text_is_never_retranscribed(world: World) -> None:
    await route(world, voice_note("mp3-1", voice_note=False, mime_type="audio/mpeg", base64=b64(b"ID3 mp3")))
    assert world.whisper.requests[-1].filename == "audio.mp3"
    # Evolution's own speechToText already gave a text: no second transcription
    await route(world, voice_note("ptt-5", base64=b64(VOICE), text="já transcrito"))
    assert world.call_for("ptt-5")["message"] == "já transcrito"
    assert len(world.whisper.requests) == 1
