"""Start `python -m gateway` as a real process with a chosen environment, for the refuse-to-start tests."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


async def gateway_exit(cwd: Path, settings: dict[str, str]) -> tuple[int | None, bytes]:
    """Run the gateway with only `settings` of the AUTOMAGIK_OMNI_* variables (plus the environment's others);
    returns its exit code and stderr once it exits (within 30 s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOMAGIK_OMNI_")}
    env.update({"PYTHONPATH": f"{REPO}:{REPO / 'gen' / 'python'}", **settings})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, stderr
