"""Calls a tenant's agent per the public agent contract (`POST {agent_api_url}/api/agent/chat`).

One shared aiohttp session serves every call (connection reuse matters on the hot path). The instance's
`agent_timeout_seconds` bounds the whole call, retries included: connection failures and 5xx answers are retried
with a short back-off while the budget lasts, because agents restart and load balancers hiccup. A 4xx, invalid JSON
or a non-object body will not get better on retry and is reported as permanent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from opentelemetry import propagate, trace

from servicekit import trace_attributes as attrs

log = logging.getLogger(__name__)

CHAT_PATH = "/api/agent/chat"
TEXT_KEYS = ("text", "message", "response", "content")
"""Where the reply text may be, in order of preference."""


class AgentError(Exception):
    """The agent call failed; `transient` says whether a later attempt may succeed."""

    transient = False

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AgentPermanentError(AgentError):
    """A 4xx, invalid JSON or a body that is not an object."""


class AgentTransientError(AgentError):
    """Unreachable, 5xx or out of time after retries."""

    transient = True


@dataclass(frozen=True)
class AgentReply:
    """What the agent answered."""

    text: str
    media: list[Any] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    status: int = 200


def parse_reply(body: bytes, status: int) -> AgentReply:
    """The reply from a 2xx body; raises `AgentPermanentError` when it is not a JSON object."""
    try:
        data = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        raise AgentPermanentError(f"agent returned invalid JSON (HTTP {status})", status=status) from None
    if not isinstance(data, dict):
        raise AgentPermanentError(
            f"agent returned JSON {type(data).__name__}, expected an object (HTTP {status})", status=status
        )
    text = next((data[k] for k in TEXT_KEYS if isinstance(data.get(k), str) and data[k]), "")
    media = data.get("media")
    actions = data.get("actions")
    return AgentReply(
        text=text,
        media=media if isinstance(media, list) else [],
        actions=actions if isinstance(actions, list) else [],
        raw=data,
        status=status,
    )


class AgentClient:
    """Posts chat requests to agents over a shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        backoff: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0),
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._session = session
        self._backoff = backoff
        self._tracer = tracer or trace.get_tracer("omni.router")

    async def chat(self, base_url: str, api_key: str, body: dict[str, Any], *, budget: float) -> AgentReply:
        """POST `body` and return the reply; raises `AgentPermanentError` or `AgentTransientError`."""
        url = base_url.rstrip("/") + CHAT_PATH
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        payload = orjson.dumps(body)
        with self._tracer.start_as_current_span("agent.call", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute(attrs.STEP, attrs.STEP_AGENT_CALL)
            span.set_attribute("http.request.method", "POST")
            span.set_attribute("url.full", url)
            headers = {"Content-Type": "application/json"}
            if api_key:
                headers["x-api-key"] = api_key
            propagate.inject(headers)
            attempt = 0
            last_error = "no attempt made"
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                attempt += 1
                span.set_attribute("omni.agent.attempts", attempt)
                try:
                    async with self._session.post(
                        url, data=payload, headers=headers, timeout=aiohttp.ClientTimeout(total=remaining)
                    ) as response:
                        status = response.status
                        content = await response.read()
                    span.set_attribute("http.response.status_code", status)
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                else:
                    if 200 <= status < 300:
                        return parse_reply(content, status)
                    snippet = content[:200].decode(errors="replace")
                    if status < 500:
                        error = AgentPermanentError(f"agent returned HTTP {status}: {snippet}", status=status)
                        span.set_attribute(attrs.ERROR_MESSAGE, error.message)
                        raise error
                    last_error = f"HTTP {status}: {snippet}"
                pause = self._backoff[min(attempt - 1, len(self._backoff) - 1)]
                if deadline - loop.time() <= pause:
                    break
                log.debug("agent call attempt %d failed (%s); retrying in %.2fs", attempt, last_error, pause)
                await asyncio.sleep(pause)
            message = f"agent unreachable after {attempt} attempt(s) within {budget:g}s: {last_error}"
            span.set_attribute(attrs.ERROR_MESSAGE, message)
            raise AgentTransientError(message)
