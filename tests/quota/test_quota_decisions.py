"""The quota service's decisions over real HTTP, for the memory store and a real Redis."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from meltguard.quota.redis_store import RedisStore

from .conftest import (
    POLICY,
    FakeClock,
    QuotaServer,
    RedisServer,
    consume,
    needs_redis,
    peek,
    quotas_json,
    refund,
    start_quota_server,
)

pytestmark = pytest.mark.slow


async def test_200_concurrent_consumers_of_one_subject_get_exactly_the_limit(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    results = await asyncio.gather(*(consume(http, server.url) for _ in range(200)))
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) == 3
    assert statuses.count(429) == 197
    assert (await peek(http, server.url))["used"] == 3


async def test_50_subjects_x_20_requests_each_end_exactly_at_their_limit(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    subjects = [f"user-{n}" for n in range(50)]
    requests = [consume(http, server.url, subject=s) for s in subjects for _ in range(20)]
    results = await asyncio.gather(*requests)
    allowed: dict[str, int] = {}
    for status, body, _ in results:
        assert status in (200, 429)
        assert body["limit"] == 3
    for (status, _, _), subject in zip(
        results, [s for s in subjects for _ in range(20)], strict=True
    ):
        allowed[subject] = allowed.get(subject, 0) + (status == 200)
    assert allowed == dict.fromkeys(subjects, 3)
    for subject in subjects[:5]:
        assert (await peek(http, server.url, subject))["remaining"] == 0


@needs_redis
async def test_two_replicas_sharing_redis_never_admit_more_than_the_limit(
    redis_server: RedisServer, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    redis_server.flush()
    replicas = [await start_quota_server(RedisStore(redis_server.url), clock) for _ in range(2)]
    try:
        calls = [consume(http, replicas[n % 2].url) for n in range(200)]
        statuses = [status for status, _, _ in await asyncio.gather(*calls)]
        assert statuses.count(200) == 3
        assert (await peek(http, replicas[1].url))["used"] == 3
    finally:
        for replica in replicas:
            await replica.close()


async def test_a_retried_request_id_consumes_once(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    answers = [await consume(http, server.url, requestId="img-1") for _ in range(10)]
    assert [status for status, _, _ in answers] == [200] * 10
    assert [body.get("replayed", False) for _, body, _ in answers] == [False] + [True] * 9
    assert (await peek(http, server.url))["used"] == 1
    concurrent = await asyncio.gather(
        *(consume(http, server.url, requestId="img-2") for _ in range(10))
    )
    assert sum(not body.get("replayed", False) for _, body, _ in concurrent) == 1
    assert (await peek(http, server.url))["used"] == 2


async def test_a_refused_request_id_stays_refused_when_retried(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    for n in range(3):
        assert (await consume(http, server.url, requestId=f"ok-{n}"))[0] == 200
    first = await consume(http, server.url, requestId="late")
    await refund(http, server.url, "ok-0")  # room again, but "late" was answered already
    retry = await consume(http, server.url, requestId="late")
    assert first[0] == retry[0] == 429
    assert retry[1]["replayed"] is True
    assert (await peek(http, server.url))["used"] == 2


async def test_refund_gives_back_exactly_one_unit_once(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    await consume(http, server.url, requestId="a")
    await consume(http, server.url, requestId="b", cost=2)
    assert (await peek(http, server.url))["used"] == 3
    first = await refund(http, server.url, "a")
    assert (first["refunded"], first["reason"], first["used"]) == (True, "refunded", 2)
    second = await refund(http, server.url, "a")
    assert (second["refunded"], second["reason"], second["used"]) == (False, "already-refunded", 2)
    assert (await refund(http, server.url, "never-seen"))["reason"] == "unknown-request"
    assert (await refund(http, server.url, "b"))["used"] == 0
    assert (await peek(http, server.url))["remaining"] == 3


async def test_a_refund_of_a_refused_request_gives_nothing(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    await consume(http, server.url, cost=3)
    assert (await consume(http, server.url, requestId="over"))[0] == 429
    answer = await refund(http, server.url, "over")
    assert (answer["refunded"], answer["reason"], answer["used"]) == (False, "not-consumed", 3)


async def test_tightened_below_usage_refuses_then_relaxing_restores_the_remaining_budget(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    for _ in range(2):
        assert (await consume(http, server.url))[0] == 200
    server.publish(quotas_json(free=1, free_baseline=3))
    status, body, headers = await consume(http, server.url)
    assert status == 429
    assert body["tightened"] is True
    assert (body["limit"], body["baseline"], body["remaining"]) == (1, 3, 0)
    assert headers["RateLimit-Policy"] == '"free";q=1;w=86400'
    server.publish(quotas_json(free=3, free_baseline=3))
    status, body, _ = await consume(http, server.url)
    assert (status, body["tightened"], body["remaining"]) == (200, False, 0)
    assert (await consume(http, server.url))[0] == 429


async def test_the_window_resets_at_the_epoch_aligned_boundary(
    server: QuotaServer, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    await consume(http, server.url, cost=3)
    status, body, headers = await consume(http, server.url)
    day_end = (clock.now // 86400 + 1) * 86400
    assert status == 429
    assert body["resetSeconds"] == day_end - clock.now
    assert headers["Retry-After"] == str(int(day_end - clock.now))
    clock.now = day_end - 0.5
    assert (await consume(http, server.url))[0] == 429
    clock.now = day_end
    status, body, _ = await consume(http, server.url)
    assert (status, body["remaining"], body["resetSeconds"]) == (200, 2, 86400)


async def test_answers_carry_the_draft_ratelimit_headers(
    server: QuotaServer, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    status, body, headers = await consume(http, server.url, cost=2)
    reset = int((clock.now // 86400 + 1) * 86400 - clock.now)
    assert status == 200
    assert body == {
        "policy": POLICY,
        "tier": "free",
        "allowed": True,
        "limit": 3,
        "baseline": 3,
        "windowSeconds": 86400,
        "tightened": False,
        "used": 2,
        "remaining": 1,
        "resetSeconds": reset,
    }
    assert headers["RateLimit-Policy"] == '"free";q=3;w=86400'
    assert headers["RateLimit"] == f'"free";r=1;t={reset}'
    assert "Retry-After" not in headers
    status, body, headers = await consume(http, server.url, cost=2)
    assert (status, body["allowed"], body["remaining"]) == (429, False, 1)
    assert headers["Retry-After"] == str(reset)


async def test_an_unlimited_tier_is_always_allowed_and_never_counted(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    answers = [await consume(http, server.url, tier="pro", cost=1000) for _ in range(5)]
    for status, body, headers in answers:
        assert status == 200
        assert body == {
            "policy": POLICY,
            "tier": "pro",
            "allowed": True,
            "unlimited": True,
            "tightened": False,
        }
        assert "RateLimit" not in headers
    assert (await peek(http, server.url, tier="pro"))["unlimited"] is True


async def test_tiers_and_subjects_count_separately(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    await consume(http, server.url, cost=3)
    assert (await consume(http, server.url, subject="user-2"))[0] == 200
    status, body, _ = await consume(http, server.url, tier="plus", cost=5)
    assert (status, body["remaining"]) == (200, 195)
    assert (await peek(http, server.url))["used"] == 3
