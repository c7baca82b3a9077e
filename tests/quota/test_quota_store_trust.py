"""A store is trusted only once it has answered: no failing open on a wrong password or host,
failing open for a bounded time after an outage, and its password in no log line or answer."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meltguard.quota.redis_store import RedisStore
from meltguard.quota.service import OnStoreError

from .conftest import (
    MELTGUARD,
    FakeClock,
    RedisServer,
    consume,
    free_port,
    launch_quota_server,
    needs_redis,
    quotas_json,
    start_quota_server,
)

pytestmark = [pytest.mark.slow, needs_redis]

PASSWORD = "s3cret-Pa55word"
WRONG_PASSWORD = "Wr0ng-Pa55word"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path, password=PASSWORD)
    server.start()
    yield server
    server.kill()


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def metric_lines(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as response:
        return await response.text()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_a_wrong_redis_password_gives_a_server_that_is_not_ready_and_refuses(
    mode: OnStoreError, locked_redis: RedisServer, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    wrong = locked_redis.url.replace(PASSWORD, WRONG_PASSWORD)
    server = await start_quota_server(RedisStore(wrong), clock, mode)
    try:
        status, readiness = await get_json(http, f"{server.url}/readyz")
        print("readyz with a wrong password:", status, readiness)
        assert (status, readiness["ready"], readiness["storeEverAnswered"]) == (503, False, False)
        assert WRONG_PASSWORD not in json.dumps(readiness)
        status, body, _ = await consume(http, server.url)
        assert (status, body["allowed"], body["degraded"]) == (503, False, True)
        assert "meltguard_quota_failing_open 0.0" in await metric_lines(http, server.url)
    finally:
        await server.close()


async def test_failing_open_lasts_only_fail_open_for_after_the_last_answer(
    own_redis: RedisServer,
    clock: FakeClock,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisStore(own_redis.url, timeout_seconds=0.2)
    server = await start_quota_server(store, clock, "open", fail_open_seconds=60)
    try:
        assert (await consume(http, server.url))[0] == 200
        own_redis.kill()
        clock.now += 30
        status, body, _ = await consume(http, server.url)
        assert (status, body["allowed"], body["degraded"]) == (200, True, True)
        status, readiness = await get_json(http, f"{server.url}/readyz")
        print("readyz 30 s into an outage:", status, readiness)
        assert (status, readiness["failingOpenSecondsLeft"]) == (200, 30)
        assert "meltguard_quota_failing_open 1.0" in await metric_lines(http, server.url)

        clock.now += 31
        status, body, _ = await consume(http, server.url)
        assert (status, body["allowed"], body["degraded"]) == (503, False, True)
        assert "still failing after --fail-open-for 60 s" in caplog.text
        status, readiness = await get_json(http, f"{server.url}/readyz")
        print("readyz 61 s into an outage:", status, readiness)
        assert (status, readiness["storeEverAnswered"]) == (503, True)
        assert "failingOpenSecondsLeft" not in readiness
        assert "meltguard_quota_failing_open 0.0" in await metric_lines(http, server.url)
    finally:
        await server.close()


def answer(url: str | urllib.request.Request) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def run_and_stop(store_url: str, limits: Path, log: Path) -> dict[str, tuple[int, str]]:
    """Run quota-server at DEBUG with ``store_url``, call it, SIGTERM it; its answers."""
    with log.open("ab") as sink:
        process, url = launch_quota_server(
            "--store", store_url, "--limits", str(limits), "--log-level", "DEBUG", log=sink
        )
        try:
            request = urllib.request.Request(
                f"{url}/v1/consume",
                data=b'{"policy": "inference/imagegen", "tier": "free", "subject": "u"}',
                headers={"Content-Type": "application/json"},
            )
            return {"readyz": answer(f"{url}/readyz"), "consume": answer(request)}
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


def test_the_redis_password_is_in_no_log_line_and_no_answer(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    limits = tmp_path / "quotas.json"
    limits.write_text(quotas_json())
    log = tmp_path / "server.log"
    right = run_and_stop(locked_redis.url, limits, log)
    wrong = run_and_stop(locked_redis.url.replace(PASSWORD, WRONG_PASSWORD), limits, log)
    refused = subprocess.run(
        [MELTGUARD, "quota-server", "--store", f"http://:{PASSWORD}@h/", "--limits", str(limits)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    text = log.read_text() + refused.stderr.decode()
    print(text)
    assert (right["readyz"][0], right["consume"][0]) == (200, 200)
    assert (wrong["readyz"][0], wrong["consume"][0]) == (503, 503)
    assert refused.returncode == 2
    assert "--store must be" in refused.stderr.decode()
    assert f"store redis://***@127.0.0.1:{locked_redis.port}/0" in text  # the start line
    assert "never answered" in text
    for secret in (PASSWORD, WRONG_PASSWORD):
        assert secret not in text
        assert all(secret not in body for _, body in (*right.values(), *wrong.values()))
