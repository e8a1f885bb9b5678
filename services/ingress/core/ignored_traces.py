"""The rate limit on traces of ignored webhooks.

Every webhook that reaches an instance and is ignored (malformed, an event the hub does not handle, a thread the bot
is not in) becomes an `ignored` trace with its reason, so an operator who sent a hand-made webhook sees why nothing
happened. Anyone who knows a webhook URL can send junk, though, so each instance gets a token bucket: over it the
webhook is still answered and counted (`omni_ignored_webhooks_total{traced="false"}`) but leaves no span at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable

HOUSEKEEPING_REASONS = frozenset({"not_a_message", "url_verification"})
"""Reasons of events that are not about a message at all (Evolution's contacts/presence/chats/connection updates,
Slack's URL handshake): a channel sends them by the hundred on its own, so they stay out of the trace list."""

DEFAULT_RATE_PER_SECOND = 10.0
DEFAULT_BURST = 20.0


class IgnoredTraceLimiter:
    """A token bucket per instance: `rate` tokens a second, at most `burst` saved up. Not thread-safe (one event
    loop per process)."""

    def __init__(
        self,
        rate: float = DEFAULT_RATE_PER_SECOND,
        burst: float = DEFAULT_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_instances: int = 10_000,
    ) -> None:
        self._rate = rate
        self._burst = max(burst, 1.0)
        self._clock = clock
        self._max_instances = max_instances
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, instance_name: str) -> bool:
        """Take a token for `instance_name`; False when its bucket is empty (do not trace this one)."""
        now = self._clock()
        tokens, last = self._buckets.get(instance_name, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if instance_name not in self._buckets and len(self._buckets) >= self._max_instances:
            # Bounded memory: forget full buckets (they are equivalent to never seen).
            self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self._burst - 1.0}
        self._buckets[instance_name] = (tokens, now)
        return allowed
