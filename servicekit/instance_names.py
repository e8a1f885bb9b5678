"""What an instance may be called: one rule, applied by the router (the owner) and by the gateway (for a fast 422).

Instance names appear in URLs next to the gateway's own segments (`/api/v1/{instance}/send-text`,
`/api/v1/instances`, ...), so names that would collide with a route are refused.
"""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""Lower case, starting with a letter or digit, at most 63 characters (match with `fullmatch`)."""

RESERVED_NAMES = frozenset(
    {
        "instances",
        "traces",
        "webhook",
        "webhooks",
        "health",
        "access",
        "api",
        "docs",
        "openapi",
        "redoc",
        "dead-letters",
        "send-text",
        "send-media",
        "contacts",
        "chats",
        "channels",
        "static",
        "v1",
        "discover",
        "users",
        "sessions",
    }
)
"""Names that would collide with a route segment (`/api/v1/instances/discover` beside `/api/v1/instances/{name}`)
or with the routes planned for users, sessions and access rules."""
