"""The fake peers the benchmark runs as their own processes (Evolution simulator, Discord simulator, echo agent)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass


@dataclass
class Helper:
    """A fake peer running as its own process."""

    name: str
    process: asyncio.subprocess.Process
    url: str


async def start_helper(name: str, module: str, *args: str) -> Helper:
    """Start `python -m module` and wait for its "listening on URL" line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
    if "listening on" not in line:
        raise RuntimeError(f"{name} did not start: {line!r}")
    return Helper(name, process, line.rsplit(" ", 1)[1].strip())


async def stop_helper(helper: Helper) -> None:
    """Terminate the process and wait for it."""
    with contextlib.suppress(ProcessLookupError):
        helper.process.terminate()
    await helper.process.wait()
