"""End-to-end helpers: the local mesh with test settings, and polling."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from launcher.local_mesh import LocalMesh

API_KEY = "e2e-admin-key"
T = TypeVar("T")

TEST_DELIVERY_ENV = {
    "AUTOMAGIK_OMNI_INGRESS_RETRY_BASE_SECONDS": "0.2",
    "AUTOMAGIK_OMNI_INGRESS_RETRY_MAX_SECONDS": "2",
    "AUTOMAGIK_OMNI_INGRESS_MAX_ATTEMPTS": "5",
}


def mesh_for_tests(data_dir: Path, *, database_url: str = "", extra_env: dict[str, str] | None = None) -> LocalMesh:
    """A local mesh with short retry back-offs, logging at OMNI_E2E_LOG_LEVEL (default WARNING)."""
    return LocalMesh(
        data_dir,
        api_key=API_KEY,
        database_url=database_url,
        log_level=os.environ.get("OMNI_E2E_LOG_LEVEL", "WARNING"),
        extra_env={**TEST_DELIVERY_ENV, **(extra_env or {})},
    )


async def eventually(probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, every: float = 0.1) -> T:
    """Poll `probe` until it returns something other than None/False; fail with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.0f}s")
        await asyncio.sleep(every)
