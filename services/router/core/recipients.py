"""Turns the recipient of an API send into the chat id the channels service expects."""

from __future__ import annotations

import re

from servicekit.errors import FieldViolation, InvalidArgumentError

WHATSAPP_JID_SUFFIXES = ("@s.whatsapp.net", "@g.us", "@lid")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{4,30}$")


def _invalid(description: str) -> InvalidArgumentError:
    return InvalidArgumentError("invalid recipient", violations=[FieldViolation("recipient", description)])


def normalize_recipient(recipient: str, channel: str) -> str:
    """WhatsApp: a phone ("+5511...", digits, spaces and dashes allowed) becomes digits, JIDs are kept.
    Discord and Slack: the channel-native id, unchanged."""
    value = recipient.strip()
    if not value:
        raise _invalid("is required")
    if channel != "whatsapp":
        return value
    if "@" in value:
        if value.endswith(WHATSAPP_JID_SUFFIXES) and value.split("@", 1)[0]:
            return value
        raise _invalid("must be a phone number or a WhatsApp JID (@s.whatsapp.net, @g.us, @lid)")
    if not _PHONE.match(value):
        raise _invalid("must be a phone number (+5511999999999 or digits) or a WhatsApp JID")
    return re.sub(r"\D", "", value)
