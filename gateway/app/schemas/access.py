"""Access rules as the REST API shows them (`/api/v1/access/...`).

The body names a rule's target the way CONTRACT.md fixes it: `phone_number` for a phone ("+5511999999999", or a
prefix "+5511*"), `sender_id` for any other sender id (a JID, a LID, a Discord or Slack user id), `chat_id` for a
group or channel. Exactly one of them is given. Whether the id fits the instance's channel is checked by the router,
which knows the channel; a phone number's spelling is checked here.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_PHONE = re.compile(r"^\+?[\d\s\-().]*\d[\d\s\-().]*\*?$|^\+?\*$")


def normalize_phone(value: str) -> str:
    """The "+digits" (with its trailing "*" for a prefix) of a phone number typed with spaces, dashes or brackets."""
    value = value.strip()
    if not _PHONE.match(value):
        raise ValueError("must be a phone number such as +5511999999999, or a prefix such as +5511*")
    digits = "".join(ch for ch in value if ch.isdigit())
    return "+" + digits + ("*" if value.endswith("*") else "")


class _Target(BaseModel):
    """Who a rule or a check names: a phone number or another sender id (and, for rules, maybe a chat)."""

    model_config = ConfigDict(extra="forbid")

    phone_number: str | None = Field(default=None, examples=["+5511999999999", "+5511*"])
    sender_id: str | None = Field(
        default=None,
        description="A sender id that is no phone number: WhatsApp JID or LID, Discord or Slack user id.",
        examples=["123456789012345678", "U0123ABC", "987654@lid"],
        max_length=256,
    )

    @field_validator("phone_number")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return normalize_phone(value) if value is not None else None


class AccessRuleCreate(_Target):
    """A new rule: one of phone_number, sender_id or chat_id; `instance_name` null for a global rule (admin only)."""

    chat_id: str | None = Field(
        default=None,
        description="A group or channel: WhatsApp group JID, Discord channel or guild id, Slack channel id.",
        examples=["120363000000000001@g.us", "C0123ABC"],
        max_length=256,
    )
    rule_type: Literal["allow", "block"]
    instance_name: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _one_target(self) -> AccessRuleCreate:
        given = [name for name in ("phone_number", "sender_id", "chat_id") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of phone_number, sender_id or chat_id")
        return self


class AccessRuleOut(BaseModel):
    """A stored rule; `pattern` is the normalized id or prefix, repeated in the field that names its kind."""

    id: str
    instance_name: str | None = Field(description="Null for a global rule.")
    rule_type: Literal["allow", "block"]
    scope: Literal["sender", "chat"]
    pattern: str
    phone_number: str | None = None
    sender_id: str | None = None
    chat_id: str | None = None
    created_at: datetime | None = None


class AccessRuleList(BaseModel):
    """Rules, newest first."""

    rules: list[AccessRuleOut]


class AccessCheckRequest(_Target):
    """Which rule would apply to this sender (and chat) on this instance."""

    instance_name: str = Field(min_length=1, max_length=64)
    chat_id: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _one_sender(self) -> AccessCheckRequest:
        if bool(self.phone_number) == bool(self.sender_id):
            raise ValueError("give exactly one of phone_number or sender_id")
        return self


class AccessCheckOut(BaseModel):
    """The router's decision: `rule` is null when no rule matched and the instance's access_mode decided."""

    allowed: bool
    rule: AccessRuleOut | None
    reason: str
