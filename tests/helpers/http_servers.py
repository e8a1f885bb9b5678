"""Real HTTP servers with one catch-all handler, standing in for misbehaving tenant servers (an agent or an
Evolution that redirects or floods, a media host) in the outbound-hygiene tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeServer:
    """One real HTTP server on a free port; records the paths it was asked for."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.paths: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.paths.append(request.path)
            return await self.handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


ServerFactory = Callable[[Handler], Awaitable[FakeServer]]


@pytest.fixture
async def servers() -> AsyncIterator[ServerFactory]:
    """Start fake servers on demand; every one is stopped when the test ends."""
    started: list[FakeServer] = []

    async def start(handler: Handler) -> FakeServer:
        server = FakeServer(handler)
        await server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.stop()


def flooding(total: int, written: list[int], *, chunk: int = 256 * 1024) -> Handler:
    """A handler streaming `total` bytes without Content-Length, appending to `written` how many it managed before
    the client hung up (a client that caps its reads stops it far short of `total`)."""
    piece = b" " * chunk

    async def flood(request: web.Request) -> web.StreamResponse:
        stream = web.StreamResponse(headers={"Content-Type": "application/json"})
        await stream.prepare(request)
        sent = 0
        try:
            while sent < total:
                await stream.write(piece)
                sent += chunk
        except (ConnectionError, RuntimeError):
            pass
        written.append(sent)
        return stream

    return flood
