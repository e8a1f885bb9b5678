"""Access rules: who reaches the agent. Pure logic, no I/O, so the router decides in memory on every message.

A rule allows or blocks a pattern: an exact id or a prefix ending in `*` ("+5511*"), matched against every identity
of the sender (WhatsApp JID, +phone and LID; a Discord or Slack user id) or, for a chat rule, against the chat (a
group JID, a Discord channel or guild, a Slack channel). Among the rules that match, the most specific decides: an
exact id beats any prefix, a longer prefix beats a shorter one, an instance's rule beats a global one of the same
specificity, and `block` wins a tie. When no rule matches, the instance's `access_mode` decides: "open" lets the
message through, "allowlist" keeps it from the agent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from servicekit.channels import Channel
from servicekit.errors import FieldViolation, InvalidArgumentError
from servicekit.instances import ACCESS_ALLOWLIST
from servicekit.messages import InboundMessage

RULE_ALLOW = "allow"
RULE_BLOCK = "block"
RULE_TYPES = (RULE_ALLOW, RULE_BLOCK)
SCOPE_SENDER = "sender"
SCOPE_CHAT = "chat"
SCOPES = (SCOPE_SENDER, SCOPE_CHAT)
WILDCARD = "*"


@dataclass(frozen=True)
class Rule:
    """One stored rule. `instance_name` "" makes it global; `pattern` is normalized (`normalize_pattern`)."""

    id: str
    instance_name: str
    pattern: str
    rule_type: str
    scope: str = SCOPE_SENDER
    created_at: float = 0.0

    @property
    def is_prefix(self) -> bool:
        return self.pattern.endswith(WILDCARD)

    @property
    def stem(self) -> str:
        """The pattern without its trailing `*` (the whole pattern for an exact rule)."""
        return self.pattern[:-1] if self.is_prefix else self.pattern

    def matches(self, value: str) -> bool:
        return value.startswith(self.stem) if self.is_prefix else value == self.pattern

    @property
    def rank(self) -> tuple[int, int, int]:
        """Specificity, compared as a tuple: exact before prefix, then the longer prefix, then instance before
        global. Rules of equal rank tie (and `block` wins the tie)."""
        return (0 if self.is_prefix else 1, len(self.stem) if self.is_prefix else 0, 1 if self.instance_name else 0)

    def describe(self) -> str:
        where = f"instance {self.instance_name!r}" if self.instance_name else "global"
        return f"{self.rule_type} rule {self.id} ({self.scope} {self.pattern!r}, {where})"


@dataclass(frozen=True)
class Decision:
    """What the policy decided for one message, and why (`rule` is None when the access mode decided)."""

    allowed: bool
    rule: Rule | None
    reason: str


_JID_DEVICE = re.compile(r":\d+(?=@)")


def _phone_of_jid(jid: str) -> str:
    """The "+digits" of a WhatsApp phone JID (device suffix dropped), "" for anything else."""
    user, _, server = _JID_DEVICE.sub("", jid).partition("@")
    if server in ("s.whatsapp.net", "c.us") and user.isdigit():
        return "+" + user
    return ""


def _phone(value: str) -> str:
    digits = "".join(ch for ch in value if ch.isdigit())
    return "+" + digits if digits else ""


def sender_identities(message: InboundMessage) -> tuple[str, ...]:
    """Every spelling of the sender a rule may name: ids as the channel gave them, a phone JID also as +digits."""
    found: list[str] = []
    for raw in (message.sender.id, message.sender.alt_id):
        if raw:
            found.append(_JID_DEVICE.sub("", raw))
            phone = _phone_of_jid(raw)
            if phone:
                found.append(phone)
    if message.sender.phone_number:
        found.append(_phone(message.sender.phone_number))
    return tuple(dict.fromkeys(v for v in found if v))


def chat_identities(message: InboundMessage) -> tuple[str, ...]:
    """The chat a chat rule may name: the chat id, and a Discord message's guild and parent channel."""
    found = [message.chat_id, message.context.get("guild_id", ""), message.context.get("parent_channel_id", "")]
    return tuple(dict.fromkeys(v for v in found if v))


class AccessPolicy:
    """An immutable index of rules, built once per rules change and read by every message.

    Exact patterns are looked up in a dict; prefixes too, by their stem, once per distinct stem length: the cost per
    message grows with the number of prefix lengths in use, not with the number of rules. Nothing here waits or does
    I/O."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._exact: dict[tuple[str, str, str], list[Rule]] = {}
        self._prefixes: dict[tuple[str, str, str], list[Rule]] = {}
        stem_lengths: dict[tuple[str, str], set[int]] = {}
        for rule in self.rules:
            if rule.is_prefix:
                self._prefixes.setdefault((rule.instance_name, rule.scope, rule.stem), []).append(rule)
                stem_lengths.setdefault((rule.instance_name, rule.scope), set()).add(len(rule.stem))
            else:
                self._exact.setdefault((rule.instance_name, rule.scope, rule.pattern), []).append(rule)
        self._stem_lengths = {key: tuple(sorted(lengths)) for key, lengths in stem_lengths.items()}

    def _matching(self, instance_name: str, scope: str, values: Iterable[str]) -> list[Rule]:
        found: list[Rule] = []
        owners = (instance_name, "") if instance_name else ("",)
        for value in values:
            for owner in owners:
                found.extend(self._exact.get((owner, scope, value), ()))
                for length in self._stem_lengths.get((owner, scope), ()):
                    if length > len(value):
                        break
                    found.extend(self._prefixes.get((owner, scope, value[:length]), ()))
        return found

    def decide(
        self, instance_name: str, access_mode: str, senders: Iterable[str], chats: Iterable[str] = ()
    ) -> Decision:
        """The decision for a sender known by `senders` (its identities) in a chat known by `chats`."""
        candidates = self._matching(instance_name, SCOPE_SENDER, senders)
        candidates += self._matching(instance_name, SCOPE_CHAT, chats)
        if candidates:
            best = max(rule.rank for rule in candidates)
            top = [rule for rule in candidates if rule.rank == best]
            winner = next((rule for rule in top if rule.rule_type == RULE_BLOCK), top[0])
            if winner.rule_type == RULE_BLOCK:
                return Decision(False, winner, f"blocked by {winner.describe()}")
            return Decision(True, winner, f"allowed by {winner.describe()}")
        if access_mode == ACCESS_ALLOWLIST:
            return Decision(False, None, "not on the allowlist (access_mode allowlist, no rule matches)")
        return Decision(True, None, "no rule matches (access_mode open)")

    def evaluate(self, instance_name: str, access_mode: str, message: InboundMessage) -> Decision:
        """The decision for an inbound message on the instance."""
        return self.decide(instance_name, access_mode, sender_identities(message), chat_identities(message))


# --- validation of patterns, per channel -------------------------------------------------------------------------

_PHONE_CHARS = re.compile(r"^\+?[\d\s\-().]*$")
_WA_SENDER = re.compile(r"^(\d+(:\d+)?@s\.whatsapp\.net|\d+@c\.us|\d+@lid)$")
_WA_SENDER_STEM = re.compile(r"^[\d:]*(@([a-z.]*))?$")
_WA_CHAT = re.compile(r"^(\d+(-\d+)?@g\.us|\d+@s\.whatsapp\.net|\d+@lid)$")
_WA_CHAT_STEM = re.compile(r"^[\d-]*(@([a-z.]*))?$")
_SNOWFLAKE = re.compile(r"^\d{15,21}$")
_DIGITS = re.compile(r"^\d*$")
_SLACK_USER = re.compile(r"^[UWB][A-Z0-9]{2,}$")
_SLACK_USER_STEM = re.compile(r"^([UWB][A-Z0-9]*)?$")
_SLACK_CHAT = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_SLACK_CHAT_STEM = re.compile(r"^([CGD][A-Z0-9]*)?$")
_MIN_PHONE_DIGITS = 7
_MAX_PHONE_DIGITS = 15


def _normalize_phone(stem: str, prefix: bool) -> str | None:
    """The "+digits" of a phone number (spaces, dashes, dots and brackets dropped), None when it is no phone number."""
    if not _PHONE_CHARS.match(stem):
        return None
    digits = "".join(ch for ch in stem if ch.isdigit())
    if prefix:
        return "+" + digits if len(digits) <= _MAX_PHONE_DIGITS else None
    return "+" + digits if _MIN_PHONE_DIGITS <= len(digits) <= _MAX_PHONE_DIGITS else None


def _normalize_for(channel: Channel, scope: str, stem: str, prefix: bool) -> str | None:
    """The normalized stem as `channel` spells such an id, None when it spells none like it."""
    if channel is Channel.WHATSAPP:
        if scope == SCOPE_SENDER and (stem.startswith("+") or (stem and _DIGITS.match(stem))):
            return _normalize_phone(stem, prefix)
        if scope == SCOPE_SENDER:
            stem = _JID_DEVICE.sub("", stem.lower())
            ok = _WA_SENDER_STEM.match(stem) if prefix else _WA_SENDER.match(stem)
        else:
            stem = stem.lower()
            ok = _WA_CHAT_STEM.match(stem) if prefix else _WA_CHAT.match(stem)
        return stem if ok else None
    if channel is Channel.DISCORD:
        ok = _DIGITS.match(stem) if prefix else _SNOWFLAKE.match(stem)
        return stem if ok else None
    stem = stem.upper()
    if scope == SCOPE_SENDER:
        ok = _SLACK_USER_STEM.match(stem) if prefix else _SLACK_USER.match(stem)
    else:
        ok = _SLACK_CHAT_STEM.match(stem) if prefix else _SLACK_CHAT.match(stem)
    return stem if ok else None


_EXPECTED = {
    (Channel.WHATSAPP, SCOPE_SENDER): "a phone number (+5511999999999), a JID (...@s.whatsapp.net) or a LID (...@lid)",
    (Channel.WHATSAPP, SCOPE_CHAT): "a group JID (...@g.us) or a chat JID",
    (Channel.DISCORD, SCOPE_SENDER): "a Discord user id (a snowflake of 15 to 21 digits)",
    (Channel.DISCORD, SCOPE_CHAT): "a Discord channel or guild id (a snowflake of 15 to 21 digits)",
    (Channel.SLACK, SCOPE_SENDER): "a Slack user id (U..., W... or B...)",
    (Channel.SLACK, SCOPE_CHAT): "a Slack channel id (C..., G... or D...)",
}


def normalize_pattern(raw: str, *, scope: str, channel: Channel | None, phone: bool = False, field: str) -> str:
    """The stored form of a rule pattern, checked against the ids `channel` uses (any channel's for a global rule;
    a phone number only when `phone`: the REST field `phone_number`).

    A global rule's bare digits stay digits (a Discord id); phone numbers are "+digits" however they were typed, so
    "+55 (11) 99999-9999" and "5511999999999" on a WhatsApp instance name the same sender.

    Raises:
        InvalidArgumentError: the pattern is empty, has a `*` elsewhere than at its end, or is no such id.
    """
    value = raw.strip()

    def refuse(why: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{field} {raw!r}: {why}", violations=[FieldViolation(field, why)])

    if not value:
        raise refuse("is required")
    prefix = value.endswith(WILDCARD)
    stem = value[:-1] if prefix else value
    if WILDCARD in stem:
        raise refuse("'*' is allowed only at the end (a prefix)")
    if phone:
        normalized = _normalize_phone(stem, prefix)
        if normalized is None or (channel is not None and channel is not Channel.WHATSAPP):
            raise refuse("is not a phone number (+ and 7 to 15 digits, or a prefix such as +5511*)")
    elif not stem:
        normalized = ""
    elif channel is not None:
        normalized = _normalize_for(channel, scope, stem, prefix)
        if normalized is None:
            raise refuse(f"is not {_EXPECTED[(channel, scope)]}")
    else:
        normalized = next(
            (
                found
                for candidate in (Channel.DISCORD, Channel.SLACK, Channel.WHATSAPP)
                if (found := _normalize_for(candidate, scope, stem, prefix)) is not None
            ),
            None,
        )
        if normalized is None:
            expected = "; ".join(text for (_, kind), text in _EXPECTED.items() if kind == scope)
            raise refuse(f"is not an id of any channel: {expected}")
    return normalized + (WILDCARD if prefix else "")
