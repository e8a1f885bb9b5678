"""The `ChannelMedia` the router core uses: channels' FetchMedia over gRPC (a received file downloaded again from
the channel, for WhatsApp messages whose webhook carried no bytes)."""

from __future__ import annotations

from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc

from servicekit.grpc_clients import call
from services.router.core.ports import MediaFile


class GrpcChannelMedia:
    """Downloads received files through ChannelsService.FetchMedia, each call under its own deadline (a 16 MiB
    file is fetched from WhatsApp and decrypted by Evolution before it comes back)."""

    def __init__(self, stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, *, timeout: float = 90.0) -> None:
        self._stub = stub
        self._timeout = timeout

    async def fetch(self, instance_name: str, channel_message_id: str, chat_id: str, max_bytes: int) -> MediaFile:
        request = channels_service_pb2.FetchMediaRequest(
            instance_name=instance_name, channel_message_id=channel_message_id, chat_id=chat_id, max_bytes=max_bytes
        )
        answer = await call(self._stub.FetchMedia, request, timeout=self._timeout)
        return MediaFile(data=answer.data, mime_type=answer.mime_type, filename=answer.filename)
