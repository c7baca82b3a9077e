"""Fixtures for the ingest tests: real page servers on free 127.0.0.1 ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from ..exporter_process import free_port


@dataclass
class PageBehaviour:
    """What one test page server answers on GET /metrics."""

    body: bytes = b""
    status: int = 200
    delay: float = 0.0
    chunked: bool = False


@dataclass
class PageServer:
    """Real aiohttp servers on 127.0.0.1, one per endpoint, answering what the test sets."""

    behaviours: dict[str, PageBehaviour]

    async def start(self, count: int, keepalive_timeout: float = 75.0) -> list[str]:
        from aiohttp import web

        endpoints = []
        for _ in range(count):
            behaviour = PageBehaviour()
            app = web.Application()
            app.router.add_get("/metrics", _page_handler(behaviour))
            runner = web.AppRunner(app, keepalive_timeout=keepalive_timeout)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            endpoint = f"127.0.0.1:{port}"
            self.behaviours[endpoint] = behaviour
            self._runners.append(runner)
            endpoints.append(endpoint)
        return endpoints

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    def __post_init__(self) -> None:
        self._runners: list[Any] = []


def _page_handler(behaviour: PageBehaviour) -> Any:
    import asyncio

    from aiohttp import web

    async def handler(request: web.Request) -> web.StreamResponse:
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if not behaviour.chunked:
            return web.Response(body=behaviour.body, status=behaviour.status)
        response = web.StreamResponse(status=behaviour.status)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(behaviour.body), 4096):
            await response.write(behaviour.body[start : start + 4096])
        await response.write_eof()
        return response

    return handler


@pytest.fixture
async def page_server() -> AsyncIterator[PageServer]:
    server = PageServer({})
    yield server
    await server.stop()
