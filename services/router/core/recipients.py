"""Turns the recipient of an API send into the chat id the channels service expects."""

from __future__ import annotations

import re

from servicekit.errors import FieldViolation, InvalidArgumentError

WHATSAPP_JID_SUFFIXES = ("@s.whatsapp.net", "@g.us", "@lid")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{4,30}$")
_SLACK_ID = re.compile(r"^[CDGUW][A-Z0-9]{2,30}$")
"""A Slack conversation (C public, G private, D direct) or user (U, W: a DM is opened) id."""


def _invalid(description: str) -> InvalidArgumentError:
    return InvalidArgumentError("invalid recipient", violations=[FieldViolation("recipient", description)])


def is_phone_number(value: str) -> bool:
    """A phone number as recipients take it: "+5511...", digits, with spaces, dashes, dots or brackets."""
    return bool(_PHONE.match(value.strip()))


def normalize_recipient(recipient: str, channel: str) -> str:
    """WhatsApp: a phone ("+5511...", digits, spaces and dashes allowed) becomes digits, JIDs are kept.
    Slack: a conversation or user id, checked for its shape. Discord: the channel-native id, unchanged."""
    value = recipient.strip()
    if not value:
        raise _invalid("is required")
    if channel == "slack":
        if not _SLACK_ID.match(value):
            raise _invalid("must be a Slack channel id (C..., G..., D...) or user id (U..., W...)")
        return value
    if channel != "whatsapp":
        return value
    if "@" in value:
        if value.endswith(WHATSAPP_JID_SUFFIXES) and value.split("@", 1)[0]:
            return value
        raise _invalid("must be a phone number or a WhatsApp JID (@s.whatsapp.net, @g.us, @lid)")
    if not _PHONE.match(value):
        raise _invalid("must be a phone number (+5511999999999 or digits) or a WhatsApp JID")
    return re.sub(r"\D", "", value)
