"""Process-wide logging set-up: one line per record, prefixed with the service name."""

from __future__ import annotations

import logging
import sys


def configure_logging(service: str, level: str) -> None:
    """Log to stderr at `level`; quiet the chatty libraries."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("asyncio", "grpc._cython", "opentelemetry"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
