"""What the simulator knows: its instances, the traffic it recorded and the faults waiting to be injected.

Nothing here speaks HTTP. The endpoint modules read and change one `EvolutionState`, and `EvolutionSimulator`
exposes the same object (and its recorded lists) to tests, so a test sees exactly what the endpoints did.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from simulators.evolution.wire import instance_uuid, iso_now


@dataclass
class SentMessage:
    """One accepted send, as WhatsApp would have received it."""

    instance: str
    endpoint: str
    """The REST action: `sendText`, `sendMedia`, `sendWhatsAppAudio`, `sendReaction`, `sendLocation`."""
    number: str
    """The `number` field as the client sent it (for reactions: the reacted message's `remoteJid`)."""
    text: str
    """Text, caption, reaction emoji or location name; empty for captionless media and audio."""
    body: dict[str, Any]
    key_id: str
    timestamp: int
    remote_jid: str
    raw: dict[str, Any] = field(default_factory=dict)
    """The MessageRaw answered to the client (and posted as `send.message`)."""
    record_id: str = ""
    """The database row id `findMessages` reports."""
    received_at: float = field(default_factory=time.time)
    """Wall-clock time the simulator accepted the send (the benchmark's end-to-end clock)."""


@dataclass(frozen=True)
class Fault:
    """One injected send failure (see `EvolutionSimulator.fail_next`)."""

    status: int
    body: Any
    retry_after: float | None
    delay: float
    after_send: bool


@dataclass
class Instance:
    """A simulated WhatsApp connection."""

    name: str
    token: str
    state: str
    instance_id: str
    owner_jid: str
    profile_name: str
    created_at: str
    webhook: dict[str, Any] | None = None
    qr_count: int = 0
    settings: dict[str, Any] | None = None
    """What `settings/set` (or `instance/create`) stored: the six booleans and `msgCall`."""
    action_error: str = ""
    """When set, `connect` and `restart` answer HTTP 200 `{error: true, message}` with it (Evolution's irregular
    failure shape, §4.2) until cleared."""


class EvolutionState:
    """The state every endpoint module shares: configuration, instances, recorded traffic, pending faults."""

    def __init__(self, *, api_key: str, honor_delays: bool) -> None:
        self.api_key = api_key
        """The global `AUTHENTICATION_API_KEY`."""
        self.honor_delays = honor_delays
        """Hold sends and presences open for their `delay` ms as Evolution does."""
        self.url = ""
        """The base URL once serving (the `server_url` of webhook envelopes)."""
        self.instances: dict[str, Instance] = {}
        self.sent: list[SentMessage] = []
        self.presences: list[dict[str, Any]] = []
        """Every accepted `sendPresence` body (+ `instance`)."""
        self.requests: list[tuple[str, str]] = []
        """`(method, path)` of every request outside `/__sim/`."""
        self.reads: list[dict[str, Any]] = []
        """Every key passed to `markMessageAsRead` (+ `instance`)."""
        self.deliveries: list[dict[str, Any]] = []
        """Every webhook POST attempt: `{event, instance, url, status}` (status None when it failed to connect)."""
        self.not_on_whatsapp: set[str] = set()
        """Numbers (digits) or JIDs that answer 400 `exists:false`, as for a number without WhatsApp."""
        self.faults: deque[Fault] = deque()
        self.latency = 0.0
        """Seconds added to every send."""
        self._sent_signal = asyncio.Event()

    def add_instance(self, name: str, token: str | None, state: str) -> str:
        """Create (or update) an instance and return its token; an existing instance keeps its webhook."""
        existing = self.instances.get(name)
        if existing is not None:
            existing.token = token or existing.token
            existing.state = state
            return existing.token
        created = Instance(
            name=name,
            token=token or str(uuid.uuid4()).upper(),
            state=state,
            instance_id=instance_uuid(name),
            owner_jid="5511987650000@s.whatsapp.net",
            profile_name=name,
            created_at=iso_now(),
        )
        self.instances[name] = created
        return created.token

    def record_sent(self, sent: SentMessage) -> None:
        """Store an accepted send and wake `wait_for_sent`."""
        self.sent.append(sent)
        self._sent_signal.set()

    async def wait_for_sent(self, count: int, timeout: float) -> list[SentMessage]:
        """Wait until at least `count` messages were sent; raise TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while len(self.sent) < count:
                self._sent_signal.clear()
                await self._sent_signal.wait()
        return list(self.sent)

    def queue_faults(self, count: int, fault: Fault) -> None:
        """Make the next `count` sends fail with `fault`."""
        self.faults.extend([fault] * count)

    def next_fault(self) -> Fault | None:
        """The fault the current send must suffer, if any (consumed)."""
        return self.faults.popleft() if self.faults else None

    def set_latency(self, seconds: float) -> None:
        """Add `seconds` of latency to every send."""
        self.latency = max(0.0, seconds)

    def reset(self) -> None:
        """Forget recorded traffic, pending faults and latency; instances and their webhooks stay."""
        self.sent.clear()
        self.presences.clear()
        self.requests.clear()
        self.reads.clear()
        self.deliveries.clear()
        self.not_on_whatsapp.clear()
        self.faults.clear()
        self.latency = 0.0
