"""A local Evolution API v2.3.x server for tests, demos and benchmarks.

It speaks the real wire protocol of the Evolution API wire contract (its fixtures are copied in
tests/fixtures/evolution): REST in §4, `send.message` webhooks in §1/§3, so the hub's Evolution client is
exercised exactly as against a real server, without WhatsApp and without the internet. On top of the protocol it
records every send and lets a test inject the failures the hub must survive: 4xx/5xx answers, 429 with
Retry-After, slow answers (client timeouts) and the nasty "the message went out but the answer never came back"
case (`after_send=True`), which the hub reconciles through `POST /chat/findMessages`.

Run it out of process with `python -m simulators.evolution --port 8080 --instance acme-support:TOKEN`; the
`/__sim/*` control endpoints (no auth) then give the same powers as the Python API.

Deliberate simplifications: sends succeed at once (the `delay` field is honoured only with
`honor_delays=True`), each webhook is POSTed once (no retries), numbers are not 9th-digit normalized,
and only messages sent through the API are stored for `findMessages`.

The package is split by concern, the shape other channel simulators copy:
- `state` — what the simulator knows: instances, recorded traffic, pending faults (no HTTP).
- `rest` — the error answers, JSON bodies and auth guards every endpoint shares.
- `messages`, `instances`, `webhooks`, `control` — the endpoints, one class per concern, each reading and
  changing the shared state; `webhooks` also POSTs the events.
- `server` — `EvolutionSimulator`: assembles the aiohttp app and offers the Python API.
- `wire` — pure wire shapes (ids, JIDs, envelopes), also used by tests that play WhatsApp's side.
- `__main__` — the command line.
"""

from simulators.evolution.rest import EvolutionError
from simulators.evolution.server import EvolutionSimulator
from simulators.evolution.state import SentMessage
from simulators.evolution.wire import post_webhook, text_upsert

__all__ = ["EvolutionError", "EvolutionSimulator", "SentMessage", "post_webhook", "text_upsert"]
