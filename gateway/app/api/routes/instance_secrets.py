"""Secret rotation: /api/v1/instances/{name}/webhook-secret/rotate and .../agent-signing-secret/rotate.

Each answers the new secret once (the router stores it encrypted and never returns it again). A rotated webhook
secret is registered with the channel where Omni configures it (Evolution), and the old one keeps working for 24 hours
so deliveries already on their way, or a channel configured by hand, do not fail during the switch.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from omni.router.v1 import router_service_pb2
from pydantic import BaseModel, Field

from gateway.app.api.deps import AdminOnly, RouterStubDep, SettingsDep
from gateway.app.api.rpc import call
from gateway.app.mappers.timestamps import to_datetime

router = APIRouter(prefix="/instances", tags=["instances"], dependencies=[AdminOnly])


class WebhookSecretOut(BaseModel):
    """A new webhook secret, shown once."""

    webhook_secret: str
    previous_valid_until: datetime | None = Field(
        default=None, description="When the replaced secret stops being accepted (null when there was none)."
    )


class AgentSigningSecretOut(BaseModel):
    """A new agent signing secret (whsec_...), shown once."""

    agent_signing_secret: str


@router.post("/{name}/webhook-secret/rotate", response_model=WebhookSecretOut)
async def rotate_webhook_secret(name: str, stub: RouterStubDep, settings: SettingsDep) -> WebhookSecretOut:
    """Give the instance a new webhook secret; the old one is accepted for 24 hours more."""
    answer = await call(
        stub.RotateWebhookSecret,
        router_service_pb2.RotateWebhookSecretRequest(instance_name=name),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return WebhookSecretOut(
        webhook_secret=answer.webhook_secret, previous_valid_until=to_datetime(answer.previous_valid_until)
    )


@router.post("/{name}/agent-signing-secret/rotate", response_model=AgentSigningSecretOut)
async def rotate_agent_signing_secret(name: str, stub: RouterStubDep, settings: SettingsDep) -> AgentSigningSecretOut:
    """Give the instance a new agent signing secret; agent calls are signed with it at once."""
    answer = await call(
        stub.RotateAgentSigningSecret,
        router_service_pb2.RotateAgentSigningSecretRequest(instance_name=name),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return AgentSigningSecretOut(agent_signing_secret=answer.agent_signing_secret)
