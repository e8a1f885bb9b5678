"""Which WhatsApp group messages reach the agent: the instance's `group_reply` ("mention" | "all" | "never").

With "mention" (the default) a group message is for the bot only when it mentions the bot (`contextInfo.mentionedJid`
holds the bot's JID) or replies to one of the bot's messages (`contextInfo.participant` is the bot). Everything else
in a group is other people talking: acknowledged, recorded as ignored for de-duplication and visibility, never
handed to the agent. The text is left as it is (the mention stays in it): the agent may want to see it.

The bot's identity is the envelope `sender` (the instance's own phone JID, evolution/CONTRACT.md §1.3), compared by
number so a `:device` suffix or the legacy `@c.us` server does not matter. In LID-addressed groups mentions and
quotes name the bot by its LID, which Evolution never states; it is learned from the bot's own group messages,
whose key pairs the LID with the phone JID (`participant`/`participantAlt`), and kept per instance in this process
(`OwnLids`): until one is seen, a LID mention of the bot is not recognised.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from servicekit.instances import GROUP_REPLY_ALL, GROUP_REPLY_NEVER, Instance
from services.ingress.core.evolution_parser import WRAPPERS, bare_jid, is_phone_jid
from services.ingress.core.receivers.base import NOT_ADDRESSED, Received

REASON_GROUP_REPLIES_OFF = "group_replies_off"
"""Ignored reason of a group message on an instance whose `group_reply` is "never"."""
MAX_CONTEXT_DEPTH = 5


class OwnLids:
    """The LID of each instance's own account, as far as this process has seen it (bounded, oldest forgotten)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._lids: OrderedDict[str, str] = OrderedDict()

    def get(self, instance_name: str) -> str:
        """The instance's own LID (bare), "" while unknown."""
        return self._lids.get(instance_name, "")

    def learn(self, instance_name: str, envelope: Mapping[str, Any]) -> None:
        """Remember the own LID when `envelope` pairs it with the own phone JID (a fromMe group message)."""
        own = _number(_str(envelope.get("sender")))
        data = envelope.get("data")
        key = data.get("key") if isinstance(data, dict) else None
        if not own or not isinstance(key, dict) or key.get("fromMe") is not True:
            return
        pair = (_str(key.get("participant")), _str(key.get("participantAlt")))
        lid = next((bare_jid(j) for j in pair if j.endswith("@lid")), "")
        phone = next((j for j in pair if is_phone_jid(j)), "")
        if lid and phone and _number(phone) == own:
            self._lids[instance_name] = lid
            self._lids.move_to_end(instance_name)
            while len(self._lids) > self._capacity:
                self._lids.popitem(last=False)


def apply_group_reply(received: Received, envelope: Mapping[str, Any], instance: Instance, own_lid: str) -> Received:
    """`received` as is unless it is a group message the instance's `group_reply` says is not for the agent; then
    the same message, ignored with the reason."""
    message = received.message
    if received.kind != "message" or message is None or not message.is_group:
        return received
    mode = instance.group_reply
    if mode == GROUP_REPLY_ALL:
        return received
    if mode != GROUP_REPLY_NEVER and addresses_bot(envelope, own_lid):
        return received
    reason = REASON_GROUP_REPLIES_OFF if mode == GROUP_REPLY_NEVER else NOT_ADDRESSED
    return replace(received, kind="ignored", reason=reason)


def addresses_bot(envelope: Mapping[str, Any], own_lid: str = "") -> bool:
    """True when the message mentions the bot or replies to one of its messages."""
    own_number = _number(_str(envelope.get("sender")))
    own_lid = bare_jid(own_lid) if own_lid else ""

    def is_bot(jid: str) -> bool:
        if not jid:
            return False
        if jid.endswith("@lid"):
            return bool(own_lid) and bare_jid(jid) == own_lid
        return bool(own_number) and _number(jid) == own_number

    for context in _contexts(envelope.get("data")):
        mentioned = context.get("mentionedJid")
        if isinstance(mentioned, list) and any(is_bot(_str(jid)) for jid in mentioned):
            return True
        if _str(context.get("stanzaId")) and is_bot(_str(context.get("participant"))):
            return True
    return False


def _contexts(data: object) -> Iterator[dict[str, Any]]:
    """Every `contextInfo` of an upsert: the one Evolution lifts to `data.contextInfo`, and those left in the content
    (v1.8 keeps `extendedTextMessage`, media keep theirs, wrappers are not unwrapped)."""
    if not isinstance(data, dict):
        return
    lifted = data.get("contextInfo")
    if isinstance(lifted, dict):
        yield lifted
    message = data.get("message")
    if isinstance(message, dict):
        yield from _content_contexts(message, 0)


def _content_contexts(message: dict[str, Any], depth: int) -> Iterator[dict[str, Any]]:
    for name, value in message.items():
        if not isinstance(value, dict):
            continue
        context = value.get("contextInfo")
        if isinstance(context, dict):
            yield context
        inner = value.get("message")
        if name in WRAPPERS and isinstance(inner, dict) and depth < MAX_CONTEXT_DEPTH:
            yield from _content_contexts(inner, depth + 1)


def _number(jid: str) -> str:
    """The digits of a phone JID's user part ("" for a LID, a group or garbage)."""
    if not jid or jid.endswith(("@lid", "@g.us", "@broadcast", "@newsletter")):
        return ""
    return "".join(ch for ch in bare_jid(jid).partition("@")[0] if ch.isdigit())


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""
