"""Proto ↔ domain for what only the router has on the wire: instance changes (instances and messages go through
`servicekit.convert`)."""

from __future__ import annotations

from typing import TypeAlias

from omni.router.v1 import instance_pb2

from servicekit.convert import instance_to_proto
from services.router.core.models import InstanceChange

ChangeKind: TypeAlias = instance_pb2.InstanceChangeKind.ValueType

CHANGE_KINDS: dict[str, ChangeKind] = {
    "snapshot": instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT,
    "snapshot_done": instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT_DONE,
    "upserted": instance_pb2.INSTANCE_CHANGE_KIND_UPSERTED,
    "deleted": instance_pb2.INSTANCE_CHANGE_KIND_DELETED,
}


def change_to_proto(
    change: InstanceChange,
) -> tuple[instance_pb2.InstanceChangeKind.ValueType, instance_pb2.Instance | None]:
    """The kind and instance of a watch event (secrets included: watchers talk to channels and agents)."""
    kind = CHANGE_KINDS[change.kind]
    if change.instance is not None:
        return kind, instance_to_proto(change.instance, with_secrets=True)
    if change.name:
        return kind, instance_pb2.Instance(name=change.name)
    return kind, None
