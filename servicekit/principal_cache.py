"""A small in-gateway memory of which scoped key is which principal, so a busy client costs the router one
AuthenticateApiKey every few seconds rather than one per request.

Entries are keyed by the SHA-256 of the key, never the key itself, so a heap dump holds no usable key. Hits live a
few seconds (a revoked key stops working on other gateway workers within that time; on this one at once, see
`forget_key`), misses less (a key created a moment ago works almost at once), and the size is bounded so a flood of
random keys cannot grow memory.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

from servicekit.principals import Principal

HIT_SECONDS = 5.0
MISS_SECONDS = 2.0
MAX_ENTRIES = 10_000


class Missing:
    """The cache holds nothing (or only a stale answer) for the key."""


MISSING = Missing()


def key_digest(key: str) -> bytes:
    """What the cache stores in place of a key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class PrincipalCache:
    """Answers of AuthenticateApiKey (a principal, or None for an unknown key) for a short time."""

    def __init__(
        self,
        *,
        hit_seconds: float = HIT_SECONDS,
        miss_seconds: float = MISS_SECONDS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hit_seconds = hit_seconds
        self._miss_seconds = miss_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Principal | None]] = OrderedDict()

    def get(self, key: str) -> Principal | Missing | None:
        """The remembered answer for `key`, or `MISSING` when there is none still fresh."""
        digest = key_digest(key)
        entry = self._entries.get(digest)
        if entry is None:
            return MISSING
        expires, principal = entry
        if self._clock() >= expires:
            del self._entries[digest]
            return MISSING
        return principal

    def put(self, key: str, principal: Principal | None) -> None:
        """Remember the router's answer for `key`; the oldest entry goes when the cache is full."""
        ttl = self._hit_seconds if principal is not None else self._miss_seconds
        digest = key_digest(key)
        self._entries.pop(digest, None)
        self._entries[digest] = (self._clock() + ttl, principal)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget(self, *, key_id: str = "", instance_name: str = "") -> None:
        """Drop the answers for a revoked key, or for every key of a deleted instance, so this worker stops
        honouring them at once."""
        stale = [
            digest
            for digest, (_, principal) in self._entries.items()
            if principal is not None
            and (
                (key_id and principal.key_id == key_id) or (instance_name and principal.instance_name == instance_name)
            )
        ]
        for digest in stale:
            del self._entries[digest]

    def __len__(self) -> int:
        return len(self._entries)
