"""Voice notes (and audio files) turned into text before the agent turn, by an OpenAI-compatible endpoint.

The endpoint is the instance's own (`transcription_url`, `transcription_api_key`, `transcription_model`) or, when
the instance names none, the deployment's (AUTOMAGIK_OMNI_TRANSCRIPTION_URL, _API_KEY, _MODEL, _TIMEOUT). The
deployment's key is never sent to an instance's URL: an instance URL goes with the instance key only.

The call is `POST {url}/v1/audio/transcriptions`, multipart/form-data with `file` (the audio, named voice.ogg or
after its type), `model` (default whisper-1) and `response_format=json`, `Authorization: Bearer <key>`; the answer
`{"text": "..."}` becomes the agent request's `message` and the audio stays in `media`.

A failed transcription (timeout, a non-2xx answer, a body that is not `{"text": str}`, an unreachable or refused
address, or audio whose bytes could not be had) never fails the turn: the agent gets the audio with
`message` = TRANSCRIPTION_FAILED_TEXT, and the `transcription` span carries the outcome and the reason. A message
that already has text (Evolution's own speechToText) is not transcribed again.

Hygiene as for agent calls: the shared guarded session, no redirects (a 3xx would carry the key to a host nobody
checked), the answer read at most `max_response_bytes` deep.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import time
from dataclasses import dataclass

import aiohttp
import orjson
from opentelemetry import propagate, trace

from servicekit import trace_attributes as attrs
from servicekit.address_guard import AddressRefusedError
from servicekit.instances import Instance
from servicekit.messages import InboundMessage, Media
from servicekit.outbound_http import ResponseTooLargeError, is_redirect, read_capped, redirect_message

TRANSCRIPTION_PATH = "/v1/audio/transcriptions"
DEFAULT_MODEL = "whisper-1"
DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_RESPONSE_BYTES = 1024 * 1024
ERROR_SNIPPET_BYTES = 200
SPAN_NAME = "transcription"
TRANSCRIPTION_FAILED_TEXT = "[voice note: transcription failed]"
"""The agent request's `message` when an audio message could not be transcribed (the audio is still in `media`)."""

OUTCOME_OK = "ok"
OUTCOME_FAILED = "failed"

_EXTENSIONS = {
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "aac",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/webm": "webm",
    "audio/amr": "amr",
    "audio/flac": "flac",
}
"""OpenAI-compatible servers tell the format by the file name's extension."""


@dataclass(frozen=True)
class TranscriptionSettings:
    """The deployment's transcription endpoint, used by instances that name none (empty url: none)."""

    url: str = ""
    api_key: str = ""
    model: str = DEFAULT_MODEL
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Endpoint:
    """Where one transcription goes."""

    url: str
    api_key: str
    model: str
    timeout_seconds: float


@dataclass(frozen=True)
class Transcript:
    """A transcription's result: the text, or why there is none."""

    text: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def audio_filename(media: Media) -> str:
    """The multipart file name: voice.<ext> for a voice note; an audio file's own name when it has an extension,
    else audio.<ext> (the extension after the MIME type)."""
    if not media.voice_note and "." in media.filename:
        return media.filename
    base = media.mime_type.split(";", 1)[0].strip().lower()
    extension = _EXTENSIONS.get(base, "ogg")
    return f"{'voice' if media.voice_note else media.filename or 'audio'}.{extension}"


class Transcriber:
    """Transcribes the audio of messages over a shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        defaults: TranscriptionSettings | None = None,
        tracer: trace.Tracer | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._session = session
        self._defaults = defaults or TranscriptionSettings()
        self._tracer = tracer or trace.get_tracer("omni.router")
        self._max_response_bytes = max_response_bytes

    def endpoint_for(self, instance: Instance) -> Endpoint | None:
        """The instance's endpoint, else the deployment's, else None (no transcription)."""
        timeout = self._defaults.timeout_seconds
        if instance.transcription_url:
            model = instance.transcription_model or self._defaults.model or DEFAULT_MODEL
            return Endpoint(instance.transcription_url, instance.transcription_api_key, model, timeout)
        if self._defaults.url:
            return Endpoint(self._defaults.url, self._defaults.api_key, self._defaults.model or DEFAULT_MODEL, timeout)
        return None

    async def transcribe_message(self, instance: Instance, message: InboundMessage) -> InboundMessage:
        """The message with its audio's transcript as text (or the failure note), when it is an audio message
        without text and a transcription endpoint is configured; else the message unchanged. Never raises for a
        failed transcription."""
        if message.message_type != "audio" or message.text.strip():
            return message
        endpoint = self.endpoint_for(instance)
        if endpoint is None:
            return message
        audio = next((m for m in message.media if m.type == "audio"), None)
        data = _bytes_of(audio) if audio is not None else None
        if audio is None or data is None:
            with self._tracer.start_as_current_span(SPAN_NAME) as span:
                _describe(span, endpoint, message)
                _outcome(span, Transcript(error="the audio's bytes are not available"), 0.0)
            return dataclasses.replace(message, text=TRANSCRIPTION_FAILED_TEXT)
        transcript = await self.transcribe(
            endpoint, data, audio.mime_type or "audio/ogg", audio_filename(audio), message=message
        )
        return dataclasses.replace(message, text=transcript.text if transcript.ok else TRANSCRIPTION_FAILED_TEXT)

    async def transcribe(
        self,
        endpoint: Endpoint,
        audio: bytes,
        mime_type: str,
        filename: str,
        *,
        message: InboundMessage | None = None,
    ) -> Transcript:
        """POST the audio to the endpoint under a `transcription` span; the transcript, or why there is none."""
        url = endpoint.url.rstrip("/") + TRANSCRIPTION_PATH
        with self._tracer.start_as_current_span(SPAN_NAME, kind=trace.SpanKind.CLIENT) as span:
            _describe(span, endpoint, message)
            span.set_attribute("url.full", url)
            span.set_attribute("omni.transcription.audio_bytes", len(audio))
            started = time.monotonic()
            try:
                async with asyncio.timeout(endpoint.timeout_seconds):
                    transcript = await self._post(url, endpoint, audio, mime_type, filename, span)
            except TimeoutError:
                transcript = Transcript(error=f"no answer within {endpoint.timeout_seconds:g}s")
            _outcome(span, transcript, (time.monotonic() - started) * 1000)
            return transcript

    async def _post(
        self, url: str, endpoint: Endpoint, audio: bytes, mime_type: str, filename: str, span: trace.Span
    ) -> Transcript:
        form = aiohttp.FormData()
        form.add_field("file", audio, filename=filename, content_type=mime_type)
        form.add_field("model", endpoint.model)
        form.add_field("response_format", "json")
        headers: dict[str, str] = {}
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"
        propagate.inject(headers)
        try:
            async with self._session.post(url, data=form, headers=headers, allow_redirects=False) as response:
                span.set_attribute("http.response.status_code", response.status)
                if is_redirect(response.status):
                    return Transcript(error=redirect_message(response, "the transcription endpoint"))
                if not 200 <= response.status < 300:
                    snippet = (await response.content.read(ERROR_SNIPPET_BYTES)).decode(errors="replace")
                    return Transcript(error=f"HTTP {response.status}: {snippet}".strip())
                body = await read_capped(response, self._max_response_bytes)
        except AddressRefusedError as exc:
            return Transcript(error=f"address refused: {exc}")
        except ResponseTooLargeError as exc:
            return Transcript(error=f"answer refused: {exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return Transcript(error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return _parse(body)


def _parse(body: bytes) -> Transcript:
    """`{"text": str}` from the body, or why it is not that."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Transcript(error="the answer is not JSON")
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        return Transcript(error='the answer has no "text" string')
    return Transcript(text=data["text"].strip())


def _bytes_of(media: Media) -> bytes | None:
    if not media.base64:
        return None
    try:
        return base64.b64decode(media.base64, validate=True)
    except (binascii.Error, ValueError):
        return None


def _describe(span: trace.Span, endpoint: Endpoint, message: InboundMessage | None) -> None:
    span.set_attribute(attrs.STEP, attrs.STEP_TRANSCRIPTION)
    span.set_attribute(attrs.TRANSCRIPTION_MODEL, endpoint.model)
    if message is not None:
        span.set_attribute(attrs.INSTANCE_NAME, message.instance_name)
        span.set_attribute(attrs.MESSAGE_ID, message.id)


def _outcome(span: trace.Span, transcript: Transcript, elapsed_ms: float) -> None:
    span.set_attribute(attrs.TRANSCRIPTION_OUTCOME, OUTCOME_OK if transcript.ok else OUTCOME_FAILED)
    span.set_attribute(attrs.TRANSCRIPTION_DURATION_MS, round(elapsed_ms, 3))
    if transcript.ok:
        span.set_attribute("omni.transcription.chars", len(transcript.text))
    else:
        span.set_attribute(attrs.TRANSCRIPTION_ERROR, transcript.error)
        span.add_event("transcription.failed", {attrs.TRANSCRIPTION_ERROR: transcript.error})
