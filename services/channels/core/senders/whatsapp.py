"""WhatsApp's sender: the Evolution API, with the instance's own URL, key and Evolution instance name.

An instance created without its own Evolution key uses the deployment-wide `EVOLUTION_API_KEY` of the public
contract; no other tenant's key is ever used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from servicekit.channels import Channel
from servicekit.instances import Instance, WhatsAppConfig
from servicekit.messages import ContactCard, Location, Media, Profile, Reaction
from services.channels.core.directory import jid_for
from services.channels.core.evolution import EvolutionClient
from services.channels.core.evolution_directory import EvolutionDirectory
from services.channels.core.evolution_media import fetch_media
from services.channels.core.models import ConnectionState, ConnectionStatus, OutboundPart
from services.channels.core.reconcile import find_sent, remote_jid
from services.channels.core.senders.base import (
    REASON_MISCONFIGURED,
    Account,
    ChannelError,
    ChannelRejectedError,
    Chat,
    ChatChannel,
    Contact,
    FetchedMedia,
    SendTarget,
)

_EVOLUTION_STATES = {
    "open": ConnectionState.CONNECTED,
    "connecting": ConnectionState.CONNECTING,
    "close": ConnectionState.DISCONNECTED,
}


WEBHOOK_SECRET_HEADER = "x-omni-webhook-secret"
WEBHOOK_EVENTS = (
    "MESSAGES_UPSERT",
    "MESSAGES_UPDATE",
    "MESSAGES_DELETE",
    "MESSAGES_EDITED",
    "CONNECTION_UPDATE",
    "QRCODE_UPDATED",
)
"""What the hub subscribes to: messages in; their receipts, deletes and edits (shown on the traces of the messages
they refer to); and the connection's changes and login QRs (kept by channels so status and QR reads need no round
trip to Evolution). Not SEND_MESSAGE: Evolution posts one per reply the hub sends, doubling the webhook traffic for an
echo the hub already recognises (its own sends come back as fromMe upserts)."""
RECEIPT_EVENT = "MESSAGES_UPDATE"


def webhook_events(*, receipts: bool) -> list[str]:
    """The events Omni subscribes: all of WEBHOOK_EVENTS, or without receipts. Receipts are the dearest: Evolution
    posts two or three per part sent (server, delivered, read), each a webhook through the mesh (`make bench` measures
    them), so a deployment that does not need delivery status on its traces may turn them off."""
    return [event for event in WEBHOOK_EVENTS if receipts or event != RECEIPT_EVENT]


def ready_instance(instance: Instance, fallback_key: str) -> Instance:
    """The instance with `evolution_key` set to the key calls on its Evolution instance use: the instance token Omni
    stored when it created the instance (it reaches that instance only), else the instance's own key, else the
    deployment's fallback `EVOLUTION_API_KEY`. Raises when the instance lacks what Evolution needs."""
    config = instance.config_of(WhatsAppConfig)
    if not (config.evolution_url and config.whatsapp_instance):
        raise ChannelRejectedError(
            f"instance {instance.name!r} has no Evolution URL or WhatsApp instance name",
            reason=REASON_MISCONFIGURED,
        )
    key = config.instance_token or config.evolution_key or fallback_key
    if key != config.evolution_key:
        instance = dataclasses.replace(instance, config=dataclasses.replace(config, evolution_key=key))
    return instance


class EvolutionSender:
    """`ChannelSender` for WhatsApp instances."""

    channel = Channel.WHATSAPP

    def __init__(
        self,
        evolution: EvolutionClient,
        *,
        fallback_key: str = "",
        directory: EvolutionDirectory | None = None,
        receipts: bool = True,
    ) -> None:
        self._evolution = evolution
        self._fallback_key = fallback_key
        self._events = webhook_events(receipts=receipts)
        self._directory = directory or EvolutionDirectory(evolution)

    def _ready(self, instance: Instance) -> Instance:
        """The instance with the key its calls use; raises when it lacks what Evolution needs."""
        return ready_instance(instance, self._fallback_key)

    async def send_text(self, instance: Instance, target: SendTarget, text: str) -> str:
        return await self._evolution.send_text(self._ready(instance), target.chat_id, text, quoted_id=target.reply_to)

    async def send_media(self, instance: Instance, target: SendTarget, media: Media, caption: str) -> str:
        """A voice note and a sticker have their own Evolution endpoints (a ptt audio, a webp sticker); sent through
        sendMedia they would arrive as an audio file and a photo. Neither takes a caption or a quote."""
        if media.type == "audio" and media.voice_note:
            return await self._evolution.send_audio(self._ready(instance), target.chat_id, media)
        if media.type == "sticker":
            return await self._evolution.send_sticker(self._ready(instance), target.chat_id, media)
        return await self._evolution.send_media(
            self._ready(instance), target.chat_id, media, caption=caption, quoted_id=target.reply_to
        )

    async def send_reaction(self, instance: Instance, target: SendTarget, reaction: Reaction) -> str:
        return await self._evolution.send_reaction(self._ready(instance), remote_jid(target.chat_id), reaction)

    async def send_location(self, instance: Instance, target: SendTarget, location: Location) -> str:
        return await self._evolution.send_location(self._ready(instance), target.chat_id, location)

    async def send_contacts(self, instance: Instance, target: SendTarget, contacts: Sequence[ContactCard]) -> str:
        return await self._evolution.send_contact(self._ready(instance), target.chat_id, contacts)

    async def fetch_profile(self, instance: Instance, chat_id: str) -> Profile:
        return await self._evolution.fetch_profile(self._ready(instance), chat_id)

    async def fetch_media(
        self, instance: Instance, channel_message_id: str, chat_id: str, max_bytes: int
    ) -> FetchedMedia:
        """A received file's plaintext, through Evolution's getBase64FromMediaMessage (`evolution_media`)."""
        return await fetch_media(self._evolution, self._ready(instance), channel_message_id, max_bytes=max_bytes)

    async def send_presence(self, instance: Instance, chat_id: str, presence: str, duration_ms: int) -> None:
        await self._evolution.send_presence(self._ready(instance), chat_id, presence, duration_ms)

    async def connection_status(self, instance: Instance, *, include_qr_code: bool) -> ConnectionStatus:
        """Evolution's connection state and, when asked and not connected, the login QR and pairing code."""
        instance = self._ready(instance)
        try:
            raw = await self._evolution.connection_state(instance)
        except ChannelError as exc:
            return ConnectionStatus(state=ConnectionState.ERROR, detail=exc.message)
        state = _EVOLUTION_STATES.get(raw, ConnectionState.ERROR)
        status = ConnectionStatus(
            state=state, raw_state=raw, detail="" if state is not ConnectionState.ERROR else f"unknown state {raw!r}"
        )
        if not include_qr_code or state is ConnectionState.CONNECTED:
            return status
        try:
            info = await self._evolution.connect(instance)
        except ChannelError as exc:
            return dataclasses.replace(status, detail=f"QR code unavailable: {exc.message}")
        if info.error:
            return dataclasses.replace(status, detail=f"QR code unavailable: {info.error}")
        if info.state == "open":
            return ConnectionStatus(state=ConnectionState.CONNECTED, raw_state="open")
        return dataclasses.replace(
            status,
            state=ConnectionState.CONNECTING if state is ConnectionState.DISCONNECTED else state,
            qr_code=info.qr_code,
            pairing_code=info.pairing_code,
        )

    async def find_sent(
        self, instance: Instance, chat_id: str, part: OutboundPart, since: float, exclude: set[str]
    ) -> str | None:
        """Evolution's own store of our (fromMe) messages is the ground truth of what went out."""
        records = await self._evolution.find_messages(self._ready(instance), remote_jid(chat_id), since)
        return find_sent(records, part, since=since, exclude=exclude)

    async def check_account(self, instance: Instance) -> Account:
        """Nothing is checked remotely yet: a WhatsApp account is linked by scanning its QR after creation."""
        return Account()

    async def list_channels(self, instance: Instance) -> list[ChatChannel]:
        """One channel: the instance's WhatsApp account itself (kind `account`, id the Evolution instance name), so
        the Omni API's channel list shows every instance with its status; its chats are in the chat list."""
        config = self._ready(instance).config_of(WhatsAppConfig)
        return [ChatChannel(id=config.whatsapp_instance, name=config.whatsapp_instance, kind="account")]

    async def list_contacts(self, instance: Instance) -> list[Contact] | None:
        """Evolution's address book, oldest first (kept a minute; see `evolution_directory`)."""
        return await self._directory.contacts(self._ready(instance))

    async def list_chats(self, instance: Instance) -> list[Chat]:
        """Evolution's chats, in creation order (kept a minute)."""
        return await self._directory.chats(self._ready(instance))

    async def find_contact(self, instance: Instance, contact_id: str) -> Contact | None:
        return await self._directory.contact(self._ready(instance), jid_for(contact_id))

    async def find_chat(self, instance: Instance, chat_id: str) -> Chat | None:
        return await self._directory.chat(self._ready(instance), jid_for(chat_id))

    async def register_webhook(self, instance: Instance, webhook_url: str) -> bool:
        """Evolution's `webhook/set` with the secret as an instance webhook header, so the operator never copies it
        by hand (Evolution signs nothing itself; its contract §1.4)."""
        headers = {WEBHOOK_SECRET_HEADER: instance.webhook_secret} if instance.webhook_secret else {}
        await self._evolution.set_webhook(self._ready(instance), webhook_url, headers, self._events)
        return True
