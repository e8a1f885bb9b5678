"""Access rules: /api/v1/access/rules and /api/v1/access/check, backed by the router's AccessService.

The router sees the gateway, not the REST caller, so the caller's scope is enforced here: a key scoped to one
instance lists, creates, deletes and checks that instance's rules only (another instance is a 404, as for a missing
one; a global rule is the operator's: 403).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from omni.router.v1 import access_service_pb2

from gateway.app.api.deps import AccessStubDep, PrincipalDep, SettingsDep, scoped_instance_filter
from gateway.app.api.rpc import call
from gateway.app.mappers.access import check_out, rule_out, rule_to_proto
from gateway.app.schemas.access import (
    AccessCheckOut,
    AccessCheckRequest,
    AccessRuleCreate,
    AccessRuleList,
    AccessRuleOut,
)
from servicekit.errors import PermissionDeniedError

router = APIRouter(prefix="/access", tags=["access"])


@router.get("/rules", response_model=AccessRuleList)
async def list_rules(
    stub: AccessStubDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    instance_name: str | None = Query(default=None, description="Only this instance's rules (not the global ones)."),
) -> AccessRuleList:
    """Rules, newest first: every rule for the admin (or one instance's), the key's own instance's for a scoped
    key."""
    answer = await call(
        stub.ListRules,
        access_service_pb2.ListRulesRequest(instance_name=scoped_instance_filter(principal, instance_name)),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return AccessRuleList(rules=[rule_out(rule) for rule in answer.rules])


@router.post("/rules", status_code=201, response_model=AccessRuleOut)
async def create_rule(
    body: AccessRuleCreate, stub: AccessStubDep, settings: SettingsDep, principal: PrincipalDep
) -> AccessRuleOut:
    """Create a rule; every router applies it within a second. 422 when the id is not one the instance's channel
    uses, 404 for an unknown instance, 403 for a global rule with a scoped key."""
    if body.instance_name:
        principal.require_instance(body.instance_name)
    elif principal.is_scoped:
        raise PermissionDeniedError("a scoped API key cannot create global rules", reason="ADMIN_ONLY")
    answer = await call(
        stub.CreateRule,
        access_service_pb2.CreateRuleRequest(rule=rule_to_proto(body)),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return rule_out(answer.rule)


@router.delete("/rules/{rule_id}", status_code=204, response_class=Response)
async def delete_rule(rule_id: str, stub: AccessStubDep, settings: SettingsDep, principal: PrincipalDep) -> Response:
    """Delete a rule. 404 when there is none (or it is another instance's, for a scoped key), 403 for a global rule
    with a scoped key."""
    await call(
        stub.DeleteRule,
        access_service_pb2.DeleteRuleRequest(
            id=rule_id, instance_name=principal.instance_name if principal.is_scoped else ""
        ),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return Response(status_code=204)


@router.post("/check", response_model=AccessCheckOut)
async def check_access(
    body: AccessCheckRequest, stub: AccessStubDep, settings: SettingsDep, principal: PrincipalDep
) -> AccessCheckOut:
    """Which rule would apply to a sender (and chat) on an instance, and whether the message would reach the agent:
    for debugging rules. 404 for an unknown instance."""
    principal.require_instance(body.instance_name)
    answer = await call(
        stub.CheckAccess,
        access_service_pb2.CheckAccessRequest(
            instance_name=body.instance_name,
            sender_id=body.phone_number or body.sender_id or "",
            chat_id=body.chat_id or "",
        ),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return check_out(answer)
