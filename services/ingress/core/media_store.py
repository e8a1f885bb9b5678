"""The media store: received files kept apart from the messages that carry them.

Evolution can inline a whole file as base64 in the webhook (`data.message.base64`, about 1.33 times the file). Left
in the canonical message, those megabytes would sit in the inbox row, which the dispatcher claims, leases and
rewrites three times per message, and every claim would drag them through the database. So at accept time the
bytes are decoded and stored once in `media_blobs`, in the same transaction as the inbox row (nothing accepted is
lost, and a duplicate webhook stores nothing), and the message keeps only `Media.blob_id`. The router reads the
bytes back with GetMedia just before the agent call.

A file over the size cap is not stored: the message still goes to the agent with the media entry (type, MIME type,
size) and no bytes, and the accept span says why. Blobs go with their instance (PurgeInstance) and after the
retention period; an expired blob is simply missing, which the router treats like any other unavailable file.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from servicekit import errors
from servicekit.messages import InboundMessage, Media, raw_base64
from services.ingress.core.inbox import MediaBlob
from services.ingress.core.ports import MediaBlobs

DEFAULT_MAX_MEDIA_BYTES = 16 * 1024 * 1024
"""Largest file kept (16 MiB: WhatsApp's own limit for images, audio and video)."""
DEFAULT_RETENTION_HOURS = 24.0
"""How long a stored file stays readable; the router reads it within seconds of the accept."""


@dataclass(frozen=True)
class SeparatedMedia:
    """A message with its inline bytes moved out: the message to store, the blobs to store with it, and one note
    per media item whose bytes were dropped instead (over the cap, or not base64)."""

    message: InboundMessage
    blobs: tuple[MediaBlob, ...] = ()
    notes: tuple[str, ...] = ()


def separate_media(
    message: InboundMessage,
    *,
    max_bytes: int,
    now: float,
    keep: bool = True,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> SeparatedMedia:
    """Move every inline file of `message` out of it.

    With `keep` each file within `max_bytes` becomes a blob named by `Media.blob_id`; without it (a message that is
    stored but not delivered, such as an own send) the bytes are just dropped. Either way no base64 stays in the
    message, and `size_bytes` gives the decoded size when the channel did not say."""
    if not any(item.base64 for item in message.media):
        return SeparatedMedia(message)
    media: list[Media] = []
    blobs: list[MediaBlob] = []
    notes: list[str] = []
    for index, item in enumerate(message.media):
        if not item.base64:
            media.append(item)
            continue
        data = _decoded(item.base64)
        if data is None:
            notes.append(f"media[{index}] dropped: its base64 could not be decoded")
            media.append(dataclasses.replace(item, base64=""))
            continue
        size = len(data)
        if not keep:
            media.append(dataclasses.replace(item, base64="", size_bytes=item.size_bytes or size))
            continue
        if size > max_bytes:
            notes.append(f"media[{index}] not stored: {size} bytes is over the {max_bytes}-byte cap")
            media.append(dataclasses.replace(item, base64="", size_bytes=item.size_bytes or size))
            continue
        blob = MediaBlob(
            id=new_id(),
            instance_name=message.instance_name,
            message_id=message.id,
            channel_message_id=message.channel_message_id,
            mime_type=item.mime_type,
            size=size,
            data=data,
            created_at=now,
        )
        blobs.append(blob)
        media.append(dataclasses.replace(item, base64="", blob_id=blob.id, size_bytes=item.size_bytes or size))
    return SeparatedMedia(dataclasses.replace(message, media=tuple(media)), tuple(blobs), tuple(notes))


def _decoded(text: str) -> bytes | None:
    """The bytes of raw or `data:` base64 (standard or URL-safe alphabet, padding optional), None when invalid."""
    raw = raw_base64(text).strip()
    if "-" in raw or "_" in raw:
        raw = raw.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


class MediaLibrary:
    """GetMedia and the blobs' retention, over the `media_blobs` store."""

    def __init__(
        self,
        blobs: MediaBlobs,
        *,
        retention_hours: float = DEFAULT_RETENTION_HOURS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._blobs = blobs
        self._retention_seconds = retention_hours * 3600.0
        self._clock = clock

    async def get(self, instance_name: str, blob_id: str) -> MediaBlob:
        """The stored file; raises NotFound when there is none for that instance (expired, purged, or another
        instance's: a caller cannot tell which), InvalidArgument without the names."""
        violations = [
            errors.FieldViolation(name, "required")
            for name, value in (("instance_name", instance_name), ("blob_id", blob_id))
            if not value
        ]
        if violations:
            raise errors.InvalidArgumentError("instance_name and blob_id are required", violations=violations)
        blob = await self._blobs.get(instance_name, blob_id)
        if blob is None:
            raise errors.NotFoundError(f"no stored media {blob_id!r} for instance {instance_name!r}")
        return blob

    async def sweep(self) -> int:
        """Delete the blobs older than the retention period; returns how many went (none when it is 0)."""
        if self._retention_seconds <= 0:
            return 0
        return await self._blobs.purge_older_than(self._clock() - self._retention_seconds)
