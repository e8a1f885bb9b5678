"""HTTP/2 keepalive, derived from one interval for both ends of every mesh channel.

Clients ping an idle connection so a dead peer (a restarted pod, a dropped NAT entry) is noticed before a call is
made on it. A server with gRPC's defaults accepts at most one ping per 5 minutes and none without an active call:
after a few of the clients' pings it answers GOAWAY ENHANCE_YOUR_CALM "too_many_pings" and drops the connection
(the router's channel to channels did exactly that after idling). Both option lists come from the same interval
here, so the server always tolerates what the clients send.
"""

from __future__ import annotations

KEEPALIVE_INTERVAL_MS = 30_000
"""How often a client pings a connection that carries no data."""
KEEPALIVE_TIMEOUT_MS = 10_000
"""How long a client waits for the ping's answer before it declares the connection dead."""


def client_keepalive_options(interval_ms: int = KEEPALIVE_INTERVAL_MS) -> list[tuple[str, int]]:
    """Ping every `interval_ms`, with or without calls in flight, without limit."""
    return [
        ("grpc.keepalive_time_ms", interval_ms),
        ("grpc.keepalive_timeout_ms", min(KEEPALIVE_TIMEOUT_MS, interval_ms)),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def server_keepalive_options(interval_ms: int = KEEPALIVE_INTERVAL_MS) -> list[tuple[str, int]]:
    """Accept the pings `client_keepalive_options(interval_ms)` sends.

    The minimum interval is half the clients' so timer jitter never counts as abuse; a few strikes are still
    allowed before a client that pings faster than that is told to calm down.
    """
    return [
        ("grpc.http2.min_ping_interval_without_data_ms", interval_ms // 2),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 5),
    ]
