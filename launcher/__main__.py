"""`python -m launcher`: run the whole mesh in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from launcher.mesh_token import with_mesh_token
from launcher.supervisor import Supervisor, default_specs
from servicekit.runner import run, stop_signal

log = logging.getLogger("launcher")


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s launcher: %(message)s", stream=sys.stderr)
    env = with_mesh_token(os.environ)
    supervisor = Supervisor(default_specs(env), env=env)
    stop = stop_signal()
    await supervisor.start()
    try:
        await asyncio.wait_for(supervisor.wait_healthy(timeout=90), timeout=95)
        port = os.environ.get("AUTOMAGIK_OMNI_API_PORT", "8882")
        log.info("omni mesh ready: gateway http://127.0.0.1:%s (docs at /docs, health at /health)", port)
    except TimeoutError as exc:
        log.error("%s", exc)
    await stop.wait()
    log.info("stopping the mesh")
    await supervisor.stop()
    log.info("stopped")


if __name__ == "__main__":
    run(main())
