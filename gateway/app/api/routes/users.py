"""Users and sessions: GET /api/v1/users, /users/{id}, POST /users/{id}/link, DELETE /users/{id}, GET /sessions,
/sessions/{id} and POST /sessions/{id}/reset, backed by the router's UsersService.

A scoped key sees the users and sessions of its instance only (another's answer 404, from the router, which holds
the rows and so decides); linking users of two instances is for the admin key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from omni.router.v1 import users_service_pb2

from gateway.app.api.deps import PrincipalDep, SettingsDep, UsersStubDep, scoped_instance_filter
from gateway.app.api.rpc import call
from gateway.app.mappers.users import session_out, user_out
from gateway.app.schemas.common import PAGE_MAX
from gateway.app.schemas.users import LinkIn, SessionList, SessionOut, UserErasureOut, UserList, UserOut
from servicekit.principals import Principal

router = APIRouter(tags=["users"])

FilterText = Annotated[str | None, Query(max_length=256)]
Page = Annotated[int, Query(ge=1, le=PAGE_MAX)]
PageSize = Annotated[int, Query(ge=1, le=500)]


def _token(page: int, page_size: int) -> str:
    """The router's page token (an offset) for a 1-based page number."""
    return str((page - 1) * page_size) if page > 1 else ""


def _scope(principal: Principal) -> str:
    """The instance the router must hold a by-id request to: the scoped key's, or "" for the admin."""
    return principal.instance_name if principal.is_scoped else ""


@router.get("/users", response_model=UserList, response_model_exclude_none=True)
async def list_users(
    stub: UsersStubDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    instance_name: FilterText = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
    external_id: FilterText = None,
    search: Annotated[str | None, Query(max_length=200, description="Part of the name or phone number")] = None,
    page: Page = 1,
    page_size: PageSize = 50,
) -> UserList:
    """Users, most recently seen first, filtered by instance, channel, external id and name/phone search."""
    answer = await call(
        stub.ListUsers,
        users_service_pb2.ListUsersRequest(
            instance_name=scoped_instance_filter(principal, instance_name),
            channel=(channel or "").strip().lower(),
            external_id=external_id or "",
            search=search or "",
            page_size=page_size,
            page_token=_token(page, page_size),
        ),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return UserList(
        users=[user_out(u, detail=False) for u in answer.users],
        page=page,
        page_size=page_size,
        total_count=answer.total_count,
    )


@router.get("/users/{user_id}", response_model=UserOut, response_model_exclude_none=True)
async def get_user(user_id: str, stub: UsersStubDep, settings: SettingsDep, principal: PrincipalDep) -> UserOut:
    """A user with their external ids, sessions, first/last seen and message count. 404 unknown."""
    answer = await call(
        stub.GetUser,
        users_service_pb2.GetUserRequest(user_id=user_id, instance_name=_scope(principal)),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return user_out(answer.user, detail=True)


@router.post("/users/{user_id}/link", response_model=UserOut, response_model_exclude_none=True)
async def link_users(
    user_id: str, body: LinkIn, stub: UsersStubDep, settings: SettingsDep, principal: PrincipalDep
) -> UserOut:
    """Merge the user in the body into this one: the agent then gets this user_id for both. 404 unknown, 400 the
    same user; with a scoped key, a user of another instance is 404 (it does not exist for the key)."""
    answer = await call(
        stub.LinkUsers,
        users_service_pb2.LinkUsersRequest(
            user_id=user_id, other_user_id=body.user_id, instance_name=_scope(principal)
        ),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return user_out(answer.user, detail=True)


@router.delete("/users/{user_id}", response_model=UserErasureOut)
async def delete_user(
    user_id: str, stub: UsersStubDep, settings: SettingsDep, principal: PrincipalDep
) -> UserErasureOut:
    """Erase a person: user, ids, sessions, their traces and inbox copies. 404 unknown; 503 when a service could
    not erase its part (the user is kept: repeat the call)."""
    answer = await call(
        stub.DeleteUser,
        users_service_pb2.DeleteUserRequest(user_id=user_id, instance_name=_scope(principal)),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return UserErasureOut(
        user_id=user_id,
        sessions_deleted=answer.sessions_deleted,
        traces_deleted=answer.traces_deleted,
        inbox_messages_deleted=answer.inbox_messages_deleted,
    )


@router.get("/sessions", response_model=SessionList, response_model_exclude_none=True)
async def list_sessions(
    stub: UsersStubDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    instance_name: FilterText = None,
    user_id: FilterText = None,
    page: Page = 1,
    page_size: PageSize = 50,
) -> SessionList:
    """Sessions, most recent message first, filtered by instance and user."""
    answer = await call(
        stub.ListSessions,
        users_service_pb2.ListSessionsRequest(
            instance_name=scoped_instance_filter(principal, instance_name),
            user_id=user_id or "",
            page_size=page_size,
            page_token=_token(page, page_size),
        ),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return SessionList(
        sessions=[session_out(s) for s in answer.sessions],
        page=page,
        page_size=page_size,
        total_count=answer.total_count,
    )


@router.get("/sessions/{session_id}", response_model=SessionOut, response_model_exclude_none=True)
async def get_session(
    session_id: str, stub: UsersStubDep, settings: SettingsDep, principal: PrincipalDep
) -> SessionOut:
    """One session. 404 unknown."""
    answer = await call(
        stub.GetSession,
        users_service_pb2.GetSessionRequest(session_id=session_id, instance_name=_scope(principal)),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return session_out(answer.session)


@router.post("/sessions/{session_id}/reset", response_model=SessionOut, response_model_exclude_none=True)
async def reset_session(
    session_id: str, stub: UsersStubDep, settings: SettingsDep, principal: PrincipalDep
) -> SessionOut:
    """Start a new agent session for the chat: the session gets a new id (in the answer), which the next message
    carries to the agent. 404 unknown."""
    answer = await call(
        stub.ResetSession,
        users_service_pb2.ResetSessionRequest(session_id=session_id, instance_name=_scope(principal)),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return session_out(answer.session)
