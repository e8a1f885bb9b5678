"""Discord's receiver: a gateway (or history) message → `Received`, or None when it is not for this bot.

Pure over discord.py's `Message`: no I/O. The rules of the public contract: direct messages always; in a guild
only messages that mention the bot (the mention is stripped) or reply to it, and only in the instance's guild when
it names one; never the bot's own messages nor other bots'. Messages not addressed to the bot are dropped without a
trace: in a busy guild they are most of the traffic and none of the tenant's business.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from servicekit.channels import Channel
from servicekit.messages import InboundMessage, Media, QuotedMessage, Sender
from services.ingress.core.receivers.base import Received

MESSAGE_CREATE = "MESSAGE_CREATE"
REASON_NO_CONTENT = "no_content"

_USER_MESSAGES = frozenset({discord.MessageType.default, discord.MessageType.reply})
"""Message types a person writes; joins, pins, boosts and other system messages are not."""


def guild_id_of(message: discord.Message) -> int | None:
    """The message's guild id; None for a direct message (also for messages read back through the REST history,
    which carry no guild object when the guild is not cached)."""
    if message.guild is not None:
        return message.guild.id
    guild_id = getattr(message.channel, "guild_id", None)
    return int(guild_id) if guild_id else None


def _media_type(content_type: str) -> str:
    major = content_type.split("/", 1)[0]
    return major if major in ("image", "audio", "video") else "document"


def _media(attachment: discord.Attachment) -> Media:
    content_type = attachment.content_type or ""
    return Media(
        type=_media_type(content_type),
        mime_type=content_type.split(";", 1)[0],
        url=attachment.url,
        filename=attachment.filename,
        size_bytes=attachment.size,
    )


def strip_mention(text: str, bot_id: int) -> str:
    """The text without `<@bot>` / `<@!bot>` mentions and the space around them."""
    return re.sub(rf"\s*<@!?{bot_id}>\s*", " ", text).strip()


def _replied_to(message: discord.Message) -> discord.Message | None:
    reference = message.reference
    resolved = reference.resolved if reference is not None else None
    return resolved if isinstance(resolved, discord.Message) else None


def received_from_discord(message: discord.Message, *, bot_id: int, guild_filter: str = "") -> Received | None:
    """What `message` amounts to for the bot `bot_id`; None when the bot should not see it at all."""
    author = message.author
    if author.id == bot_id or author.bot or message.type not in _USER_MESSAGES:
        return None
    guild_id = guild_id_of(message)
    replied = _replied_to(message)
    if guild_id is not None:
        if guild_filter and str(guild_id) != guild_filter:
            return None
        mentioned = any(user.id == bot_id for user in message.mentions)
        if not mentioned and (replied is None or replied.author.id != bot_id):
            return None
    text = strip_mention(message.content, bot_id)
    media = tuple(_media(a) for a in message.attachments)
    channel = message.channel
    thread_id = str(channel.id) if isinstance(channel, discord.Thread) else ""
    context = {"guild_id": str(guild_id) if guild_id is not None else ""}
    if thread_id and isinstance(channel, discord.Thread) and channel.parent_id:
        context["parent_channel_id"] = str(channel.parent_id)
    inbound = InboundMessage(
        channel_message_id=str(message.id),
        chat_id=str(channel.id),
        sender=Sender(id=str(author.id), display_name=author.display_name, is_bot=author.bot),
        channel=Channel.DISCORD,
        message_type=media[0].type if media else "text",
        text=text,
        media=media,
        quoted=(
            QuotedMessage(str(replied.id), sender_id=str(replied.author.id), text=replied.content)
            if replied is not None
            else None
        ),
        is_group=guild_id is not None,
        sent_at=message.created_at.timestamp(),
        thread_id=thread_id,
        raw_event=MESSAGE_CREATE,
        context=context,
    )
    if not text and not media:
        return Received(
            event=MESSAGE_CREATE,
            kind="ignored",
            reason=REASON_NO_CONTENT,
            channel_message_id=inbound.channel_message_id,
            message=inbound,
        )
    return Received(
        event=MESSAGE_CREATE, kind="message", channel_message_id=inbound.channel_message_id, message=inbound
    )


def snapshot(message: discord.Message) -> dict[str, Any]:
    """The message as the trace's incoming payload: ids, author, content and attachments, nothing secret."""
    return {
        "id": str(message.id),
        "channel_id": str(message.channel.id),
        "guild_id": str(guild_id_of(message) or "") or None,
        "author": {"id": str(message.author.id), "name": message.author.name, "bot": message.author.bot},
        "content": message.content,
        "attachments": [
            {"filename": a.filename, "size": a.size, "content_type": a.content_type, "url": a.url}
            for a in message.attachments
        ],
        "message_reference": str(message.reference.message_id) if message.reference else None,
        "timestamp": message.created_at.isoformat(),
    }
