"""Fixtures for the quota service tests: real servers on 127.0.0.1 and a real redis-server."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
import redis
from aiohttp import web
from prometheus_client import CollectorRegistry

from meltguard.api.quotas import parse_quota_document
from meltguard.quota.app import create_app
from meltguard.quota.auth import TokenFile
from meltguard.quota.limits import LimitsRegistry
from meltguard.quota.memory_store import MemoryStore
from meltguard.quota.metrics import QuotaMetrics
from meltguard.quota.redis_store import RedisStore
from meltguard.quota.service import OnStoreError, QuotaService
from meltguard.quota.store import QuotaStore

POLICY = "inference/imagegen"
MELTGUARD = str(Path(sys.executable).with_name("meltguard"))
REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def quotas_json(
    free: float = 3,
    free_baseline: int = 3,
    window: int = 86400,
    policy: str = POLICY,
    plus: int = 200,
) -> str:
    """A quotas.json with tiers free (limited), plus (limited) and pro (unlimited)."""
    return json.dumps(
        {
            "policy": policy,
            "observedGeneration": 1,
            "phase": "Melting" if free < free_baseline else "Cool",
            "updated": "2026-11-23T10:00:00Z",
            "tiers": [
                {
                    "name": "free",
                    "limit": free,
                    "baseline": free_baseline,
                    "windowSeconds": window,
                    "tightened": free < free_baseline,
                },
                {"name": "plus", "limit": plus, "baseline": 200, "windowSeconds": 10800},
                {"name": "pro", "unlimited": True},
            ],
        }
    )


@dataclass
class FakeClock:
    """Epoch seconds that only move when a test says so."""

    now: float = field(default_factory=lambda: float(int(time.time() // 86400 * 86400) + 3600))

    def __call__(self) -> float:
        return self.now


@dataclass
class RedisServer:
    """A redis-server subprocess on 127.0.0.1 with its data in ``directory``."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, only what persistence already wrote survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, free to kill or stall (SIGKILL ends a stopped one)."""
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


def launch_quota_server(
    *args: str, env: dict[str, str] | None = None, log: IO[bytes] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``meltguard quota-server ARGS`` on a free 127.0.0.1 port; return it once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [
            MELTGUARD,
            "quota-server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
            "--grpc-port",  # off unless ARGS ask for it: 8081 may be taken on a shared machine
            "0",
            *args,
        ],
        env=env,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
            return process, url
        except OSError:
            assert process.poll() is None, "quota-server exited"
            assert time.monotonic() < deadline, "quota-server did not start"
            time.sleep(0.1)


@dataclass
class QuotaServer:
    """An in-process quota service listening on 127.0.0.1."""

    url: str
    service: QuotaService
    registry: LimitsRegistry
    runner: web.AppRunner

    def publish(self, text: str, source: str = "test") -> None:
        self.registry.put(source, parse_quota_document(text))

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.service.store.close()


async def start_quota_server(
    store: QuotaStore,
    clock: FakeClock,
    on_store_error: OnStoreError = "open",
    limits: str | None = None,
    fail_open_seconds: float = 300.0,
    callers: TokenFile | None = None,
) -> QuotaServer:
    registry = LimitsRegistry()
    service = QuotaService(
        registry,
        store,
        QuotaMetrics(),
        on_store_error,
        clock,
        fail_open_seconds=fail_open_seconds,
    )
    runner = web.AppRunner(create_app(service, callers=callers), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server = QuotaServer(f"http://127.0.0.1:{port}", service, registry, runner)
    server.publish(limits if limits is not None else quotas_json())
    return server


def make_store(kind: str, redis_server: RedisServer | None) -> QuotaStore:
    if kind == "memory":
        return MemoryStore()
    assert redis_server is not None
    redis_server.flush()
    # a whole decision is bounded by the timeout, queueing included: leave room for 1,000
    # concurrent requests on a busy test machine
    return RedisStore(redis_server.url, timeout_seconds=5)


STORES = [pytest.param("memory"), pytest.param("redis", marks=needs_redis)]


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server(
    store_kind: str, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[QuotaServer]:
    """A quota server on the parametrised store (memory, then Redis)."""
    redis = request.getfixturevalue("redis_server") if store_kind == "redis" else None
    running = await start_quota_server(make_store(store_kind, redis), clock)
    yield running
    await running.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield session
    await session.close()


def metric_total(registry: CollectorRegistry, sample_name: str) -> float:
    """Sum of every sample called ``sample_name`` (all label sets) in ``registry``."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == sample_name
    )


async def consume(
    http: aiohttp.ClientSession, url: str, **fields: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST /v1/consume for subject user-1 of the free tier unless told otherwise."""
    body = {"policy": POLICY, "tier": "free", "subject": "user-1", **fields}
    async with http.post(f"{url}/v1/consume", json=body) as response:
        return response.status, await response.json(), dict(response.headers)


async def refund(
    http: aiohttp.ClientSession, url: str, request_id: str, **fields: Any
) -> dict[str, Any]:
    body = {
        "policy": POLICY,
        "tier": "free",
        "subject": "user-1",
        "requestId": request_id,
        **fields,
    }
    async with http.post(f"{url}/v1/refund", json=body) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def peek(
    http: aiohttp.ClientSession, url: str, subject: str = "user-1", tier: str = "free"
) -> dict[str, Any]:
    params = {"policy": POLICY, "tier": tier, "subject": subject}
    async with http.get(f"{url}/v1/quota", params=params) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result
