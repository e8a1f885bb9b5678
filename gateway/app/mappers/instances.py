"""Instance JSON <-> omni.router.v1.Instance.

The JSON names follow the public contract (`channel_type`, `agent_timeout`, `discord_bot_token`); the proto keeps
each channel's fields in its arm of `channel_config` (`discord.bot_token`), mapped through the public names the
channel configs declare (`servicekit.instances`). Secrets travel to the router in `SecretValue.value` and come back
only as `is_set` + `hint`: the clear value is never read here, even if a peer sent it by mistake.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from omni.common.v1 import channel_pb2
from omni.router.v1 import instance_pb2

from gateway.app.mappers.timestamps import to_datetime
from gateway.app.schemas.instances import SECRET_FIELDS, InstanceCreate, InstanceOut, InstanceUpdate
from servicekit.channels import TRAITS, Channel
from servicekit.instances import CONFIG_TYPES, public_fields

CHANNEL_BY_NAME = {
    "whatsapp": channel_pb2.CHANNEL_WHATSAPP,
    "discord": channel_pb2.CHANNEL_DISCORD,
    "slack": channel_pb2.CHANNEL_SLACK,
}
NAME_BY_CHANNEL = {value: name for name, value in CHANNEL_BY_NAME.items()}

_PROTO_NAME = {"channel_type": "channel", "agent_timeout": "agent_timeout_seconds"}
"""JSON field -> proto field where the two differ (top-level fields)."""

CHANNEL_FIELD_PATHS = {public: (channel.value, name) for public, (channel, name) in public_fields().items()}
"""Public channel field -> (config arm, field), e.g. discord_bot_token -> (discord, bot_token)."""

_PLAIN_STRINGS = (
    "agent_api_url",
    "default_agent",
    "automagik_instance_id",
    "automagik_instance_name",
    "fallback_text",
    "transcription_url",
    "transcription_model",
    "blocked_text",
    "session_id_prefix",
)

WEBHOOK_PATHS = {
    channel.value: f"/api/v1/webhook/{traits.webhook_segment}/{{name}}"
    for channel, traits in TRAITS.items()
    if traits.webhook_segment
}
"""Where each webhook channel posts its events (Discord's bot receives them itself)."""


WEBHOOK_AUTH_BY_NAME = {"secret": instance_pb2.WEBHOOK_AUTH_SECRET, "none": instance_pb2.WEBHOOK_AUTH_NONE}


def channel_name(channel: channel_pb2.Channel.ValueType) -> str:
    """The contract's channel_type for a proto Channel ("unspecified" if the router sent none)."""
    return NAME_BY_CHANNEL.get(channel, "unspecified")


def _set_field(instance: instance_pb2.Instance, field: str, value: Any) -> str:
    """Write one JSON field into the proto; returns the proto field path (the update_mask path)."""
    target: Any = instance
    name = _PROTO_NAME.get(field, field)
    path = name
    if field in CHANNEL_FIELD_PATHS:
        arm, name = CHANNEL_FIELD_PATHS[field]
        target = getattr(instance, arm)
        target.SetInParent()
        path = f"{arm}.{name}"
    if field in SECRET_FIELDS:
        secret = getattr(target, name)
        secret.value = value or ""
        secret.is_set = bool(value)
    elif field == "channel_type":
        instance.channel = CHANNEL_BY_NAME[value]
    elif field == "webhook_auth":
        instance.webhook_auth = WEBHOOK_AUTH_BY_NAME.get(value or "secret", instance_pb2.WEBHOOK_AUTH_SECRET)
    elif field in ("group_reply", "access_mode"):
        setattr(instance, field, value or "")
    elif field == "agent_max_attempts":
        instance.agent_max_attempts = value or 0
    elif field in _PLAIN_STRINGS or field in CHANNEL_FIELD_PATHS:
        setattr(target, name, value or "")
    else:
        setattr(target, name, value)
    return path


def create_to_proto(body: InstanceCreate) -> instance_pb2.Instance:
    """The Instance a CreateInstance call carries (the channel's arm set even when none of its fields is)."""
    instance = instance_pb2.Instance(name=body.name)
    getattr(instance, body.channel_type).SetInParent()
    for field, value in body.model_dump(exclude={"name"}).items():
        if value is None and field in CHANNEL_FIELD_PATHS:
            continue
        _set_field(instance, field, value)
    return instance


def update_to_proto(name: str, body: InstanceUpdate) -> tuple[instance_pb2.Instance, FieldMask]:
    """The Instance and update_mask of an UpdateInstance call: only the fields present in the body."""
    instance = instance_pb2.Instance(name=name)
    paths = [_set_field(instance, field, getattr(body, field)) for field in sorted(body.model_fields_set - {"name"})]
    return instance, FieldMask(paths=paths)


def _hint(secret: instance_pb2.SecretValue) -> str | None:
    if not secret.is_set:
        return None
    return secret.hint or "****"


def instance_out(instance: instance_pb2.Instance, base_url: str) -> InstanceOut:
    """The API view of an instance: masked secrets, has_<secret> flags, ISO times and the webhook URL."""
    values: dict[str, Any] = {field: getattr(instance, field) or None for field in _PLAIN_STRINGS}
    for field in ("agent_api_key", "webhook_secret", "agent_signing_secret", "transcription_api_key"):
        values[field] = _hint(getattr(instance, field))
        values[f"has_{field}"] = getattr(instance, field).is_set
    arm = instance.WhichOneof("channel_config")
    if arm is not None:
        config = getattr(instance, arm)
        for field, (field_arm, name) in CHANNEL_FIELD_PATHS.items():
            if field_arm != arm:
                continue
            if name in CONFIG_TYPES[Channel(arm)].SECRETS:
                values[field] = _hint(getattr(config, name))
                values[f"has_{field}"] = getattr(config, name).is_set
            else:
                values[field] = getattr(config, name) or None
    channel_type = channel_name(instance.channel)
    path = WEBHOOK_PATHS.get(channel_type)
    return InstanceOut(
        name=instance.name,
        channel_type=channel_type,
        agent_timeout=instance.agent_timeout_seconds or 60,
        enable_auto_split=instance.enable_auto_split,
        is_active=instance.is_active,
        webhook_url=base_url.rstrip("/") + path.format(name=instance.name) if path else None,
        webhook_auth="none" if instance.webhook_auth == instance_pb2.WEBHOOK_AUTH_NONE else "secret",
        group_reply=instance.group_reply if instance.group_reply in ("all", "never") else "mention",
        access_mode="allowlist" if instance.access_mode == "allowlist" else "open",
        agent_max_attempts=instance.agent_max_attempts,
        id=instance.id or None,
        created_at=to_datetime(instance.created_at),
        updated_at=to_datetime(instance.updated_at),
        **values,
    )
