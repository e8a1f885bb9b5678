"""The channels the hub speaks, and what each declares about itself.

Everything shared (inbox, dispatch, routing, splitting, outbox, traces) is channel-neutral and may only differ by
what a channel declares here: its text limit (every reply is cut to it, whatever the instance says about
splitting), whether a reply quotes the user's message, how often typing must be repeated. A new channel adds one
`Channel` member and one `ChannelTraits` entry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Channel(enum.StrEnum):
    """A chat network; the value is the public `channel_type` and `source_channel` spelling."""

    WHATSAPP = "whatsapp"
    DISCORD = "discord"
    SLACK = "slack"


@dataclass(frozen=True)
class ChannelTraits:
    """What a channel declares to the shared machinery."""

    text_limit: int
    """Longest text one message may carry (the channel refuses longer ones)."""
    reply_quotes_message: bool = False
    """An agent reply's first part answers the user's message (Discord's message_reference)."""
    reply_quotes_in_groups: bool = False
    """In a group chat the reply's first part quotes the user's message, so the group sees whom the bot answers."""
    typing_refresh_seconds: float = 0.0
    """How often a typing indicator must be repeated while the agent works (0: once is enough)."""
    webhook_segment: str = ""
    """The channel's webhook route, POST /api/v1/webhook/{segment}/{instance} ("": the channel pushes nothing)."""


TRAITS: dict[Channel, ChannelTraits] = {
    Channel.WHATSAPP: ChannelTraits(text_limit=4096, reply_quotes_in_groups=True, webhook_segment="evolution"),
    Channel.DISCORD: ChannelTraits(text_limit=2000, reply_quotes_message=True, typing_refresh_seconds=8.0),
    Channel.SLACK: ChannelTraits(text_limit=40000, webhook_segment="slack"),
}


def traits_of(channel: str) -> ChannelTraits:
    """The traits of `channel` (WhatsApp's for a name the hub does not know, the strictest common ground)."""
    try:
        return TRAITS[Channel(channel)]
    except ValueError:
        return TRAITS[Channel.WHATSAPP]
