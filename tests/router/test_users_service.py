"""UsersService on real rows (SQLite and PostgreSQL): messages routed by the real router create the users and
sessions; list, get, link, delete and reset then run over gRPC, and merge and erase leave no orphan and touch no
other user's data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from omni.router.v1 import router_service_pb2, users_service_pb2, users_service_pb2_grpc

from servicekit.errors import NotFoundError, UnavailableError
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import bind, new_server
from servicekit.principals import ADMIN, Principal
from services.router.core.models import Person
from services.router.core.users import Page, UserFilter, UsersService
from services.router.storage import IdentityRepository
from services.router.users_servicer import UsersServicer
from services.router.users_store import UsersRepository
from tests.router.conftest import Harness, inbound, whatsapp_instance

MARIA = "5511999990001@s.whatsapp.net"
MARIA_LID = "123456789012345@lid"
JOAO = "5511999990002@s.whatsapp.net"
GROUP = "120363000000000001@g.us"


@dataclass
class RecordingEraser:
    """Stands in for tracing and ingress: keeps what each was asked to erase, and can fail like a service down."""

    traces: list[tuple[str, list[str], list[str]]] = field(default_factory=list)
    inbox: list[tuple[str, list[str], list[str]]] = field(default_factory=list)
    down: bool = False

    async def erase_traces(self, instance_name: str, sender_ids: list[str], session_ids: list[str]) -> int:
        if self.down:
            raise UnavailableError("tracing is down")
        self.traces.append((instance_name, sorted(sender_ids), sorted(session_ids)))
        return 2

    async def erase_inbox(self, instance_name: str, chat_ids: list[str], sender_ids: list[str]) -> int:
        self.inbox.append((instance_name, sorted(chat_ids), sorted(sender_ids)))
        return 1


@dataclass
class Users:
    stub: users_service_pb2_grpc.UsersServiceAsyncStub
    service: UsersService
    eraser: RecordingEraser


@pytest.fixture
async def users(harness: Harness) -> AsyncIterator[Users]:
    # The router's identity cache is told about merges and erasures, as in the router process (__main__.py).
    identities = harness.router._identities
    eraser = RecordingEraser()
    service = UsersService(
        UsersRepository(harness.db, forget_ids=identities.forget_ids),  # type: ignore[attr-defined]
        eraser,
        clock=lambda: 1_900_000_000.0,
    )
    server = new_server("router", tracing=False)
    users_service_pb2_grpc.add_UsersServiceServicer_to_server(UsersServicer(service), server)
    port = bind(server, "127.0.0.1", 0)
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", tracing=False)
    try:
        yield Users(users_service_pb2_grpc.UsersServiceStub(channel), service, eraser)
    finally:
        await channel.close(None)
        await server.stop(None)


async def create(h: Harness, name: str = "acme") -> None:
    await h.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(h.agent.url, name=name))
    )


async def route(h: Harness, message_id: str, **kwargs: object) -> router_service_pb2.RouteMessageResponse:
    response: router_service_pb2.RouteMessageResponse = await h.stub.RouteMessage(
        router_service_pb2.RouteMessageRequest(message=inbound(message_id, **kwargs))  # type: ignore[arg-type]
    )
    return response


async def count(h: Harness, table: str, where: str = "", *args: object) -> int:
    return int(await h.db.fetchval(f"SELECT COUNT(*) FROM {table} {where}", *args))


async def test_a_user_lists_and_reads_with_ids_sessions_and_counts(harness: Harness, users: Users) -> None:
    await create(harness)
    first = await route(harness, "m-1", sender_id=MARIA_LID, alt_id=MARIA, chat_id=MARIA_LID)
    await route(harness, "m-2", sender_id=MARIA_LID, chat_id=MARIA_LID)
    await route(harness, "m-3", sender_id=JOAO, chat_id=JOAO, name="Joao")

    listed = await users.stub.ListUsers(users_service_pb2.ListUsersRequest(instance_name="acme"))
    assert listed.total_count == 2
    found = await users.stub.ListUsers(users_service_pb2.ListUsersRequest(search="mar"))
    assert [u.id for u in found.users] == [first.user_id]
    by_lid = await users.stub.ListUsers(users_service_pb2.ListUsersRequest(external_id=MARIA_LID))
    assert [u.id for u in by_lid.users] == [first.user_id]
    paged = await users.stub.ListUsers(users_service_pb2.ListUsersRequest(page_size=1))
    assert len(paged.users) == 1
    assert paged.next_page_token == "1"
    assert paged.total_count == 2

    user = (await users.stub.GetUser(users_service_pb2.GetUserRequest(user_id=first.user_id))).user
    assert user.message_count == 2
    assert user.phone_number == "+5511999990001"
    assert {e.external_id for e in user.external_ids} == {MARIA, MARIA_LID}
    assert [s.id for s in user.sessions] == [first.session_id]
    assert user.sessions[0].message_count == 2
    assert user.first_seen_time.seconds > 0


async def test_bad_ids_and_pages_answer_not_found_and_invalid_argument(harness: Harness, users: Users) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await users.stub.GetUser(users_service_pb2.GetUserRequest(user_id="nobody"))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad_page:
        await users.stub.ListSessions(users_service_pb2.ListSessionsRequest(page_token="abc"))
    assert bad_page.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as itself:
        await users.stub.LinkUsers(users_service_pb2.LinkUsersRequest(user_id="a", other_user_id="a"))
    assert itself.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_linking_merges_ids_sessions_and_counts_and_later_messages_get_the_survivor(
    harness: Harness, users: Users
) -> None:
    await create(harness)
    await create(harness, "beta")
    maria = await route(harness, "m-1", sender_id=MARIA, chat_id=MARIA)
    other = await route(harness, "m-2", instance="beta", sender_id=MARIA, chat_id=MARIA)
    joao = await route(harness, "m-3", sender_id=JOAO, chat_id=JOAO, name="Joao")
    assert other.user_id != maria.user_id

    linked = await users.stub.LinkUsers(
        users_service_pb2.LinkUsersRequest(user_id=maria.user_id, other_user_id=other.user_id)
    )
    assert linked.user.message_count == 2
    assert {(e.instance_name, e.external_id) for e in linked.user.external_ids} == {("acme", MARIA), ("beta", MARIA)}
    assert {s.id for s in linked.user.sessions} == {maria.session_id, other.session_id}
    # No orphan: nothing points at the merged user any more.
    for table in ("user_identities", "sessions", "routes"):
        assert await count(harness, table, "WHERE user_id = $1", other.user_id) == 0
    assert await count(harness, "users", "WHERE id = $1", other.user_id) == 0

    again = await route(harness, "m-4", instance="beta", sender_id=MARIA, chat_id=MARIA)
    assert again.user_id == maria.user_id
    untouched = await users.service.get_user(ADMIN, joao.user_id)
    assert untouched.message_count == 1
    assert [e.external_id for e in untouched.external_ids] == [JOAO]


async def test_a_scoped_key_sees_its_instance_only_and_links_across_instances_never(
    harness: Harness, users: Users
) -> None:
    await create(harness)
    await create(harness, "beta")
    maria = await route(harness, "m-1", sender_id=MARIA, chat_id=MARIA)
    other = await route(harness, "m-2", instance="beta", sender_id=MARIA, chat_id=MARIA)
    acme_key = Principal("scoped", instance_name="acme", key_id="k1")

    listed, total = await users.service.list_users(acme_key, UserFilter(instance_name="beta"), Page())
    assert (listed, total) == ([], 0)
    listed, total = await users.service.list_users(acme_key, UserFilter(), Page())
    assert [u.id for u in listed] == [maria.user_id]
    assert total == 1
    with pytest.raises(NotFoundError):
        await users.service.get_user(acme_key, other.user_id)
    with pytest.raises(NotFoundError):
        await users.service.reset_session(acme_key, other.session_id)
    beta_admin_view = await users.service.get_user(ADMIN, other.user_id)
    assert beta_admin_view.instance_name == "beta"
    # A scoped key cannot link across instances: the other instance's user does not exist for it.
    with pytest.raises(NotFoundError):
        await users.service.link_users(
            Principal("scoped", instance_name="beta", key_id="k2"), other.user_id, maria.user_id
        )


async def test_deleting_erases_the_user_everywhere_and_nobody_else(harness: Harness, users: Users) -> None:
    await create(harness)
    maria = await route(harness, "m-1", sender_id=MARIA_LID, alt_id=MARIA, chat_id=MARIA_LID)
    await route(harness, "m-2", sender_id=MARIA, chat_id=GROUP, is_group=True, text="@bot hi")
    joao = await route(harness, "m-3", sender_id=JOAO, chat_id=JOAO, name="Joao")

    erased = await users.stub.DeleteUser(users_service_pb2.DeleteUserRequest(user_id=maria.user_id))
    assert erased.traces_deleted == 2
    assert erased.inbox_messages_deleted == 1
    # Tracing gets her ids and her one-to-one session only; a group's other messages are not hers.
    assert users.eraser.traces == [("acme", sorted([MARIA, MARIA_LID]), [maria.session_id])]
    assert users.eraser.inbox[0][2] == sorted([MARIA, MARIA_LID])
    assert MARIA_LID in users.eraser.inbox[0][1]

    for table in ("user_identities", "sessions", "routes"):
        assert await count(harness, table, "WHERE user_id = $1", maria.user_id) == 0
    assert await count(harness, "users", "WHERE id = $1", maria.user_id) == 0
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await users.stub.GetUser(users_service_pb2.GetUserRequest(user_id=maria.user_id))
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND
    assert await count(harness, "routes", "WHERE user_id = $1", joao.user_id) == 1
    assert (await users.service.get_user(ADMIN, joao.user_id)).message_count == 1

    # She writes again: a new user from scratch, not a resurrected cache entry.
    back = await route(harness, "m-4", sender_id=MARIA, chat_id=MARIA)
    assert (await users.service.get_user(ADMIN, back.user_id)).message_count == 1


async def test_a_service_that_cannot_erase_keeps_the_user_for_a_retry(harness: Harness, users: Users) -> None:
    await create(harness)
    maria = await route(harness, "m-1", sender_id=MARIA, chat_id=MARIA)
    users.eraser.down = True
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await users.stub.DeleteUser(users_service_pb2.DeleteUserRequest(user_id=maria.user_id))
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert await count(harness, "users", "WHERE id = $1", maria.user_id) == 1


async def test_resetting_a_session_gives_the_next_message_a_new_session_id(harness: Harness, users: Users) -> None:
    await create(harness)
    first = await route(harness, "m-1", sender_id=MARIA, chat_id=MARIA)
    reset = await users.stub.ResetSession(users_service_pb2.ResetSessionRequest(session_id=first.session_id))
    assert reset.session.id != first.session_id
    assert reset.session.message_count == 0

    after = await route(harness, "m-2", sender_id=MARIA, chat_id=MARIA)
    assert after.session_id == reset.session.id
    assert after.user_id == first.user_id
    listed = await users.stub.ListSessions(users_service_pb2.ListSessionsRequest(user_id=first.user_id))
    assert [s.id for s in listed.sessions] == [reset.session.id]
    assert listed.sessions[0].message_count == 1
    with pytest.raises(grpc.aio.AioRpcError) as old:
        await users.stub.GetSession(users_service_pb2.GetSessionRequest(session_id=first.session_id))
    assert old.value.code() is grpc.StatusCode.NOT_FOUND


async def test_the_ids_an_agent_returns_come_back_on_the_next_turn_until_a_reset(
    harness: Harness, users: Users
) -> None:
    await harness.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(
            instance=whatsapp_instance(harness.agent.url, session_id_prefix="acme-")
        )
    )
    harness.agent.set_reply(lambda body: {"text": "ok", "session_id": "agent-conv-7", "user_id": "agent-user-3"})
    first = await route(harness, "m-1", sender_id=MARIA, chat_id=MARIA)
    await route(harness, "m-2", sender_id=MARIA, chat_id=MARIA)

    opening, follow_up = harness.agent.calls
    assert "agent_session_id" not in opening
    assert opening["session_name"] == "acme-+5511999990001"
    assert follow_up["session_id"] == first.session_id  # the hub's own id stays stable
    assert follow_up["agent_session_id"] == "agent-conv-7"
    assert follow_up["agent_user_id"] == "agent-user-3"
    stored = await users.service.get_session(ADMIN, first.session_id)
    assert (stored.agent_session_id, stored.session_name) == ("agent-conv-7", "acme-+5511999990001")

    harness.agent.set_reply(None)  # the echo: it returns the hub's ids, which are not the agent's own
    reset = await users.service.reset_session(ADMIN, first.session_id)
    await route(harness, "m-3", sender_id=MARIA, chat_id=MARIA)
    after_reset = harness.agent.calls[-1]
    assert after_reset["session_id"] == reset.id
    assert "agent_session_id" not in after_reset


async def test_another_replica_forgets_merged_and_reset_ids_within_its_poll(harness: Harness, users: Users) -> None:
    await create(harness)
    await create(harness, "beta")
    maria = await route(harness, "m-1", sender_id=MARIA, chat_id=MARIA)
    other = await route(harness, "m-2", instance="beta", sender_id=MARIA, chat_id=MARIA)

    # A second router replica on the same database, with its own identity cache, warmed by Maria's messages.
    replica = IdentityRepository(harness.db)
    on_beta = Person("beta", "whatsapp", MARIA, (MARIA,))
    assert await replica.resolve_user(on_beta, 1.0) == other.user_id
    assert await replica.resolve_session("acme", "whatsapp", MARIA, "", maria.user_id, 1.0) == maria.session_id
    watch = replica.watch(poll_seconds=0.05)
    await watch.start()
    try:
        await users.stub.LinkUsers(
            users_service_pb2.LinkUsersRequest(user_id=maria.user_id, other_user_id=other.user_id)
        )
        reset = await users.stub.ResetSession(users_service_pb2.ResetSessionRequest(session_id=maria.session_id))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2
        while True:
            user = await replica.resolve_user(on_beta, 2.0)
            session = await replica.resolve_session("acme", "whatsapp", MARIA, "", maria.user_id, 2.0)
            if (user, session) == (maria.user_id, reset.session.id):
                break
            assert loop.time() < deadline, f"replica still resolves {(user, session)}"
            await asyncio.sleep(0.02)
    finally:
        await watch.stop()


async def test_a_lookup_that_raced_a_forget_is_not_cached(harness: Harness) -> None:
    await create(harness)
    maria = await route(harness, "m-1", sender_id=MARIA, chat_id=MARIA)
    replica = IdentityRepository(harness.db)
    person = Person("acme", "whatsapp", MARIA, (MARIA,))
    lookup = asyncio.ensure_future(replica.resolve_user(person, 1.0))
    await asyncio.sleep(0)  # the lookup is now waiting on the database
    replica.forget_all()  # lands while the lookup reads the database
    assert await lookup == maria.user_id
    await harness.db.execute("UPDATE user_identities SET user_id = 'merged' WHERE external_id = $1", MARIA)
    assert await replica.resolve_user(person, 1.0) == "merged"  # read again, not served from memory
