"""The body of an agent call, exactly as the public agent contract spells it."""

from __future__ import annotations

from typing import Any

from servicekit.instances import Instance
from servicekit.messages import InboundMessage, Media, OutboundPart
from services.router.core.identity import sender_phone_digits
from services.router.core.models import media_to_agent


def build_agent_request(
    instance: Instance,
    message: InboundMessage,
    *,
    user_id: str,
    session_id: str,
    session_name: str,
    agent_session_id: str = "",
    agent_user_id: str = "",
) -> dict[str, Any]:
    """The JSON object posted to `{agent_api_url}/api/agent/chat` (it never contains the agent's key).

    `agent_session_id`/`agent_user_id` are the ids the agent returned in its last reply in this session; they are
    sent back (only when it returned some) beside the hub's own `session_id`/`user_id`, which stay stable, so an agent
    that keys its memory on its own ids continues its conversation and one that does not sees nothing new."""
    phone = sender_phone_digits(message) if message.channel == "whatsapp" else ""
    quoted = None
    if message.quoted is not None:
        quoted = {
            "message_id": message.quoted.channel_message_id,
            "sender_id": message.quoted.sender_id or None,
            "text": message.quoted.text or None,
        }
    user_data: dict[str, Any] = {"name": message.sender.display_name, f"{message.channel}_id": message.sender.id}
    if message.sender.alt_id:
        user_data[f"{message.channel}_alt_id"] = message.sender.alt_id
    return {
        "user_id": user_id,
        "session_id": session_id,
        "session_name": session_name,
        "message": message.text,
        "message_type": message.message_type or "text",
        "session_origin": message.channel.value,
        "agent": instance.default_agent,
        **({"agent_session_id": agent_session_id} if agent_session_id else {}),
        **({"agent_user_id": agent_user_id} if agent_user_id else {}),
        "user": {"phone_number": f"+{phone}" if phone else None, "email": None, "user_data": user_data},
        "media": [media_to_agent(m) for m in message.media],
        "context": {
            "channel": message.channel.value,
            "instance": instance.name,
            "chat_id": message.chat_id,
            "message_id": message.channel_message_id,
            "is_group": message.is_group,
            "quoted_message": quoted,
            **({"thread_id": message.thread_id} if message.thread_id else {}),
            **{key: value or None for key, value in message.context.items()},
        },
    }


def media_parts(media: list[Any]) -> list[OutboundPart]:
    """Outbound parts for the `media` entries of an agent reply (entries without a url or base64 are skipped); an
    audio entry with `"voice_note": true` goes out as a voice note (WhatsApp ptt), as the agent received one."""
    parts: list[OutboundPart] = []
    for entry in media:
        if not isinstance(entry, dict):
            continue
        item = Media(
            type=str(entry.get("type") or entry.get("media_type") or "document"),
            mime_type=str(entry.get("mime_type") or ""),
            url=str(entry.get("url") or ""),
            base64=str(entry.get("base64") or ""),
            caption=str(entry.get("caption") or ""),
            filename=str(entry.get("filename") or ""),
            voice_note=entry.get("voice_note") is True,
        )
        if item.url or item.base64:
            parts.append(OutboundPart(text=item.caption, media=item))
    return parts
