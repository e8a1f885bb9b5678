"""AccessService over gRPC: who may manage which rule, pattern validation against the instance's channel, and the
cache refresh that makes a change apply at once on this replica (the others follow within a poll period)."""

from __future__ import annotations

import time
import uuid

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from omni.router.v1 import access_service_pb2, access_service_pb2_grpc

from servicekit.errors import FieldViolation, InvalidArgumentError, NotFoundError, PermissionDeniedError
from servicekit.principals import current_principal
from services.router.access_store import AccessRuleCache, AccessRuleRepository
from services.router.core.access import (
    RULE_ALLOW,
    RULE_BLOCK,
    SCOPE_CHAT,
    SCOPE_SENDER,
    Rule,
    normalize_pattern,
)
from services.router.core.ports import InstanceStore

Context = grpc.aio.ServicerContext[object, object]

_TYPES = {RULE_ALLOW: access_service_pb2.RULE_TYPE_ALLOW, RULE_BLOCK: access_service_pb2.RULE_TYPE_BLOCK}
_TYPE_NAMES = {value: name for name, value in _TYPES.items()}
_SCOPES = {SCOPE_SENDER: access_service_pb2.RULE_SCOPE_SENDER, SCOPE_CHAT: access_service_pb2.RULE_SCOPE_CHAT}
_SCOPE_NAMES = {value: name for name, value in _SCOPES.items()}
_SCOPE_NAMES[access_service_pb2.RULE_SCOPE_UNSPECIFIED] = SCOPE_SENDER


def rule_to_proto(rule: Rule) -> access_service_pb2.AccessRule:
    created = Timestamp()
    created.FromNanoseconds(int(rule.created_at * 1e9))
    return access_service_pb2.AccessRule(
        id=rule.id,
        instance_name=rule.instance_name,
        pattern=rule.pattern,
        rule_type=_TYPES[rule.rule_type],
        scope=_SCOPES[rule.scope],
        created_at=created,
    )


def _rule_not_found(rule_id: str) -> NotFoundError:
    return NotFoundError(f"access rule {rule_id!r} not found", reason="ACCESS_RULE_NOT_FOUND")


class AccessServicer(access_service_pb2_grpc.AccessServiceServicer):
    """Rules CRUD and CheckAccess; a scoped key reaches its own instance's rules only."""

    def __init__(self, *, rules: AccessRuleRepository, cache: AccessRuleCache, instances: InstanceStore) -> None:
        self._rules = rules
        self._cache = cache
        self._instances = instances

    async def ListRules(
        self, request: access_service_pb2.ListRulesRequest, context: Context
    ) -> access_service_pb2.ListRulesResponse:
        principal = current_principal()
        if principal.is_scoped:
            if request.instance_name:
                principal.require_instance(request.instance_name)
            rules = await self._rules.list(principal.instance_name)
        else:
            rules = await self._rules.list(request.instance_name or None)
        return access_service_pb2.ListRulesResponse(rules=[rule_to_proto(rule) for rule in rules])

    async def CreateRule(
        self, request: access_service_pb2.CreateRuleRequest, context: Context
    ) -> access_service_pb2.CreateRuleResponse:
        wanted = request.rule
        principal = current_principal()
        if not wanted.instance_name:
            if principal.is_scoped:
                raise PermissionDeniedError("a scoped API key cannot create global rules", reason="ADMIN_ONLY")
            channel = None
        else:
            principal.require_instance(wanted.instance_name)
            instance = await self._instances.get(wanted.instance_name)
            if instance is None:
                raise NotFoundError(f"instance {wanted.instance_name!r} not found", reason="INSTANCE_NOT_FOUND")
            channel = instance.channel
        rule_type = _TYPE_NAMES.get(wanted.rule_type)
        if rule_type is None:
            raise InvalidArgumentError(
                "rule_type must be allow or block", violations=[FieldViolation("rule_type", "must be allow or block")]
            )
        scope = _SCOPE_NAMES.get(wanted.scope)
        if scope is None:
            raise InvalidArgumentError(
                "scope must be sender or chat", violations=[FieldViolation("scope", "must be sender or chat")]
            )
        pattern = normalize_pattern(wanted.pattern, scope=scope, channel=channel, field="pattern")
        rule = Rule(uuid.uuid4().hex, wanted.instance_name, pattern, rule_type, scope, time.time())
        await self._rules.insert(rule)
        await self._cache.refresh()
        return access_service_pb2.CreateRuleResponse(rule=rule_to_proto(rule))

    async def DeleteRule(
        self, request: access_service_pb2.DeleteRuleRequest, context: Context
    ) -> access_service_pb2.DeleteRuleResponse:
        principal = current_principal()
        scope = request.instance_name or (principal.instance_name if principal.is_scoped else "")
        if scope:
            principal.require_instance(scope)
        rule = await self._rules.get(request.id)
        if rule is None or (scope and rule.instance_name and rule.instance_name != scope):
            raise _rule_not_found(request.id)
        if scope and not rule.instance_name:
            raise PermissionDeniedError("a scoped API key cannot delete global rules", reason="ADMIN_ONLY")
        if not await self._rules.delete(rule.id):
            raise _rule_not_found(request.id)
        await self._cache.refresh()
        return access_service_pb2.DeleteRuleResponse()

    async def CheckAccess(
        self, request: access_service_pb2.CheckAccessRequest, context: Context
    ) -> access_service_pb2.CheckAccessResponse:
        current_principal().require_instance(request.instance_name)
        if not request.sender_id.strip():
            raise InvalidArgumentError("sender_id is required", violations=[FieldViolation("sender_id", "is required")])
        instance = await self._instances.get(request.instance_name)
        if instance is None:
            raise NotFoundError(f"instance {request.instance_name!r} not found", reason="INSTANCE_NOT_FOUND")
        senders = _spellings(request.sender_id.strip())
        chats = [request.chat_id.strip()] if request.chat_id.strip() else []
        decision = self._cache.policy.decide(instance.name, instance.access_mode, senders, chats)
        answer = access_service_pb2.CheckAccessResponse(allowed=decision.allowed, reason=decision.reason)
        if decision.rule is not None:
            answer.rule.CopyFrom(rule_to_proto(decision.rule))
        return answer


def _spellings(sender_id: str) -> list[str]:
    """The identities a debug query names: the id as typed, and a phone number's or phone JID's "+digits" (what a
    WhatsApp message's sender carries besides its JID)."""
    found = [sender_id]
    user, _, server = sender_id.partition("@")
    user = user.split(":", 1)[0]
    if server in ("s.whatsapp.net", "c.us") and user.isdigit():
        found.append("+" + user)
    elif not server and sender_id.lstrip("+").replace(" ", "").replace("-", "").isdigit() and sender_id[:1] == "+":
        found.append("+" + "".join(ch for ch in sender_id if ch.isdigit()))
    return list(dict.fromkeys(found))
