"""The bytes of a message's files, resolved just before the agent call, so the agent gets `media[].base64`.

A file reaches the router in one of three ways:
- inline (`Media.base64`: Discord and Slack attachments never are, a caller of IngestMessage may be): kept as is;
- stored by ingress (`Media.blob_id`: Evolution's webhook base64, moved out of the inbox row): read back with
  ingress's GetMedia;
- not at all (a WhatsApp webhook without base64, or a stored file that expired): downloaded from Evolution through
  channels' FetchMedia (getBase64FromMediaMessage), by the message's key id.
Other channels' files keep their URL (Discord's CDN, Slack's url_private) for the agent to fetch.

Nothing here fails the turn: a file that cannot be had (gone, over the cap, a service down) reaches the agent as
its media entry without base64, and the `media.fetch` span says why (`omni.media.note` plus one event per file).
A retried turn resolves again; every read is side-effect free.
"""

from __future__ import annotations

import base64
import dataclasses
import logging

from opentelemetry import trace

from servicekit import trace_attributes as attrs
from servicekit.channels import Channel
from servicekit.errors import OmniError
from servicekit.messages import MEDIA_TYPES, InboundMessage, Media
from services.router.core.ports import ChannelMedia, MediaFile, StoredMedia

log = logging.getLogger(__name__)

DEFAULT_MAX_MEDIA_BYTES = 16 * 1024 * 1024
"""Largest file handed to an agent (16 MiB, WhatsApp's own limit for images, audio and video)."""
SPAN_NAME = "media.fetch"


class MediaResolver:
    """Fills in the bytes of every file of a message that has none, from ingress or from the channel."""

    def __init__(
        self,
        stored: StoredMedia,
        channel: ChannelMedia,
        *,
        max_bytes: int = DEFAULT_MAX_MEDIA_BYTES,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._stored = stored
        self._channel = channel
        self._max_bytes = max_bytes
        self._tracer = tracer or trace.get_tracer("omni.router")

    def needs_work(self, message: InboundMessage) -> bool:
        """Whether some file of the message has no bytes yet and a place to get them from."""
        return any(self._source(message, item) for item in message.media)

    async def resolve(self, message: InboundMessage) -> InboundMessage:
        """The message with the bytes of each of its files that could be had, inline as base64; never raises for a
        file that cannot be had (only cancellation goes through)."""
        if not self.needs_work(message):
            return message
        with self._tracer.start_as_current_span(SPAN_NAME) as span:
            span.set_attribute(attrs.STEP, attrs.STEP_MEDIA_FETCH)
            span.set_attribute(attrs.INSTANCE_NAME, message.instance_name)
            span.set_attribute(attrs.MESSAGE_ID, message.id)
            media: list[Media] = []
            notes: list[str] = []
            resolved = 0
            for index, item in enumerate(message.media):
                if not self._source(message, item):
                    media.append(item)
                    continue
                file, note = await self._fetch(message, item)
                if file is None:
                    notes.append(f"media[{index}] ({item.type or 'file'}): {note}")
                    span.add_event("media.unavailable", {"index": index, attrs.MEDIA_NOTE: note})
                    media.append(item)
                    continue
                resolved += 1
                media.append(
                    dataclasses.replace(
                        item,
                        base64=base64.b64encode(file.data).decode("ascii"),
                        mime_type=item.mime_type or file.mime_type,
                        filename=item.filename or file.filename,
                        size_bytes=len(file.data),
                    )
                )
            span.set_attribute(attrs.MEDIA_RESOLVED_COUNT, resolved)
            if notes:
                span.set_attribute(attrs.MEDIA_NOTE, "; ".join(notes))
                log.info("message %s reaches the agent without some file bytes: %s", message.id, "; ".join(notes))
            return dataclasses.replace(message, media=tuple(media))

    def _source(self, message: InboundMessage, item: Media) -> str:
        """Where the item's bytes come from: "" (it has them, or nowhere to ask), "store" or "channel"."""
        if item.base64:
            return ""
        if item.blob_id:
            return "store"
        if message.channel == Channel.WHATSAPP and item.type in MEDIA_TYPES and message.channel_message_id:
            return "channel"
        return ""

    async def _fetch(self, message: InboundMessage, item: Media) -> tuple[MediaFile | None, str]:
        """The item's file, or None and why not. A stored file that is gone is asked of the channel (WhatsApp)."""
        store_note = ""
        if item.blob_id:
            try:
                return await self._stored.get(message.instance_name, item.blob_id), ""
            except OmniError as exc:
                store_note = f"the stored copy is unavailable ({exc.message})"
            if message.channel != Channel.WHATSAPP:
                return None, store_note
        if item.size_bytes > self._max_bytes:
            return None, f"{item.size_bytes} bytes is over the {self._max_bytes}-byte cap; not downloaded"
        try:
            file = await self._channel.fetch(
                message.instance_name, message.channel_message_id, message.chat_id, self._max_bytes
            )
        except OmniError as exc:
            note = f"the channel did not give the file ({exc.message})"
            return None, f"{store_note}; {note}" if store_note else note
        if len(file.data) > self._max_bytes:  # a channel that ignored the cap
            return None, f"{len(file.data)} bytes is over the {self._max_bytes}-byte cap"
        return file, ""
