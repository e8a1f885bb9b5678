"""JSON objects as the Web API and the Events API show them: conversations, users, files and messages."""

from __future__ import annotations

import time
import uuid
from typing import Any

from simulators.slack.state import Bot, Channel, SlackState, StoredFile, User


def channel_object(channel: Channel, viewer: str | None) -> dict[str, Any]:
    """A conversation as `conversations.info`/`list` show it to `viewer` (a user id; `is_member` is theirs)."""
    base: dict[str, Any] = {
        "id": channel.id,
        "created": channel.created,
        "is_archived": False,
        "is_org_shared": False,
        "context_team_id": channel.team_id,
        "updated": channel.created * 1000,
    }
    if channel.kind == "im":
        base.update({"is_im": True, "user": channel.user, "is_user_deleted": False, "priority": 0})
        return base
    base.update(
        {
            "name": channel.name,
            "name_normalized": channel.name,
            "is_channel": channel.kind == "channel",
            "is_group": channel.kind == "group",
            "is_im": False,
            "is_mpim": channel.kind == "mpim",
            "is_private": channel.kind != "channel",
            "is_general": channel.is_general,
            "is_shared": False,
            "is_ext_shared": False,
            "creator": "",
            "is_member": viewer in channel.members if viewer else False,
            "num_members": len(channel.members),
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }
    )
    return base


def user_object(user: User) -> dict[str, Any]:
    """A user as `users.info`/`users.list` show it."""
    profile: dict[str, Any] = {
        "real_name": user.real_name,
        "display_name": user.name,
        "real_name_normalized": user.real_name,
        "display_name_normalized": user.name,
        "team": user.team_id,
    }
    if user.email:
        profile["email"] = user.email
    if user.bot_id:
        profile["bot_id"] = user.bot_id
    return {
        "id": user.id,
        "team_id": user.team_id,
        "name": user.name,
        "deleted": False,
        "real_name": user.real_name,
        "tz": "UTC",
        "tz_label": "Coordinated Universal Time",
        "tz_offset": 0,
        "profile": profile,
        "is_admin": False,
        "is_owner": False,
        "is_bot": user.is_bot,
        "is_app_user": False,
        "updated": int(time.time()),
    }


def file_object(stored: StoredFile, base_url: str, channel: str | None = None, ts: str | None = None) -> dict[str, Any]:
    """A file as messages, `files.completeUploadExternal` and `file_share` events carry it."""
    private = f"{base_url}/files-pri/{stored.team_id}-{stored.id}/{stored.name}"
    data: dict[str, Any] = {
        "id": stored.id,
        "created": stored.created,
        "timestamp": stored.created,
        "name": stored.name,
        "title": stored.title,
        "mimetype": stored.mimetype,
        "filetype": stored.name.rsplit(".", 1)[-1] if "." in stored.name else "binary",
        "pretty_type": stored.mimetype,
        "user": stored.user,
        "user_team": stored.team_id,
        "mode": "hosted",
        "editable": False,
        "is_external": False,
        "is_public": True,
        "size": len(stored.data),
        "url_private": private,
        "url_private_download": private.rsplit("/", 1)[0] + "/download/" + stored.name,
        "permalink": f"{base_url}/files/{stored.user}/{stored.id}/{stored.name}",
        "channels": [channel] if channel else [],
        "groups": [],
        "ims": [],
    }
    if channel and ts:
        data["shares"] = {"public": {channel: [{"ts": ts, "channel_name": "", "team_id": stored.team_id}]}}
    return data


def user_message(
    state: SlackState,
    channel: Channel,
    user: User,
    text: str,
    thread_ts: str | None = None,
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A human's message as stored (the event adds `channel`, `event_ts` and `channel_type`)."""
    ts = state.clock.next()
    message: dict[str, Any] = {
        "type": "message",
        "user": user.id,
        "text": text,
        "ts": ts,
        "team": channel.team_id,
        "client_msg_id": str(uuid.uuid4()),
        "blocks": rich_text_blocks(text),
    }
    if files:
        message.update({"subtype": "file_share", "files": files, "upload": False, "display_as_bot": False})
    if thread_ts:
        message["thread_ts"] = thread_ts
        parent = channel.by_ts.get(thread_ts)
        if parent is not None and parent.get("user"):
            message["parent_user_id"] = parent["user"]
    return message


def bot_message(
    state: SlackState,
    channel: Channel,
    bot: Bot | None,
    text: str,
    thread_ts: str | None = None,
    *,
    bot_id: str | None = None,
    username: str | None = None,
    legacy: bool = False,
) -> dict[str, Any]:
    """A bot's message: one of our apps (`bot`) or a foreign integration (`bot_id`/`username`).

    Apps' posts carry `bot_id`, `app_id` and `user` (the bot user) without a subtype; `legacy=True` gives the old
    `subtype: bot_message` shape integrations produce.
    """
    ts = state.clock.next()
    message: dict[str, Any] = {"type": "message", "text": text, "ts": ts, "team": channel.team_id}
    if bot is not None:
        message.update(
            {
                "user": bot.user_id,
                "bot_id": bot.bot_id,
                "app_id": bot.app_id,
                "bot_profile": {
                    "id": bot.bot_id,
                    "app_id": bot.app_id,
                    "name": bot.name,
                    "team_id": bot.team_id,
                    "deleted": False,
                    "updated": int(time.time()),
                },
                "blocks": rich_text_blocks(text),
            }
        )
    else:
        message["bot_id"] = bot_id or "B" + uuid.uuid4().hex[:10].upper()
        message["username"] = username or "integration"
    if legacy or bot is None:
        message["subtype"] = "bot_message"
    if thread_ts:
        message["thread_ts"] = thread_ts
        parent = channel.by_ts.get(thread_ts)
        if parent is not None and parent.get("user"):
            message["parent_user_id"] = parent["user"]
    return message


def rich_text_blocks(text: str) -> list[dict[str, Any]]:
    """The `rich_text` block Slack's clients attach (one plain text section; mentions are not parsed out)."""
    return [
        {
            "type": "rich_text",
            "block_id": uuid.uuid4().hex[:5],
            "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}],
        }
    ]


def message_event(channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
    """The Events API `message` event for a stored message."""
    event = {key: value for key, value in message.items() if key not in ("reply_count", "reply_users", "latest_reply")}
    event.pop("reply_users_count", None)
    event.update({"channel": channel.id, "event_ts": message["ts"], "channel_type": channel.kind})
    return event


def app_mention_event(channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
    """The `app_mention` event Slack sends alongside `message` when the text mentions the app's bot user."""
    event: dict[str, Any] = {
        "type": "app_mention",
        "user": message.get("user"),
        "text": message["text"],
        "ts": message["ts"],
        "team": message.get("team"),
        "channel": channel.id,
        "event_ts": message["ts"],
    }
    for key in ("client_msg_id", "blocks", "thread_ts", "parent_user_id", "files", "bot_id"):
        if key in message:
            event[key] = message[key]
    return event
