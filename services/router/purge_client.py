"""The `InstancePurger` the core uses: PurgeInstance on ingress, channels and tracing over gRPC.

Deleting an instance must delete its data in every service (DESIGN.md, Tenancy): otherwise a new instance of the
same name would see the old one's dead letters and traces, and its first messages would be taken for duplicates of
the old one's. The three calls run at once; a failure of any is reported with the names of the services that failed,
and the caller keeps the instance so the delete can be retried (each purge is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc
from omni.ingress.v1 import ingress_service_pb2, ingress_service_pb2_grpc
from omni.tracing.v1 import tracing_service_pb2, tracing_service_pb2_grpc

from servicekit.errors import OmniError, UnavailableError
from servicekit.grpc_clients import call

log = logging.getLogger(__name__)


class GrpcInstancePurger:
    """Asks every service that keeps per-instance rows to delete them."""

    def __init__(
        self,
        *,
        ingress: ingress_service_pb2_grpc.IngressServiceAsyncStub,
        channels: channels_service_pb2_grpc.ChannelsServiceAsyncStub,
        tracing: tracing_service_pb2_grpc.TracingServiceAsyncStub,
        timeout: float = 30.0,
    ) -> None:
        self._timeout = timeout
        self._purges: dict[str, Callable[[str], Awaitable[Any]]] = {
            "ingress": lambda name: call(
                ingress.PurgeInstance, ingress_service_pb2.PurgeInstanceRequest(instance_name=name), timeout=timeout
            ),
            "channels": lambda name: call(
                channels.PurgeInstance, channels_service_pb2.PurgeInstanceRequest(instance_name=name), timeout=timeout
            ),
            "tracing": lambda name: call(
                tracing.PurgeInstance, tracing_service_pb2.PurgeInstanceRequest(instance_name=name), timeout=timeout
            ),
        }

    async def purge(self, instance_name: str) -> int:
        services = list(self._purges)
        outcomes = await asyncio.gather(
            *(self._purges[service](instance_name) for service in services), return_exceptions=True
        )
        deleted = 0
        failed: list[str] = []
        for service, outcome in zip(services, outcomes, strict=True):
            if isinstance(outcome, OmniError):
                failed.append(f"{service} ({outcome.message})")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                deleted += int(outcome.deleted_rows)
        if failed:
            raise UnavailableError(
                f"the data of instance {instance_name!r} could not be deleted in {', '.join(failed)}; "
                "the instance is kept, retry the delete",
                retry_after=1.0,
            )
        log.info("purged %d rows of instance %s", deleted, instance_name)
        return deleted
