"""Fixtures for the telemetry tests: real exporter processes on free 127.0.0.1 ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MELTGUARD = str(Path(sys.executable).with_name("meltguard"))
ATTACHED_PODS = ("inference/imagegen-0", "inference/imagegen-1", "other/batch-0")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningExporter:
    """A ``meltguard exporter`` subprocess and its base URL."""

    process: subprocess.Popen[bytes]
    url: str
    port: int


def wait_until_serving(process: subprocess.Popen[bytes], url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else b""
            raise RuntimeError(f"exporter exited with {process.returncode}: {stderr!r}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise TimeoutError(f"exporter at {url} did not answer /healthz within {timeout}s")


def start_exporter(*flags: str, node: str = "gpu-node-1") -> RunningExporter:
    port = free_port()
    env = {**os.environ, "NODE_NAME": node}
    env.pop("POD_NAME", None)
    env.pop("POD_NAMESPACE", None)
    process = subprocess.Popen(
        [MELTGUARD, "exporter", "--host", "127.0.0.1", "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, url)
    except BaseException:
        process.kill()
        raise
    return RunningExporter(process, url, port)


def stop_exporter(exporter: RunningExporter) -> None:
    exporter.process.terminate()
    try:
        exporter.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        exporter.process.kill()
        exporter.process.wait()


@pytest.fixture(scope="module")
def simulated_exporter() -> Iterator[RunningExporter]:
    """``meltguard exporter --simulate 8 --attach ...`` (shared by a module; reset per test)."""
    exporter = start_exporter("--simulate", "8", "--attach", ",".join(ATTACHED_PODS))
    yield exporter
    stop_exporter(exporter)


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
