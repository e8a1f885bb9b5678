"""Proto ↔ domain for what only the router has on the wire: instance changes (instances and messages go through
`servicekit.convert`)."""

from __future__ import annotations

from typing import TypeAlias

from omni.router.v1 import instance_pb2, router_service_pb2

from servicekit.convert import NO_SECRETS, SecretScope, instance_to_proto, timestamp
from services.router.core.models import ApiKey, InstanceChange

ChangeKind: TypeAlias = instance_pb2.InstanceChangeKind.ValueType

CHANGE_KINDS: dict[str, ChangeKind] = {
    "snapshot": instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT,
    "snapshot_done": instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT_DONE,
    "upserted": instance_pb2.INSTANCE_CHANGE_KIND_UPSERTED,
    "deleted": instance_pb2.INSTANCE_CHANGE_KIND_DELETED,
}


def change_to_proto(
    change: InstanceChange, secrets: SecretScope = NO_SECRETS
) -> tuple[instance_pb2.InstanceChangeKind.ValueType, instance_pb2.Instance | None]:
    """The kind and instance of a watch event, with the clear secrets the watcher uses (`secrets`)."""
    kind = CHANGE_KINDS[change.kind]
    if change.instance is not None:
        return kind, instance_to_proto(change.instance, with_secrets=secrets)
    if change.name:
        return kind, instance_pb2.Instance(name=change.name)
    return kind, None


def api_key_to_proto(key: ApiKey) -> router_service_pb2.ApiKey:
    """A scoped key's description (it holds no secret: only the prefix of the key); last_used_at unset when never."""
    proto = router_service_pb2.ApiKey(
        id=key.id, instance_name=key.instance_name, prefix=key.prefix, created_at=timestamp(key.created_at)
    )
    if key.last_used_at:
        proto.last_used_at.CopyFrom(timestamp(key.last_used_at))
    return proto
