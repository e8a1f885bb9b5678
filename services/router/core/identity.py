"""Who a message is from and which conversation it belongs to, derived from the canonical message.

A WhatsApp user may appear under a phone JID (5511...@s.whatsapp.net) or a LID (...@lid). The phone is the
identity that survives across both, so it is preferred whenever the message discloses it; every id seen is recorded
so a later message carrying only the LID still finds the same user.
"""

from __future__ import annotations

import re

from servicekit.channels import Channel
from servicekit.messages import InboundMessage
from services.router.core.models import Person

PHONE_SUFFIX = "@s.whatsapp.net"
_DIGITS = re.compile(r"\D")


def phone_digits_of_jid(jid: str) -> str:
    """The digits of a phone JID ("5511...:3@s.whatsapp.net" → "5511..."), "" for anything else."""
    if not jid.endswith(PHONE_SUFFIX):
        return ""
    user = jid.removesuffix(PHONE_SUFFIX).split(":", 1)[0]
    return user if user.isdigit() else ""


def sender_phone_digits(message: InboundMessage) -> str:
    """The sender's phone digits when the message discloses them (phone_number, or a phone JID id/alt_id)."""
    if message.sender.phone_number:
        digits = _DIGITS.sub("", message.sender.phone_number)
        if digits:
            return digits
    for candidate in (message.sender.id, message.sender.alt_id):
        digits = phone_digits_of_jid(candidate)
        if digits:
            return digits
    return ""


def person_of(message: InboundMessage) -> Person:
    """The sender with the identity to key the user on and every external id to record."""
    sender = message.sender
    phone = sender_phone_digits(message) if message.channel is Channel.WHATSAPP else ""
    primary = f"{phone}{PHONE_SUFFIX}" if phone else (sender.id or message.chat_id)
    ids = [primary]
    for candidate in (sender.id, sender.alt_id):
        if candidate and candidate not in ids:
            ids.append(candidate)
    return Person(
        instance_name=message.instance_name,
        channel=message.channel,
        identity=primary,
        external_ids=tuple(ids),
        display_name=sender.display_name,
        phone_number=f"+{phone}" if phone else "",
    )


def session_name_of(message: InboundMessage) -> str:
    """ "+<digits>" for a one-to-one chat with a known phone, else the chat id."""
    if not message.is_group and message.channel is Channel.WHATSAPP:
        phone = phone_digits_of_jid(message.chat_id) or sender_phone_digits(message)
        if phone:
            return f"+{phone}"
    return message.chat_id
