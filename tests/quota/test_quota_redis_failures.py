"""Redis restarts lose no count; an unreachable Redis is answered by --on-store-error."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import redis

from meltguard.quota.redis_store import RedisStore
from meltguard.quota.service import OnStoreError

from .conftest import (
    FakeClock,
    RedisServer,
    consume,
    free_port,
    needs_redis,
    peek,
    refund,
    start_quota_server,
)

pytestmark = [pytest.mark.slow, needs_redis]


async def test_killing_and_restarting_redis_and_the_server_loses_no_count(
    tmp_path: Path, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    redis_server = RedisServer(free_port(), tmp_path)
    redis_server.start()
    try:
        server = await start_quota_server(RedisStore(redis_server.url), clock)
        await consume(http, server.url, cost=2, requestId="before")
        await consume(http, server.url, subject="user-2", tier="plus", cost=7)
        await server.close()
        redis_server.kill()
        redis_server.start()
        server = await start_quota_server(RedisStore(redis_server.url), clock)
        assert (await peek(http, server.url))["used"] == 2
        assert (await peek(http, server.url, "user-2", "plus"))["used"] == 7
        status, body, _ = await consume(http, server.url, requestId="before")
        assert (status, body["replayed"], body["used"]) == (200, True, 2)
        assert (await refund(http, server.url, "before"))["used"] == 0
        await server.close()
    finally:
        redis_server.kill()


async def test_a_running_server_reconnects_after_redis_restarts(
    tmp_path: Path, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    redis_server = RedisServer(free_port(), tmp_path)
    redis_server.start()
    server = await start_quota_server(RedisStore(redis_server.url), clock, "closed")
    try:
        await consume(http, server.url)
        redis_server.kill()
        status, body, headers = await consume(http, server.url)
        assert (status, body["allowed"], body["degraded"]) == (503, False, True)
        assert headers["Retry-After"] == "1"
        redis_server.start()
        status, body, _ = await consume(http, server.url)
        assert (status, body["used"]) == (200, 2)
    finally:
        await server.close()
        redis_server.kill()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_a_redis_that_never_answered_is_refused_in_both_modes_and_readyz_says_so(
    mode: OnStoreError, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    server = await start_quota_server(RedisStore(nobody, timeout_seconds=0.2), clock, mode)
    try:
        status, body, _ = await consume(http, server.url)
        # failing open is for an outage of a store that worked, never for a wrong host
        assert (status, body["allowed"], body["degraded"]) == (503, False, True)
        assert "remaining" not in body
        unlimited = await consume(http, server.url, tier="pro")
        assert unlimited[0] == 200  # unlimited tiers never touch the store
        async with http.get(
            f"{server.url}/v1/quota",
            params={"policy": "inference/imagegen", "tier": "free", "subject": "u"},
        ) as response:
            assert response.status == 503
            assert (await response.json())["field"] == "store"
        async with http.get(f"{server.url}/readyz") as response:
            readiness = await response.json()
            assert response.status == 503
        assert (readiness["store"], readiness["storeEverAnswered"]) == ("unreachable", False)
        assert readiness["onStoreError"] == mode
        assert "storeError" in readiness
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{server.url}/metrics") as response:
            text = await response.text()
        assert "meltguard_quota_store_up 0.0" in text
        assert f"meltguard_quota_fail_open {1.0 if mode == 'open' else 0.0}" in text
        assert 'result="fail_closed"' in text
        assert 'result="fail_open"' not in text
        assert "meltguard_quota_failing_open 0.0" in text
        assert 'meltguard_quota_store_errors_total{operation="consume"} 1.0' in text
    finally:
        await server.close()


async def test_a_flushed_script_cache_is_reloaded_and_nothing_counts_twice(
    redis_server: RedisServer, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    redis_server.flush()
    server = await start_quota_server(RedisStore(redis_server.url), clock)
    try:
        await consume(http, server.url, requestId="one")
        flusher = redis.Redis(port=redis_server.port)
        flusher.script_flush()
        flusher.close()
        results = await asyncio.gather(
            *(consume(http, server.url, subject=f"s{n}", requestId="two") for n in range(20))
        )
        assert [status for status, _, _ in results] == [200] * 20
        assert (await peek(http, server.url))["used"] == 1
        assert [(await peek(http, server.url, f"s{n}"))["used"] for n in range(20)] == [1] * 20
    finally:
        await server.close()


async def test_a_stalled_redis_is_answered_within_the_timeout_and_charges_nothing_later(
    own_redis: RedisServer, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    redis_server = own_redis
    assert redis_server.process is not None
    timeout = 0.5
    server = await start_quota_server(RedisStore(redis_server.url, timeout), clock, "closed")
    try:
        assert (await consume(http, server.url, tier="plus"))[0] == 200  # clock measured
        redis_server.process.send_signal(signal.SIGSTOP)  # stalled, not gone

        async def timed(n: int) -> tuple[int, float]:
            started = time.perf_counter()
            status, _, _ = await consume(http, server.url, tier="plus", requestId=f"r{n}")
            return status, time.perf_counter() - started

        results = await asyncio.gather(*(timed(n) for n in range(20)))
        seconds = sorted(elapsed for _, elapsed in results)
        print(f"--store-timeout {timeout}: p50 {seconds[10]:.3f} s, max {seconds[-1]:.3f} s")
        assert [status for status, _ in results] == [503] * 20
        assert seconds[-1] < timeout + 0.5  # before: p50 2.0 s, max 3.0 s with a 1 s timeout
        redis_server.process.send_signal(signal.SIGCONT)  # Redis now runs what was queued
        await asyncio.sleep(0.5)
        assert (await peek(http, server.url, tier="plus"))["used"] == 1
        reader = redis.Redis(port=redis_server.port, decode_responses=True)
        records = reader.keys("meltguard:quota:v2:r:*")
        reader.close()
        assert records == []  # no request record either: a retry is a new decision
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        await server.close()
