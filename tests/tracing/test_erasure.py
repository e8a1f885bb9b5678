"""EraseSender in tracing: a person's traces go with their spans; other senders' and other instances' stay."""

from __future__ import annotations

import pytest

from servicekit.database import Database
from servicekit.errors import InvalidArgumentError, NotFoundError
from services.tracing.core import TracingCore
from services.tracing.core.erasure import erase_sender
from services.tracing.storage import TraceStore
from tests.tracing.builders import message_spans


def _id(n: int) -> str:
    return f"{n:032x}"


async def test_a_senders_traces_go_and_nobody_elses(core: TracingCore, tracing_db: Database) -> None:
    maria, joao, elsewhere = _id(1), _id(2), _id(3)
    await core.ingest(message_spans(maria, user="maria@s.whatsapp.net"))
    await core.ingest(message_spans(joao, user="joao@s.whatsapp.net"))  # same session id ("sess-1"): a group
    await core.ingest(message_spans(elsewhere, instance="other", user="maria@s.whatsapp.net"))
    store = TraceStore(tracing_db)

    assert await erase_sender(store, "acme", ["maria@s.whatsapp.net", ""], []) == 1
    with pytest.raises(NotFoundError):
        await core.get_trace(maria)
    assert await tracing_db.fetchval("SELECT count(*) FROM spans WHERE trace_id = $1", maria) == 0
    assert (await core.get_trace(joao)).payloads
    assert (await core.get_trace(elsewhere)).payloads
    assert await erase_sender(store, "acme", ["maria@s.whatsapp.net"], []) == 0  # idempotent


async def test_a_one_to_one_session_goes_whole(core: TracingCore, tracing_db: Database) -> None:
    await core.ingest(message_spans(_id(4), user="someone"))
    assert await erase_sender(TraceStore(tracing_db), "acme", [], ["sess-1"]) == 1
    assert await erase_sender(TraceStore(tracing_db), "acme", [], []) == 0


async def test_erasure_needs_an_instance(tracing_db: Database) -> None:
    with pytest.raises(InvalidArgumentError):
        await erase_sender(TraceStore(tracing_db), "", ["x"], [])
