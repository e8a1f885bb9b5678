"""AccessService messages <-> REST bodies."""

from __future__ import annotations

from typing import Literal

from omni.router.v1 import access_service_pb2

from gateway.app.mappers.timestamps import to_datetime
from gateway.app.schemas.access import AccessCheckOut, AccessRuleCreate, AccessRuleOut

_TYPES: dict[str, access_service_pb2.RuleType.ValueType] = {
    "allow": access_service_pb2.RULE_TYPE_ALLOW,
    "block": access_service_pb2.RULE_TYPE_BLOCK,
}
_TYPE_NAMES: dict[int, Literal["allow", "block"]] = {
    access_service_pb2.RULE_TYPE_ALLOW: "allow",
    access_service_pb2.RULE_TYPE_BLOCK: "block",
}


def rule_to_proto(body: AccessRuleCreate) -> access_service_pb2.AccessRule:
    """The rule to create: a chat_id makes a chat rule, a phone_number or sender_id a sender rule."""
    if body.chat_id:
        scope, pattern = access_service_pb2.RULE_SCOPE_CHAT, body.chat_id
    else:
        scope, pattern = access_service_pb2.RULE_SCOPE_SENDER, body.phone_number or body.sender_id or ""
    return access_service_pb2.AccessRule(
        instance_name=body.instance_name or "", pattern=pattern, rule_type=_TYPES[body.rule_type], scope=scope
    )


def rule_out(rule: access_service_pb2.AccessRule) -> AccessRuleOut:
    """A rule as listed; a sender pattern starting with "+" is a phone number."""
    is_chat = rule.scope == access_service_pb2.RULE_SCOPE_CHAT
    is_phone = not is_chat and rule.pattern.startswith("+")
    return AccessRuleOut(
        id=rule.id,
        instance_name=rule.instance_name or None,
        rule_type=_TYPE_NAMES.get(rule.rule_type, "block"),
        scope="chat" if is_chat else "sender",
        pattern=rule.pattern,
        phone_number=rule.pattern if is_phone else None,
        sender_id=None if is_chat else rule.pattern,
        chat_id=rule.pattern if is_chat else None,
        created_at=to_datetime(rule.created_at),
    )


def check_out(answer: access_service_pb2.CheckAccessResponse) -> AccessCheckOut:
    """The decision, with the rule that made it (null when the access mode did)."""
    return AccessCheckOut(
        allowed=answer.allowed, rule=rule_out(answer.rule) if answer.HasField("rule") else None, reason=answer.reason
    )
