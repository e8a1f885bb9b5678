"""UsersService over gRPC (a thin adapter of `core.users`), and the gRPC adapter that erases a person's messages in
tracing and ingress when a user is deleted."""

from __future__ import annotations

import grpc
from omni.ingress.v1 import ingress_service_pb2, ingress_service_pb2_grpc
from omni.router.v1 import users_service_pb2, users_service_pb2_grpc
from omni.tracing.v1 import tracing_service_pb2, tracing_service_pb2_grpc

from servicekit.convert import timestamp
from servicekit.grpc_clients import call
from servicekit.principals import Principal, current_principal
from services.router.core.users import (
    SessionRecord,
    UserFilter,
    UserRecord,
    UsersService,
    next_token,
    parse_page,
)

Context = grpc.aio.ServicerContext[object, object]


def session_to_proto(session: SessionRecord) -> users_service_pb2.Session:
    return users_service_pb2.Session(
        id=session.id,
        instance_name=session.instance_name,
        chat_id=session.chat_id,
        channel=session.channel,
        session_name=session.session_name,
        user_id=session.user_id,
        create_time=timestamp(session.created_at),
        last_message_time=timestamp(session.last_message_at),
        message_count=session.message_count,
        agent_session_id=session.agent_session_id,
        agent_user_id=session.agent_user_id,
    )


def user_to_proto(user: UserRecord) -> users_service_pb2.User:
    return users_service_pb2.User(
        id=user.id,
        instance_name=user.instance_name,
        channel=user.channel,
        identity=user.identity,
        display_name=user.display_name,
        phone_number=user.phone_number,
        first_seen_time=timestamp(user.created_at),
        last_seen_time=timestamp(user.last_seen_at),
        message_count=user.message_count,
        external_ids=[
            users_service_pb2.ExternalId(instance_name=e.instance_name, channel=e.channel, external_id=e.external_id)
            for e in user.external_ids
        ],
        sessions=[session_to_proto(s) for s in user.sessions],
    )


def _caller(instance_name: str) -> Principal:
    """The caller, narrowed to `instance_name` when the request names one (the gateway's scoped-key callers)."""
    caller = current_principal()
    if not instance_name or caller.is_scoped:
        return caller  # a scoped key keeps its own scope; naming another instance then finds nothing
    return Principal("scoped", service=caller.service, instance_name=instance_name)


class UsersServicer(users_service_pb2_grpc.UsersServiceServicer):
    """Domain errors raised by the core are mapped to statuses by the server's interceptor."""

    def __init__(self, users: UsersService) -> None:
        self._users = users

    async def ListUsers(
        self, request: users_service_pb2.ListUsersRequest, context: Context
    ) -> users_service_pb2.ListUsersResponse:
        page = parse_page(request.page_size, request.page_token)
        where = UserFilter(request.instance_name, request.channel, request.external_id, request.search)
        users, total = await self._users.list_users(current_principal(), where, page)
        return users_service_pb2.ListUsersResponse(
            users=[user_to_proto(u) for u in users],
            next_page_token=next_token(page, len(users), total),
            total_count=total,
        )

    async def GetUser(
        self, request: users_service_pb2.GetUserRequest, context: Context
    ) -> users_service_pb2.GetUserResponse:
        user = await self._users.get_user(_caller(request.instance_name), request.user_id)
        return users_service_pb2.GetUserResponse(user=user_to_proto(user))

    async def LinkUsers(
        self, request: users_service_pb2.LinkUsersRequest, context: Context
    ) -> users_service_pb2.LinkUsersResponse:
        user = await self._users.link_users(_caller(request.instance_name), request.user_id, request.other_user_id)
        return users_service_pb2.LinkUsersResponse(user=user_to_proto(user))

    async def DeleteUser(
        self, request: users_service_pb2.DeleteUserRequest, context: Context
    ) -> users_service_pb2.DeleteUserResponse:
        erased = await self._users.delete_user(_caller(request.instance_name), request.user_id)
        return users_service_pb2.DeleteUserResponse(
            sessions_deleted=erased.sessions_deleted,
            traces_deleted=erased.traces_deleted,
            inbox_messages_deleted=erased.inbox_messages_deleted,
        )

    async def ListSessions(
        self, request: users_service_pb2.ListSessionsRequest, context: Context
    ) -> users_service_pb2.ListSessionsResponse:
        page = parse_page(request.page_size, request.page_token)
        sessions, total = await self._users.list_sessions(
            current_principal(), request.instance_name, request.user_id, page
        )
        return users_service_pb2.ListSessionsResponse(
            sessions=[session_to_proto(s) for s in sessions],
            next_page_token=next_token(page, len(sessions), total),
            total_count=total,
        )

    async def GetSession(
        self, request: users_service_pb2.GetSessionRequest, context: Context
    ) -> users_service_pb2.GetSessionResponse:
        session = await self._users.get_session(_caller(request.instance_name), request.session_id)
        return users_service_pb2.GetSessionResponse(session=session_to_proto(session))

    async def ResetSession(
        self, request: users_service_pb2.ResetSessionRequest, context: Context
    ) -> users_service_pb2.ResetSessionResponse:
        session = await self._users.reset_session(_caller(request.instance_name), request.session_id)
        return users_service_pb2.ResetSessionResponse(session=session_to_proto(session))


class GrpcUserEraser:
    """EraseSender on tracing and EraseUser on ingress: the parts of a person's data other services hold."""

    def __init__(
        self,
        *,
        tracing: tracing_service_pb2_grpc.TracingServiceAsyncStub,
        ingress: ingress_service_pb2_grpc.IngressServiceAsyncStub,
        timeout: float = 30.0,
    ) -> None:
        self._tracing = tracing
        self._ingress = ingress
        self._timeout = timeout

    async def erase_traces(self, instance_name: str, sender_ids: list[str], session_ids: list[str]) -> int:
        request = tracing_service_pb2.EraseSenderRequest(
            instance_name=instance_name, sender_ids=sender_ids, session_ids=session_ids
        )
        response = await call(self._tracing.EraseSender, request, timeout=self._timeout)
        return int(response.traces_deleted)

    async def erase_inbox(self, instance_name: str, chat_ids: list[str], sender_ids: list[str]) -> int:
        request = ingress_service_pb2.EraseUserRequest(
            instance_name=instance_name, chat_ids=chat_ids, sender_ids=sender_ids
        )
        response = await call(self._ingress.EraseUser, request, timeout=self._timeout)
        return int(response.messages_deleted)
