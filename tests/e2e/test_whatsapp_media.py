"""WhatsApp files and voice notes through the real mesh, on SQLite and PostgreSQL: an inline (webhook base64) image
and a downloaded one (getBase64FromMediaMessage on the Evolution simulator) reach the agent as base64, a voice note
is transcribed by the fake OpenAI-compatible server before the agent turn (and a slow or failing one still lets the
audio through with a note), and a several-MB webhook is accepted and delivered whole."""

from __future__ import annotations

import base64
import copy
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from examples.agent_echo import EchoAgent
from launcher.local_mesh import LocalMesh
from services.router.core.transcription import TRANSCRIPTION_FAILED_TEXT
from simulators.evolution import EvolutionSimulator
from tests.conftest import FIXTURES
from tests.e2e.conftest import AGENT_KEY, running_mesh
from tests.helpers.mesh import eventually
from tests.helpers.transcription_server import FakeTranscriptionServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

TRANSCRIPTION_KEY = "sk-test-transcription"
TRANSCRIPTION_TIMEOUT = 2
"""The mesh's AUTOMAGIK_OMNI_TRANSCRIPTION_TIMEOUT (seconds)."""


@dataclass
class MediaWorld:
    mesh: LocalMesh
    evolution: EvolutionSimulator
    agent: EchoAgent
    whisper: FakeTranscriptionServer

    async def new_instance(self, **overrides: object) -> str:
        name = f"media-{uuid.uuid4().hex[:8]}"
        token = self.evolution.add_instance(name)
        fields: dict[str, object] = {
            "name": name,
            "channel_type": "whatsapp",
            "evolution_url": self.evolution.url,
            "evolution_key": token,
            "whatsapp_instance": name,
            "agent_api_url": self.agent.url,
            "agent_api_key": AGENT_KEY,
            "default_agent": "echo",
            "agent_timeout": 20,
            **overrides,
        }
        await self.mesh.create_instance(**fields)
        return name

    async def post(self, instance: str, envelope: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.mesh.webhook_url(instance), json=envelope) as response,
        ):
            return response.status, await response.json()

    async def agent_call(self, key_id: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            return next((c for c in self.agent.calls if c["context"]["message_id"] == key_id), None)

        return await eventually(probe, timeout=30)

    async def trace_with(self, trace_id: str, *span_words: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            code, body = await self.mesh.get_json(f"/api/v1/traces/{trace_id}")
            if code != 200 or body["status"] != "sent":
                return None
            names = [span["name"] for span in body["spans"]]
            return body if all(any(word in name for name in names) for word in span_words) else None

        return await eventually(probe, timeout=20)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MediaWorld]:
    evolution = EvolutionSimulator()
    agent = EchoAgent(api_key=AGENT_KEY)
    whisper = FakeTranscriptionServer(text="quero remarcar para sexta", api_key=TRANSCRIPTION_KEY)
    for server in (evolution, agent, whisper):
        await server.start()
    data_dir: Path = tmp_path_factory.mktemp(f"media-mesh-{request.param}")
    env = {"AUTOMAGIK_OMNI_TRANSCRIPTION_TIMEOUT": str(TRANSCRIPTION_TIMEOUT)}
    try:
        async with running_mesh(data_dir, request.param, extra_env=env) as mesh:
            yield MediaWorld(mesh, evolution, agent, whisper)
    finally:
        for server in (whisper, agent, evolution):
            await server.stop()


def upsert_of(fixture: str, instance: str, *, base64_data: bytes | None = None) -> tuple[dict[str, Any], str]:
    """A fixture envelope for `instance` with a fresh key id (and the file inline when `base64_data` is given)."""
    envelope: dict[str, Any] = copy.deepcopy(json.loads((FIXTURES / fixture).read_text()))
    key_id = uuid.uuid4().hex.upper()
    envelope["instance"] = instance
    envelope["data"]["key"]["id"] = key_id
    envelope["data"]["message"].pop("base64", None)
    if base64_data is not None:
        envelope["data"]["message"]["base64"] = base64.b64encode(base64_data).decode()
    return envelope, key_id


def picture(size: int) -> bytes:
    return b"\xff\xd8\xff\xe0" + os.urandom(size - 4)


async def test_inline_image_reaches_the_agent_with_its_bytes(world: MediaWorld) -> None:
    instance = await world.new_instance()
    data = picture(40_000)
    envelope, key_id = upsert_of("messages-upsert-image-base64.json", instance, base64_data=data)

    status, body = await world.post(instance, envelope)
    assert status == 200, body
    assert body["status"] == "accepted"

    call = await world.agent_call(key_id)
    [media] = call["media"]
    assert base64.b64decode(media["base64"]) == data
    assert (media["type"], media["mime_type"]) == ("image", "image/jpeg")
    assert world.evolution.media_fetches == [] or all(
        f["message"]["key"]["id"] != key_id for f in world.evolution.media_fetches
    )
    trace = await world.trace_with(body["trace_id"], "accept", "media.fetch", "agent")
    spans = {span["name"]: span for span in trace["spans"]}
    assert spans["ingress.accept"]["attributes"]["omni.media.blob_count"] == 1
    assert spans["media.fetch"]["attributes"]["omni.media.resolved_count"] == 1
    # The trace's agent request shows the start of the base64, never the whole file.
    assert len(json.dumps(trace["agent_request_payload"])) < 20_000


async def test_image_without_bytes_is_downloaded_from_evolution(world: MediaWorld) -> None:
    instance = await world.new_instance()
    data = picture(30_000)
    envelope, key_id = upsert_of("messages-upsert-image.json", instance)
    world.evolution.store_media(key_id, data, "image/jpeg", instance=instance)

    status, body = await world.post(instance, envelope)
    assert status == 200, body

    call = await world.agent_call(key_id)
    assert base64.b64decode(call["media"][0]["base64"]) == data
    assert {"message": {"key": {"id": key_id}}, "convertToMp4": False, "instance": instance} in (
        world.evolution.media_fetches
    )
    await world.trace_with(body["trace_id"], "media.fetch", "fetch_media", "agent")


async def test_voice_note_is_transcribed_before_the_agent_turn(world: MediaWorld) -> None:
    instance = await world.new_instance(
        transcription_url=world.whisper.url, transcription_api_key=TRANSCRIPTION_KEY, transcription_model="whisper-1"
    )
    voice = b"OggS" + os.urandom(14_869)
    envelope, key_id = upsert_of("messages-upsert-audio-ptt.json", instance)
    world.evolution.store_media(key_id, voice, "audio/ogg; codecs=opus", instance=instance)

    status, body = await world.post(instance, envelope)
    assert status == 200, body

    call = await world.agent_call(key_id)
    assert call["message"] == "quero remarcar para sexta"
    assert call["message_type"] == "audio"
    [media] = call["media"]
    assert base64.b64decode(media["base64"]) == voice
    assert media["voice_note"] is True
    request = next(r for r in world.whisper.requests if r.audio == voice)
    assert (request.model, request.filename, request.authorization) == (
        "whisper-1",
        "voice.ogg",
        f"Bearer {TRANSCRIPTION_KEY}",
    )
    trace = await world.trace_with(body["trace_id"], "transcri", "agent")
    [span] = [s for s in trace["spans"] if "transcri" in s["name"]]
    assert span["duration_ms"] > 0
    assert span["attributes"]["omni.transcription.outcome"] == "ok"
    assert trace["agent_request_payload"]["message"] == "quero remarcar para sexta"


@pytest.mark.parametrize(("fault", "reason"), [("timeout", "no answer within"), ("status", "HTTP 500")])
async def test_failed_transcription_still_delivers_the_audio_with_a_note(
    world: MediaWorld, fault: str, reason: str
) -> None:
    instance = await world.new_instance(transcription_url=world.whisper.url, transcription_api_key=TRANSCRIPTION_KEY)
    voice = b"OggS" + os.urandom(2_000)
    envelope, key_id = upsert_of("messages-upsert-audio-ptt.json", instance, base64_data=voice)
    if fault == "timeout":
        world.whisper.delay = TRANSCRIPTION_TIMEOUT + 1.5
    else:
        world.whisper.fail_status = 500
    try:
        status, body = await world.post(instance, envelope)
        assert status == 200, body
        call = await world.agent_call(key_id)
    finally:
        world.whisper.reset()

    assert call["message"] == TRANSCRIPTION_FAILED_TEXT
    assert base64.b64decode(call["media"][0]["base64"]) == voice
    trace = await world.trace_with(body["trace_id"], "transcri", "agent", "send")
    [span] = [s for s in trace["spans"] if "transcri" in s["name"]]
    assert span["attributes"]["omni.transcription.outcome"] == "failed"
    assert reason in span["attributes"]["omni.transcription.error"]


async def test_several_megabytes_are_accepted_and_delivered_whole(world: MediaWorld) -> None:
    instance = await world.new_instance()
    data = picture(5 * 1024 * 1024)
    envelope, key_id = upsert_of("messages-upsert-image-base64.json", instance, base64_data=data)

    status, body = await world.post(instance, envelope)
    assert status == 200, body
    assert body["status"] == "accepted"

    call = await world.agent_call(key_id)
    assert base64.b64decode(call["media"][0]["base64"]) == data
    await world.trace_with(body["trace_id"], "accept", "agent", "send")
