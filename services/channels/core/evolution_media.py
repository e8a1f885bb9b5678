"""Downloading a received WhatsApp file through Evolution (`POST /chat/getBase64FromMediaMessage/{instance}`).

A webhook carries a file's bytes only when Evolution's webhook base64 option is on, and never for wrapped
(view-once, ephemeral) media or when Evolution's own download failed; the WhatsApp URL in the message is encrypted.
So the router asks for the plaintext just before the agent call, by the message's key id (Evolution finds the
message in its database). The answer is `{mediaType, fileName, caption, size: {fileLength, ...}, mimetype, base64}`.

The cap is enforced twice: the answer is read at most as deep as the base64 of `max_bytes` (plus the envelope),
so a huge file is abandoned without buffering it, and the declared and decoded sizes are checked against it.
"Message not found" (the message is not in Evolution's database) is a 400 from Evolution: a rejection, not a
transient failure, because asking again will not bring the message back.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import aiohttp

from servicekit.instances import Instance
from servicekit.messages import raw_base64
from servicekit.outbound_http import ResponseTooLargeError
from services.channels.core.evolution import EvolutionClient
from services.channels.core.senders.base import (
    REASON_MEDIA_UNAVAILABLE,
    ChannelRejectedError,
    ChannelTransientError,
    FetchedMedia,
    MediaTooLargeError,
)

ACTION = "chat/getBase64FromMediaMessage"
ENVELOPE_BYTES = 64 * 1024
"""Room for the answer's other fields (file name, caption, sizes) around the base64."""
DEFAULT_TIMEOUT_SECONDS = 60.0
"""A 16 MiB file is downloaded from WhatsApp, decrypted and base64-encoded by Evolution before it answers."""


def answer_cap(max_bytes: int) -> int:
    """How much of Evolution's JSON answer is read for a file of at most `max_bytes`: its base64 plus the envelope."""
    return (max_bytes + 2) // 3 * 4 + ENVELOPE_BYTES


async def fetch_media(
    client: EvolutionClient,
    instance: Instance,
    channel_message_id: str,
    *,
    max_bytes: int,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> FetchedMedia:
    """The plaintext of the file of message `channel_message_id` (WhatsApp key.id), at most `max_bytes`.

    Raises `MediaTooLargeError` over the cap, `ChannelRejectedError` when Evolution no longer has the message or
    answered without a file, `ChannelTransientError` when it could not be asked."""
    body = {"message": {"key": {"id": channel_message_id}}, "convertToMp4": False}
    try:
        answer = await client.call(
            instance,
            "POST",
            ACTION,
            body,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            max_bytes=answer_cap(max_bytes),
        )
    except ChannelTransientError as exc:
        if isinstance(exc.__cause__, ResponseTooLargeError):
            raise MediaTooLargeError(f"the file is larger than {max_bytes} bytes") from exc
        raise
    if not isinstance(answer, dict):
        raise ChannelRejectedError("Evolution answered without a file", reason=REASON_MEDIA_UNAVAILABLE)
    declared = _file_length(answer.get("size"))
    if declared is not None and declared > max_bytes:
        raise MediaTooLargeError(f"the file is {declared} bytes, over the {max_bytes}-byte cap")
    encoded = answer.get("base64")
    if not isinstance(encoded, str) or not encoded:
        raise ChannelRejectedError("Evolution answered without the file's base64", reason=REASON_MEDIA_UNAVAILABLE)
    try:
        data = base64.b64decode(raw_base64(encoded), validate=True)
    except (binascii.Error, ValueError):
        raise ChannelRejectedError(
            "Evolution answered base64 that does not decode", reason=REASON_MEDIA_UNAVAILABLE
        ) from None
    if len(data) > max_bytes:
        raise MediaTooLargeError(f"the file is {len(data)} bytes, over the {max_bytes}-byte cap")
    return FetchedMedia(
        data=data, mime_type=str(answer.get("mimetype") or ""), filename=str(answer.get("fileName") or "")
    )


def _file_length(size: Any) -> int | None:
    """`size.fileLength` in any of Evolution's int64 spellings (number, decimal string, `{low, high}`)."""
    value = size.get("fileLength") if isinstance(size, dict) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, dict):
        low, high = value.get("low"), value.get("high")
        if isinstance(low, int):
            return ((high if isinstance(high, int) else 0) << 32) + (low & 0xFFFFFFFF)
    return None
