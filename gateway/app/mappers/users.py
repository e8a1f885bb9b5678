"""omni.router.v1 User / Session -> user and session JSON."""

from __future__ import annotations

from omni.router.v1 import users_service_pb2

from gateway.app.mappers.timestamps import to_datetime
from gateway.app.schemas.users import ExternalIdOut, SessionOut, UserOut


def session_out(session: users_service_pb2.Session) -> SessionOut:
    """A session; the agent's own ids are null until an agent returned some."""
    return SessionOut(
        id=session.id,
        instance_name=session.instance_name,
        chat_id=session.chat_id,
        channel=session.channel,
        session_name=session.session_name,
        user_id=session.user_id,
        created_at=to_datetime(session.create_time),
        last_message_at=to_datetime(session.last_message_time),
        message_count=session.message_count,
        agent_session_id=session.agent_session_id or None,
        agent_user_id=session.agent_user_id or None,
    )


def user_out(user: users_service_pb2.User, *, detail: bool) -> UserOut:
    """A user; with `detail`, its external ids and sessions too (a list shows neither, to stay one query)."""
    return UserOut(
        id=user.id,
        instance_name=user.instance_name,
        channel=user.channel,
        identity=user.identity,
        display_name=user.display_name or None,
        phone_number=user.phone_number or None,
        first_seen_at=to_datetime(user.first_seen_time),
        last_seen_at=to_datetime(user.last_seen_time),
        message_count=user.message_count,
        external_ids=[
            ExternalIdOut(instance_name=e.instance_name, channel=e.channel, external_id=e.external_id)
            for e in user.external_ids
        ]
        if detail
        else None,
        sessions=[session_out(s) for s in user.sessions] if detail else None,
    )
