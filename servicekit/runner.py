"""Runs a service's async main on uvloop, the event loop every mesh process uses."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

import uvloop


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` to completion on a uvloop event loop."""
    uvloop.install()
    asyncio.run(main)


def stop_signal() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT on the running loop: every process of the mesh (and the fakes and the
    launcher) stops the same way, and installing the handlers first means a signal during start-up is not lost."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
