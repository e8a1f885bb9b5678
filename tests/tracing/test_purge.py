"""PurgeInstance in tracing: a deleted instance's traces, spans and payloads go, and nothing else."""

from __future__ import annotations

import pytest

from servicekit.database import Database
from servicekit.errors import InvalidArgumentError, NotFoundError
from services.tracing.core import TraceQuery, TracingCore
from tests.helpers.tenant_data import fill_tracing


async def test_purge_removes_the_instance_traces_with_their_spans(core: TracingCore, tracing_db: Database) -> None:
    acme = await fill_tracing(core, "acme")
    other = await fill_tracing(core, "other")

    assert await core.purge_instance("acme") == 2
    assert await core.purge_instance("acme") == 0

    assert (await core.list_traces(TraceQuery(instance_name="acme"))).total_count == 0
    for trace_id in acme:
        with pytest.raises(NotFoundError):
            await core.get_trace(trace_id)
    placeholders = ", ".join(f"${i}" for i in range(1, len(acme) + 1))
    assert await tracing_db.fetchval(f"SELECT count(*) FROM spans WHERE trace_id IN ({placeholders})", *acme) == 0
    page = await core.list_traces(TraceQuery())
    assert sorted(t.trace_id for t in page.traces) == sorted(other)
    assert (await core.get_trace(other[0])).payloads


async def test_purge_needs_a_name(core: TracingCore) -> None:
    with pytest.raises(InvalidArgumentError):
        await core.purge_instance("")
