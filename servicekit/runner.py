"""Runs a service's async main on uvloop, the event loop every mesh process uses."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import uvloop


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` to completion on a uvloop event loop."""
    uvloop.install()
    asyncio.run(main)
