"""A fake OpenAI-compatible transcription server (`POST /v1/audio/transcriptions`) for tests and demos.

It parses the multipart form as OpenAI's server does (`file` with its name and type, `model`, `response_format`),
records every request so tests can assert what the hub sent (model, file bytes, name, type, the bearer key), and
answers `{"text": ...}`; it can be slowed down (to provoke the hub's timeout), made to fail with a status, or to
answer a body that is not the expected JSON.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson
from aiohttp import BodyPartReader, web

PATH = "/v1/audio/transcriptions"


@dataclass(frozen=True)
class TranscriptionRequest:
    """One request as the server understood it."""

    authorization: str
    model: str
    response_format: str
    filename: str
    content_type: str
    audio: bytes
    fields: dict[str, str] = field(default_factory=dict)


class FakeTranscriptionServer:
    """An aiohttp server speaking the OpenAI audio transcription API, with recording and fault injection."""

    def __init__(self, *, text: str = "hello from the voice note", api_key: str = "") -> None:
        """Args:
        text: The transcript answered.
        api_key: When set, requests must carry `Authorization: Bearer <api_key>` (401 otherwise, as OpenAI).
        """
        self.text = text
        self.api_key = api_key
        self.delay = 0.0
        """Seconds slept before answering."""
        self.fail_status = 0
        """When non-zero, every request is answered with this status and an OpenAI error body."""
        self.raw_body: str | None = None
        """When set, sent as is (with a JSON content type) instead of the transcript."""
        self.requests: list[TranscriptionRequest] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on `host:port` (0 picks a free port); `url` (the base URL, without /v1) is set when this returns."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(PATH, self._transcribe)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def reset(self) -> None:
        """Back to answering the transcript at once; recorded requests are kept."""
        self.delay = 0.0
        self.fail_status = 0
        self.raw_body = None

    async def _transcribe(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        fields: dict[str, str] = {}
        filename = content_type = ""
        audio = b""
        if not request.content_type.startswith("multipart/form-data"):
            return _error(400, "Expected multipart/form-data")
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                filename = part.filename or ""
                content_type = part.headers.get("Content-Type", "")
                audio = bytes(await part.read(decode=False))
            elif part.name:
                fields[part.name] = await part.text()
        self.requests.append(
            TranscriptionRequest(
                authorization=authorization,
                model=fields.get("model", ""),
                response_format=fields.get("response_format", ""),
                filename=filename,
                content_type=content_type,
                audio=audio,
                fields=fields,
            )
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.api_key and authorization != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided")
        if not audio:
            return _error(400, "Missing file")
        if not fields.get("model"):
            return _error(400, "you must provide a model parameter")
        if self.fail_status:
            return _error(self.fail_status, "The server had an error while processing your request")
        if self.raw_body is not None:
            return web.Response(text=self.raw_body, content_type="application/json")
        return web.Response(body=orjson.dumps({"text": self.text}), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
