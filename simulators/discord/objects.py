"""Discord API objects (users, members, roles, channels, guilds, applications, messages) built from the state.

REST answers and gateway events share these builders, so a message a bot fetches looks like the one it was
dispatched. Each shape carries every key discord.py 2.7.1 indexes directly (`Member` needs `flags`, `Thread`
needs `thread_metadata`, `AppInfo` needs `verify_key`, ...) plus the common optional keys as Discord sends them.
"""

from __future__ import annotations

import mimetypes
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from simulators.discord.state import Bot, Channel, Guild, SimState, StoredMessage, User
from simulators.discord.wire import (
    APP_FLAGS_PRIVILEGED,
    CHANNEL_DM,
    CHANNEL_PUBLIC_THREAD,
    EVERYONE_PERMISSIONS,
    MESSAGE_DEFAULT,
    MESSAGE_REPLY,
    iso,
)


def user_object(user: User) -> dict[str, Any]:
    """A user as embedded in messages, members and DM recipients."""
    return {
        "id": user.id,
        "username": user.name,
        "discriminator": "0",
        "global_name": None if user.bot else user.name,
        "avatar": None,
        "avatar_decoration_data": None,
        "public_flags": 0,
        "bot": user.bot,
    }


def current_user_object(bot: Bot) -> dict[str, Any]:
    """`GET /users/@me` and READY's `user`: the bot account with its private fields."""
    return {
        "id": bot.id,
        "username": bot.name,
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "avatar_decoration_data": None,
        "banner": None,
        "accent_color": None,
        "bot": True,
        "verified": True,
        "mfa_enabled": False,
        "locale": "en-US",
        "email": None,
        "flags": 0,
        "public_flags": 0,
    }


def application_object(state: SimState, bot: Bot) -> dict[str, Any]:
    """`GET /oauth2/applications/@me`: the bot's application (its id is the bot user id)."""
    return {
        "id": bot.id,
        "name": bot.name,
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        "hook": True,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": secrets.token_hex(32),
        "flags": application_flags(bot),
        "owner": user_object(state.owner),
        "team": None,
        "rpc_origins": [],
        "redirect_uris": [],
        "tags": [],
        "interactions_endpoint_url": None,
        "role_connections_verification_url": None,
        "approximate_guild_count": len(state.guilds_of_bot.get(bot.id, ())),
        "bot": current_user_object(bot),
    }


def application_flags(bot: Bot) -> int:
    """The portal switches: the three privileged-intent flags, all on or all off."""
    return APP_FLAGS_PRIVILEGED if bot.privileged_intents else 0


def member_object(guild: Guild, user: User, *, with_user: bool = True) -> dict[str, Any]:
    """A guild member; `with_user=False` is the form MESSAGE_CREATE's `member` and mentions carry."""
    member: dict[str, Any] = {
        "roles": [],
        "nick": None,
        "avatar": None,
        "banner": None,
        "joined_at": iso(guild.members.get(user.id)),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }
    if with_user:
        member["user"] = user_object(user)
    return member


def everyone_role(guild: Guild) -> dict[str, Any]:
    """The @everyone role, whose id is the guild id."""
    return {
        "id": guild.id,
        "name": "@everyone",
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": 0,
        "permissions": EVERYONE_PERMISSIONS,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def channel_object(state: SimState, channel: Channel) -> dict[str, Any]:
    """A guild text channel, a public thread or a DM channel."""
    if channel.type == CHANNEL_DM:
        return {
            "id": channel.id,
            "type": CHANNEL_DM,
            "last_message_id": channel.last_message_id,
            "flags": 0,
            "recipients": [user_object(state.users[channel.recipients[1]])],
        }
    if channel.type == CHANNEL_PUBLIC_THREAD:
        return {
            "id": channel.id,
            "type": CHANNEL_PUBLIC_THREAD,
            "guild_id": channel.guild_id,
            "parent_id": channel.parent_id,
            "owner_id": channel.owner_id,
            "name": channel.name,
            "last_message_id": channel.last_message_id,
            "rate_limit_per_user": 0,
            "flags": 0,
            "message_count": len(channel.message_ids),
            "total_message_sent": len(channel.message_ids),
            "member_count": 1,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": iso(channel.created_at),
                "locked": False,
                "create_timestamp": iso(channel.created_at),
            },
        }
    return {
        "id": channel.id,
        "type": channel.type,
        "guild_id": channel.guild_id,
        "name": channel.name,
        "position": channel.position,
        "permission_overwrites": [],
        "parent_id": None,
        "topic": None,
        "nsfw": False,
        "last_message_id": channel.last_message_id,
        "rate_limit_per_user": 0,
        "flags": 0,
    }


def guild_object(guild: Guild) -> dict[str, Any]:
    """`GET /guilds/{id}`: the guild without channels or members."""
    first_channel = next(iter(guild.channel_ids.values()), None)
    return {
        "id": guild.id,
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": guild.owner_id,
        "region": "deprecated",
        "afk_channel_id": None,
        "afk_timeout": 300,
        "widget_enabled": False,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [everyone_role(guild)],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": first_channel,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "max_members": 500000,
        "max_presences": None,
        "vanity_url_code": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "nsfw_level": 0,
        "nsfw": False,
        "premium_progress_bar_enabled": False,
    }


def guild_create_object(state: SimState, guild: Guild, bot_id: str, *, all_members: bool = False) -> dict[str, Any]:
    """GUILD_CREATE for one bot: the guild plus channels, active threads and members.

    Without the presences intent Discord lists only the bot itself (and voice members) in `members`, and a client
    wanting the rest asks with op 8; with it, a small guild's members all come along (`all_members`).
    """
    members = guild.members if all_members else (bot_id,)
    payload = guild_object(guild)
    payload.update(
        joined_at=iso(guild.members.get(bot_id)),
        large=False,
        unavailable=False,
        lazy=True,
        member_count=len(guild.members),
        voice_states=[],
        members=[member_object(guild, state.users[m]) for m in members],
        channels=[channel_object(state, state.channels[c]) for c in guild.channel_ids.values()],
        threads=[channel_object(state, state.channels[t]) for t in guild.thread_ids],
        presences=[],
        stage_instances=[],
        guild_scheduled_events=[],
        soundboard_sounds=[],
    )
    return payload


def partial_guild_object(guild: Guild) -> dict[str, Any]:
    """An entry of `GET /users/@me/guilds`."""
    return {
        "id": guild.id,
        "name": guild.name,
        "icon": None,
        "banner": None,
        "owner": False,
        "permissions": EVERYONE_PERMISSIONS,
        "features": [],
    }


def attachment_object(
    state: SimState, base_url: str, channel_id: str, filename: str, data: bytes, content_type: str | None
) -> dict[str, Any]:
    """An attachment whose bytes the simulator itself serves (its `url` stands in for Discord's CDN)."""
    attachment_id = state.ids.next()
    kind = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    state.attachments[attachment_id] = (data, kind)
    url = f"{base_url}/attachments/{channel_id}/{attachment_id}/{filename}"
    return {
        "id": attachment_id,
        "filename": filename,
        "size": len(data),
        "url": url,
        "proxy_url": url,
        "content_type": kind,
    }


def message_object(
    state: SimState,
    channel: Channel,
    author: User,
    content: str,
    *,
    message_id: str | None = None,
    mentions: Iterable[str] = (),
    reference: StoredMessage | None = None,
    attachments: Sequence[Mapping[str, Any]] = (),
    embeds: Sequence[Mapping[str, Any]] = (),
    nonce: str | int | None = None,
    tts: bool = False,
    flags: int = 0,
) -> StoredMessage:
    """A new message in `channel` (not stored yet), shaped as REST returns it."""
    mention_ids = tuple(dict.fromkeys(m for m in mentions if m in state.users))
    data: dict[str, Any] = {
        "id": message_id or state.ids.next(),
        "type": MESSAGE_REPLY if reference is not None else MESSAGE_DEFAULT,
        "channel_id": channel.id,
        "author": user_object(author),
        "content": content,
        "timestamp": iso(),
        "edited_timestamp": None,
        "tts": tts,
        "mention_everyone": False,
        "mentions": [user_object(state.users[m]) for m in mention_ids],
        "mention_roles": [],
        "attachments": [dict(a) for a in attachments],
        "embeds": [dict(e) for e in embeds],
        "components": [],
        "pinned": False,
        "flags": flags,
    }
    if nonce is not None:
        data["nonce"] = nonce
    if reference is not None:
        data["message_reference"] = {"type": 0, "channel_id": reference.channel_id, "message_id": reference.data["id"]}
        if reference.guild_id is not None:
            data["message_reference"]["guild_id"] = reference.guild_id
        data["referenced_message"] = {k: v for k, v in reference.data.items() if k != "referenced_message"}
    return StoredMessage(
        data=data,
        channel_id=channel.id,
        guild_id=channel.guild_id,
        author_id=author.id,
        mention_ids=frozenset(mention_ids),
        dm_bot_id=channel.recipients[0] if channel.type == CHANNEL_DM else None,
    )


def gateway_message(state: SimState, message: StoredMessage) -> dict[str, Any]:
    """MESSAGE_CREATE's data: guild messages add `guild_id`, the author's `member` and members on mentions."""
    if message.guild_id is None:
        return message.data
    guild = state.guilds[message.guild_id]
    payload = dict(message.data)
    payload["guild_id"] = guild.id
    payload["member"] = member_object(guild, state.users[message.author_id], with_user=False)
    payload["mentions"] = [
        {**mention, "member": member_object(guild, state.users[mention["id"]], with_user=False)}
        if mention["id"] in guild.members
        else mention
        for mention in message.data["mentions"]
    ]
    return payload


def without_content(payload: dict[str, Any]) -> dict[str, Any]:
    """What a session without the MESSAGE_CONTENT intent sees of someone else's guild message."""
    return {**payload, "content": "", "embeds": [], "attachments": [], "components": []}
