"""Fixtures of the channels suite: the Evolution simulator, a database-backed outbox, and a core to drive."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servicekit.channels import Channel
from servicekit.database import Database, migrate, open_database
from servicekit.instances import Instance, WhatsAppConfig
from services.channels.core.evolution import EvolutionClient
from services.channels.core.outbox import OutboxSender, SendPolicy
from services.channels.core.senders.whatsapp import EvolutionSender
from services.channels.core.service import ChannelsCore
from services.channels.storage import MIGRATION_LOCK, MIGRATIONS, SCHEMA, OutboxStore
from simulators.evolution import EvolutionSimulator
from tests.helpers.http_servers import servers  # noqa: F401 (a fixture for the tests of this folder)
from tests.helpers.instances import DictDirectory

GLOBAL_KEY = "global-test-key"
EVOLUTION_INSTANCE = "acme-support"
CHAT = "5521991234567"


@pytest.fixture
async def sim() -> AsyncIterator[EvolutionSimulator]:
    simulator = EvolutionSimulator(api_key=GLOBAL_KEY)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def instance(sim: EvolutionSimulator) -> Instance:
    """A WhatsApp hub instance whose Evolution instance exists on the simulator, using its own token."""
    token = sim.add_instance(EVOLUTION_INSTANCE)
    return Instance(
        name="acme",
        config=WhatsAppConfig(evolution_url=sim.url, evolution_key=token, whatsapp_instance=EVOLUTION_INSTANCE),
    )


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await open_database(db_url, SCHEMA)
    await migrate(database, MIGRATIONS, lock_key=MIGRATION_LOCK)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def requests() -> list[str]:
    """Every HTTP request the hub made, as "METHOD /path", counted on the client side."""
    return []


@pytest.fixture
async def session(requests: list[str]) -> AsyncIterator[aiohttp.ClientSession]:
    async def on_start(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
        requests.append(f"{params.method} {params.url.path}")

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[tracing]) as client_session:
        yield client_session


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@dataclass
class Harness:
    """A core wired to the simulator and the test database, with the pieces tests inspect."""

    core: ChannelsCore
    outbox: OutboxSender
    store: OutboxStore
    directory: DictDirectory
    sleeps: list[float] = field(default_factory=list)
    retries: list[Channel] = field(default_factory=list)
    """The channel of every retried part send the outbox reported (what omni_outbox_retries_total counts)."""


MakeHarness = Callable[..., Harness]


@pytest.fixture
def make_harness(
    db: Database,
    session: aiohttp.ClientSession,
    instance: Instance,
    spans: InMemorySpanExporter,
) -> MakeHarness:
    """Build a core; keyword arguments override the SendPolicy, `timeout` the HTTP timeout."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    directory = DictDirectory(instance)

    def build(*, timeout: float = 5.0, worker_id: str = "worker-a", fallback_key: str = "", **policy: Any) -> Harness:
        evolution = EvolutionClient(session, timeout_seconds=timeout, rate_limit_backoff_seconds=7.5)
        senders = {Channel.WHATSAPP: EvolutionSender(evolution, fallback_key=fallback_key)}
        store = OutboxStore(db)
        defaults: dict[str, Any] = {"backoff_seconds": 0.01, "retry_after_seconds": 1.5}
        retries: list[Channel] = []
        outbox = OutboxSender(
            store,
            senders,
            policy=SendPolicy(**{**defaults, **policy}),
            worker_id=worker_id,
            on_retry=retries.append,
        )
        core = ChannelsCore(directory, senders, outbox, tracer=provider.get_tracer("test"))
        return Harness(core=core, outbox=outbox, store=store, directory=directory, retries=retries)

    return build
