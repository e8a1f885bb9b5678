"""`POST /chat/getBase64FromMediaMessage/{instance}`: the plaintext of a received file (Evolution contract §2.4).

The real server finds the message in its database by `message.key.id` and answers 201
`{mediaType, fileName, caption, size: {fileLength, height, width}, mimetype, base64, buffer: null}`; a message it
does not have fails with 400 `["Message not found"]` (its BadRequestException around the lookup). The simulator
"received" the files a test registered with `EvolutionSimulator.store_media`, before it posts the media upsert.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from simulators.evolution.rest import EvolutionError, authorize, json_response, read_body, required
from simulators.evolution.state import EvolutionState
from simulators.evolution.wire import long_value

_MEDIA_TYPES = {"image": "imageMessage", "video": "videoMessage", "audio": "audioMessage"}
_EXTENSIONS = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp", "video/mp4": "mp4", "audio/ogg": "ogg"}


@dataclass(frozen=True)
class StoredMedia:
    """A file the simulated WhatsApp account received."""

    data: bytes
    mimetype: str
    instance: str | None = None
    """The instance that received it; None: any instance may fetch it."""
    file_name: str = ""
    caption: str = ""


class MediaEndpoints:
    """The received files, and the endpoint that hands them out."""

    def __init__(self, state: EvolutionState) -> None:
        self._state = state
        self.files: dict[str, StoredMedia] = {}
        """Received files by WhatsApp key.id."""
        self.fetches: list[dict[str, Any]] = []
        """Every getBase64FromMediaMessage body (+ `instance`), in order."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/chat/getBase64FromMediaMessage/{instance}", self._get_base64)]

    def store(self, key_id: str, media: StoredMedia) -> None:
        """Remember the file of message `key_id`."""
        self.files[key_id] = media

    async def _get_base64(self, request: web.Request) -> web.StreamResponse:
        instance = authorize(self._state, request)
        body = await read_body(request)
        required(body, "message")
        message = body["message"]
        key = message.get("key") if isinstance(message, dict) else None
        key_id = key.get("id") if isinstance(key, dict) else None
        self.fetches.append({**body, "instance": instance.name})
        stored = self.files.get(key_id) if isinstance(key_id, str) else None
        if stored is None or (stored.instance is not None and stored.instance != instance.name):
            raise EvolutionError(400, ["Message not found"])
        major = stored.mimetype.split("/", 1)[0]
        media_type = _MEDIA_TYPES.get(major, "documentMessage")
        base_mime = stored.mimetype.split(";", 1)[0].strip()
        file_name = stored.file_name or f"{key_id}.{_EXTENSIONS.get(base_mime, 'bin')}"
        size: dict[str, Any] = {"fileLength": long_value(len(stored.data), unsigned=True)}
        if media_type in ("imageMessage", "videoMessage"):
            size.update({"height": 1350, "width": 1080})
        return json_response(
            {
                "mediaType": media_type,
                "fileName": file_name,
                "caption": stored.caption or None,
                "size": size,
                "mimetype": stored.mimetype,
                "base64": base64.b64encode(stored.data).decode(),
                "buffer": None,
            },
            status=201,
        )
