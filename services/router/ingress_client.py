"""The `StoredMedia` the router core uses: ingress's GetMedia over gRPC (the files ingress kept apart from the
inbox rows, named by `Media.blob_id`)."""

from __future__ import annotations

from omni.ingress.v1 import ingress_service_pb2, ingress_service_pb2_grpc

from servicekit.grpc_clients import call
from services.router.core.ports import MediaFile


class GrpcStoredMedia:
    """Reads stored files from IngressService.GetMedia, each call under its own deadline."""

    def __init__(self, stub: ingress_service_pb2_grpc.IngressServiceAsyncStub, *, timeout: float = 30.0) -> None:
        self._stub = stub
        self._timeout = timeout

    async def get(self, instance_name: str, blob_id: str) -> MediaFile:
        request = ingress_service_pb2.GetMediaRequest(instance_name=instance_name, blob_id=blob_id)
        answer = await call(self._stub.GetMedia, request, timeout=self._timeout)
        return MediaFile(data=answer.data, mime_type=answer.mime_type)
