"""WhatsApp's sender: the Evolution API, with the instance's own URL, key and Evolution instance name.

An instance created without its own Evolution key uses the deployment-wide `EVOLUTION_API_KEY` of the public
contract; no other tenant's key is ever used.
"""

from __future__ import annotations

import dataclasses

from servicekit.channels import Channel
from servicekit.instances import Instance, WhatsAppConfig
from servicekit.messages import Media
from services.channels.core.evolution import EvolutionClient
from services.channels.core.models import ConnectionState, ConnectionStatus, OutboundPart
from services.channels.core.reconcile import find_sent, remote_jid
from services.channels.core.senders.base import (
    REASON_MISCONFIGURED,
    Account,
    ChannelError,
    ChannelRejectedError,
    ChatChannel,
    Contact,
    SendTarget,
)

_EVOLUTION_STATES = {
    "open": ConnectionState.CONNECTED,
    "connecting": ConnectionState.CONNECTING,
    "close": ConnectionState.DISCONNECTED,
}


WEBHOOK_SECRET_HEADER = "x-omni-webhook-secret"
WEBHOOK_EVENTS = ("MESSAGES_UPSERT", "CONNECTION_UPDATE", "QRCODE_UPDATED")
"""What the hub subscribes to: messages in, and the connection's changes. Not SEND_MESSAGE: Evolution posts one per
reply the hub sends, doubling the webhook traffic for an echo the hub already recognises (its own sends come back as
fromMe upserts), and not MESSAGES_UPDATE until receipts are shown on traces (each reply would bring two more)."""


class EvolutionSender:
    """`ChannelSender` for WhatsApp instances."""

    channel = Channel.WHATSAPP

    def __init__(self, evolution: EvolutionClient, *, fallback_key: str = "") -> None:
        self._evolution = evolution
        self._fallback_key = fallback_key

    def _ready(self, instance: Instance) -> Instance:
        """The instance with its key (or the fallback); raises when it lacks what Evolution needs."""
        config = instance.config_of(WhatsAppConfig)
        if not (config.evolution_url and config.whatsapp_instance):
            raise ChannelRejectedError(
                f"instance {instance.name!r} has no Evolution URL or WhatsApp instance name",
                reason=REASON_MISCONFIGURED,
            )
        if not config.evolution_key and self._fallback_key:
            config = dataclasses.replace(config, evolution_key=self._fallback_key)
            instance = dataclasses.replace(instance, config=config)
        return instance

    async def send_text(self, instance: Instance, target: SendTarget, text: str) -> str:
        return await self._evolution.send_text(self._ready(instance), target.chat_id, text, quoted_id=target.reply_to)

    async def send_media(self, instance: Instance, target: SendTarget, media: Media, caption: str) -> str:
        return await self._evolution.send_media(
            self._ready(instance), target.chat_id, media, caption=caption, quoted_id=target.reply_to
        )

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
        return []

    async def list_contacts(self, instance: Instance) -> list[Contact] | None:
        """Evolution's contacts come with the WhatsApp Omni API (not here yet)."""
        return None

    async def register_webhook(self, instance: Instance, webhook_url: str) -> bool:
        """Evolution's `webhook/set` with the secret as an instance webhook header, so the operator never copies it
        by hand (Evolution signs nothing itself; its contract §1.4)."""
        headers = {WEBHOOK_SECRET_HEADER: instance.webhook_secret} if instance.webhook_secret else {}
        await self._evolution.set_webhook(self._ready(instance), webhook_url, headers, list(WEBHOOK_EVENTS))
        return True
