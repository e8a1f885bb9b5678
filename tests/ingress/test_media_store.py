"""The media store on SQLite and PostgreSQL: inline files leave the inbox row at accept time, in the same transaction,
and come back through GetMedia over gRPC; the size cap, the purge with the instance and the retention sweep."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from omni.ingress.v1 import ingress_service_pb2, ingress_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servicekit import trace_attributes as attrs
from servicekit.channels import Channel
from servicekit.database import Database
from servicekit.grpc_clients import open_channel
from servicekit.instances import Instance
from servicekit.messages import InboundMessage, Media, Sender, message_from_json
from services.ingress.config import Settings
from services.ingress.core.accept import ACCEPTED, DUPLICATE, IGNORED_DISPOSITION, IngressCore
from services.ingress.core.bots.status import BotStatus
from services.ingress.core.media_store import MediaLibrary, separate_media
from services.ingress.server import create_server
from services.ingress.storage import InboxStore, MediaBlobStore
from tests.helpers.instances import DictDirectory
from tests.helpers.mesh_auth import mesh_as
from tests.ingress.support import body

ACME = Instance(name="acme", webhook_auth="none")
OTHER = Instance(name="other", webhook_auth="none")


def image_upsert(fixtures: Path, key_id: str, data: bytes, *, from_me: bool = False) -> dict[str, Any]:
    """The base64 image fixture with another key id and file."""
    envelope: dict[str, Any] = json.loads((fixtures / "messages-upsert-image-base64.json").read_text())
    envelope = copy.deepcopy(envelope)
    envelope["data"]["key"]["id"] = key_id
    envelope["data"]["key"]["fromMe"] = from_me
    envelope["data"]["message"]["base64"] = base64.b64encode(data).decode()
    return envelope


def make_core(store: InboxStore, blobs: MediaBlobStore, **kwargs: Any) -> IngressCore:
    return IngressCore(store, DictDirectory(ACME, OTHER), also_purged=(blobs,), media=MediaLibrary(blobs), **kwargs)


async def test_fixture_file_moves_to_the_blob_table(store: InboxStore, db: Database, evolution_fixtures: Path) -> None:
    blobs = MediaBlobStore(db)
    envelope = json.loads((evolution_fixtures / "messages-upsert-image-base64.json").read_text())
    original = base64.b64decode(envelope["data"]["message"]["base64"])
    core = make_core(store, blobs)

    result = await core.receive_webhook("acme", Channel.WHATSAPP, body(envelope), {})

    assert result.disposition == ACCEPTED
    row = await store.get(result.message_id)
    assert row is not None
    assert envelope["data"]["message"]["base64"] not in row.message
    assert '"base64":""' in row.message.replace(" ", "")
    [media] = message_from_json(row.message).media
    assert (media.type, media.mime_type, media.base64) == ("image", "image/jpeg", "")
    assert media.blob_id
    blob = await core.get_media("acme", media.blob_id)
    assert blob.data == original
    assert (blob.message_id, blob.channel_message_id, blob.mime_type) == (
        result.message_id,
        envelope["data"]["key"]["id"],
        "image/jpeg",
    )
    assert blob.size == len(original)


async def test_duplicate_webhook_stores_the_file_once(
    store: InboxStore, db: Database, evolution_fixtures: Path
) -> None:
    blobs = MediaBlobStore(db)
    core = make_core(store, blobs)
    payload = body(image_upsert(evolution_fixtures, "DUPIMG", b"\xff\xd8 same picture"))
    first = await core.receive_webhook("acme", Channel.WHATSAPP, payload, {})
    second = await core.receive_webhook("acme", Channel.WHATSAPP, payload, {})
    assert (first.disposition, second.disposition) == (ACCEPTED, DUPLICATE)
    assert await blobs.count("acme") == 1


async def test_own_send_keeps_no_bytes_at_all(store: InboxStore, db: Database, evolution_fixtures: Path) -> None:
    blobs = MediaBlobStore(db)
    core = make_core(store, blobs)
    result = await core.receive_webhook(
        "acme", Channel.WHATSAPP, body(image_upsert(evolution_fixtures, "MINE", b"abc", from_me=True)), {}
    )
    assert result.disposition == IGNORED_DISPOSITION
    row = await store.get(result.message_id)
    assert row is not None
    assert message_from_json(row.message).media[0].base64 == ""
    assert await blobs.count() == 0


async def test_over_cap_file_is_not_stored_and_the_span_says_why(
    store: InboxStore,
    db: Database,
    evolution_fixtures: Path,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    blobs = MediaBlobStore(db)
    core = make_core(store, blobs, max_media_bytes=1000, tracer=provider.get_tracer("t"))
    result = await core.receive_webhook(
        "acme", Channel.WHATSAPP, body(image_upsert(evolution_fixtures, "BIG", b"x" * 1001)), {}
    )
    assert result.disposition == ACCEPTED
    row = await store.get(result.message_id)
    assert row is not None
    [media] = message_from_json(row.message).media
    assert (media.type, media.mime_type, media.base64, media.blob_id) == ("image", "image/jpeg", "", "")
    assert media.size_bytes == 134  # the size WhatsApp declared (fileLength) stays for the agent
    assert await blobs.count() == 0
    [span] = [s for s in exporter.get_finished_spans() if s.name == "ingress.accept"]
    assert span.attributes is not None
    assert "over the 1000-byte cap" in str(span.attributes[attrs.MEDIA_NOTE])
    assert [e.name for e in span.events] == ["media.not_stored"]


async def test_undecodable_base64_is_dropped_with_a_note() -> None:
    message = InboundMessage(
        channel_message_id="K",
        chat_id="c",
        sender=Sender(id="s"),
        id="m1",
        instance_name="acme",
        media=(
            Media(type="image", base64="***not base64***"),
            Media(type="audio", base64="data:audio/ogg;base64,AAEC"),
        ),
    )
    separated = separate_media(message, max_bytes=100, now=1.0, new_id=lambda: "b1")
    assert separated.message.media[0].base64 == ""
    assert not separated.message.media[0].blob_id
    assert separated.message.media[1].blob_id == "b1"
    assert [b.data for b in separated.blobs] == [b"\x00\x01\x02"]
    [note] = separated.notes
    assert "media[0]" in note


async def test_purge_deletes_the_instance_files_only(store: InboxStore, db: Database, evolution_fixtures: Path) -> None:
    blobs = MediaBlobStore(db)
    core = make_core(store, blobs)
    for instance in ("acme", "other"):
        await core.receive_webhook(instance, Channel.WHATSAPP, body(image_upsert(evolution_fixtures, "P1", b"one")), {})
    assert (await blobs.count("acme"), await blobs.count("other")) == (1, 1)

    assert await core.purge_instance("acme") == 2  # the inbox row and its file
    assert (await blobs.count("acme"), await blobs.count("other")) == (0, 1)


async def test_retention_sweep_deletes_old_files(store: InboxStore, db: Database, evolution_fixtures: Path) -> None:
    blobs = MediaBlobStore(db)
    now = [1_000_000.0]
    core = IngressCore(store, DictDirectory(ACME), clock=lambda: now[0])
    await core.receive_webhook("acme", Channel.WHATSAPP, body(image_upsert(evolution_fixtures, "OLD", b"old")), {})
    now[0] += 20 * 3600
    await core.receive_webhook("acme", Channel.WHATSAPP, body(image_upsert(evolution_fixtures, "NEW", b"new")), {})
    library = MediaLibrary(blobs, retention_hours=24, clock=lambda: now[0] + 5 * 3600)

    assert await library.sweep() == 1
    assert await blobs.count() == 1
    assert await MediaLibrary(blobs, retention_hours=0).sweep() == 0  # 0: kept until the instance goes


# ---------------------------------------------------------------------- GetMedia over gRPC


@pytest.fixture
async def ingress(
    store: InboxStore, db: Database
) -> AsyncIterator[tuple[IngressCore, ingress_service_pb2_grpc.IngressServiceAsyncStub]]:
    blobs = MediaBlobStore(db)
    core = make_core(store, blobs)

    async def statuses(instance_name: str) -> list[BotStatus]:
        return []

    server, port, _ = create_server(Settings(enable_tracing=False, grpc_host="127.0.0.1"), core, statuses, port=0)
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("router"))
    try:
        yield core, ingress_service_pb2_grpc.IngressServiceStub(channel)
    finally:
        await channel.close(None)
        await server.stop(None)


async def test_get_media_over_grpc(
    ingress: tuple[IngressCore, ingress_service_pb2_grpc.IngressServiceAsyncStub],
    store: InboxStore,
    evolution_fixtures: Path,
) -> None:
    core, stub = ingress
    data = bytes(range(256)) * 40
    result = await core.receive_webhook(
        "acme", Channel.WHATSAPP, body(image_upsert(evolution_fixtures, "G1", data)), {}
    )
    row = await store.get(result.message_id)
    assert row is not None
    blob_id = message_from_json(row.message).media[0].blob_id

    answer = await stub.GetMedia(ingress_service_pb2.GetMediaRequest(instance_name="acme", blob_id=blob_id), timeout=5)
    assert (answer.data, answer.mime_type) == (data, "image/jpeg")

    # Another instance's name, or an unknown id, is NOT_FOUND; missing names are INVALID_ARGUMENT.
    for request, code in (
        (ingress_service_pb2.GetMediaRequest(instance_name="other", blob_id=blob_id), grpc.StatusCode.NOT_FOUND),
        (ingress_service_pb2.GetMediaRequest(instance_name="acme", blob_id="nope"), grpc.StatusCode.NOT_FOUND),
        (ingress_service_pb2.GetMediaRequest(instance_name="acme"), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.GetMedia(request, timeout=5)
        assert failure.value.code() is code


async def test_several_megabytes_are_accepted_and_kept_whole(
    store: InboxStore, db: Database, evolution_fixtures: Path
) -> None:
    blobs = MediaBlobStore(db)
    core = make_core(store, blobs)
    data = bytes(range(256)) * (5 * 4096)  # 5 MiB
    result = await core.receive_webhook(
        "acme", Channel.WHATSAPP, body(image_upsert(evolution_fixtures, "HUGE", data)), {}
    )
    row = await store.get(result.message_id)
    assert row is not None
    assert len(row.message) < 10_000
    blob = await core.get_media("acme", message_from_json(row.message).media[0].blob_id)
    assert blob.data == data
