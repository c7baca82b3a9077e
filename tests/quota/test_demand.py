"""The demand signal the quota service counts: rates, and subjects reaching each attempt count.

Served over real HTTP on 127.0.0.1 (``/v1/demand`` and ``/metrics``), on the memory store and
on a real redis-server, where two replicas sharing the store must add up to the exact whole.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meltguard.core.windows import Window
from meltguard.quota.demand import MAX_REACHING, TierTally, reaching_length
from meltguard.quota.openapi import OPENAPI_DOCUMENT
from meltguard.quota.redis_store import RedisStore

from .conftest import (
    POLICY,
    FakeClock,
    QuotaServer,
    RedisServer,
    consume,
    make_store,
    needs_redis,
    quotas_json,
    start_quota_server,
)

DAY = Window(86400, 20_000)


def test_a_consume_crosses_every_count_its_cost_spans() -> None:
    tally = TierTally(started=0.0)
    tally.count_reaching(DAY, attempts=1, cost=1, length=6)
    tally.count_reaching(DAY, attempts=4, cost=3, length=6)  # 1 -> 4: crosses 2, 3 and 4
    tally.count_reaching(DAY, attempts=2, cost=2, length=6)  # another subject, 0 -> 2
    assert tally.reaching == [2, 2, 1, 1, 0, 0]


def test_subjects_past_the_last_entry_are_counted_in_it_once() -> None:
    tally = TierTally(started=0.0)
    for attempts in range(1, 10):
        tally.count_reaching(DAY, attempts=attempts, cost=1, length=3)
    assert tally.reaching == [1, 1, 1]


def test_a_new_window_starts_from_zero_and_an_ended_one_reads_empty() -> None:
    tally = TierTally(started=0.0)
    tally.count_reaching(DAY, attempts=2, cost=2, length=4)
    in_day = DAY.number * DAY.seconds + 10
    assert tally.current_reaching(in_day) == (1, 1, 0, 0)
    assert tally.current_reaching(DAY.end + 1) == ()
    tally.count_reaching(Window(86400, DAY.number + 1), attempts=1, cost=1, length=4)
    assert tally.reaching == [1, 0, 0, 0]


def test_a_changed_baseline_keeps_the_entries_that_still_fit() -> None:
    tally = TierTally(started=0.0)
    tally.count_reaching(DAY, attempts=4, cost=4, length=4)
    tally.count_reaching(DAY, attempts=3, cost=1, length=2)
    assert tally.reaching == [1, 1]
    tally.count_reaching(DAY, attempts=1, cost=1, length=3)
    assert tally.reaching == [2, 1, 0]


def test_reaching_covers_twice_the_baseline_up_to_the_cap() -> None:
    assert [reaching_length(b) for b in (0, 1, 20, MAX_REACHING)] == [1, 2, 40, MAX_REACHING]


def test_rates_average_over_the_recent_interval_only() -> None:
    tally = TierTally(started=1000.0)
    tally.count_units(1000.2, 3, allowed=True)
    tally.count_units(1000.7, 2, allowed=False)
    first = tally.demand("free", 1000.9)  # under a second since start: over one second
    assert (first.attempts_per_second, first.admitted_per_second) == (5.0, 3.0)
    assert first.refused_per_second == 2.0
    later = tally.demand("free", 1030.0)
    assert later.attempts_per_second == pytest.approx(5 / 30)
    assert tally.demand("free", 1061.0).attempts_per_second == 0.0


async def get_demand(
    http: aiohttp.ClientSession, url: str, query: str = f"policy={POLICY}"
) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/v1/demand?{query}") as response:
        return response.status, await response.json()


async def scraped(http: aiohttp.ClientSession, url: str) -> dict[tuple[str, ...], float]:
    """The demand samples of ``/metrics``, keyed by name then label values."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "units" in sample.name or "reaching" in sample.name:
                key = (sample.name, *(sample.labels[k] for k in sorted(sample.labels)))
                samples[key] = sample.value
    return samples


async def attempt(
    http: aiohttp.ClientSession, servers: list[QuotaServer], subject: str, costs: list[int]
) -> None:
    """Consume ``costs`` in turn for ``subject`` of the free tier, going round the servers."""
    for index, cost in enumerate(costs):
        await consume(http, servers[index % len(servers)].url, subject=subject, cost=cost)


async def test_the_demand_answer_counts_attempts_admissions_and_refusals(
    server: QuotaServer, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    # free: limit 3, baseline 3 -> six reaching entries
    await attempt(http, [server], "heavy", [1, 1, 1, 1, 1])  # 3 admitted, 2 refused
    await attempt(http, [server], "light", [1, 1])
    await attempt(http, [server], "batch", [2])
    await consume(http, server.url, subject="pro-user", tier="pro", cost=4)
    status, body = await get_demand(http, server.url)
    assert status == 200
    jsonschema.validate(
        body, {"$ref": "#/components/schemas/Demand", "components": OPENAPI_DOCUMENT["components"]}
    )
    tiers = {tier["tier"]: tier for tier in body["tiers"]}
    assert list(tiers) == ["free", "plus", "pro"]
    free = tiers["free"]
    assert free["reaching"] == [3, 3, 1, 1, 1, 0]
    # the clock has not moved since the first decision: the rates are over one second
    rates = [free[f"{what}PerSecond"] for what in ("attempts", "admitted", "refused")]
    assert rates == [9.0, 7.0, 2.0]
    assert tiers["pro"] == {
        "tier": "pro",
        "attemptsPerSecond": 4.0,
        "admittedPerSecond": 4.0,
        "refusedPerSecond": 0.0,
        "reaching": [],
    }
    assert tiers["plus"]["reaching"] == [] and tiers["plus"]["attemptsPerSecond"] == 0.0
    assert body["policy"] == POLICY and body["observedAt"] == clock.now

    metrics = await scraped(http, server.url)
    assert metrics[("meltguard_quota_attempted_units_total", POLICY, "free")] == 9
    assert metrics[("meltguard_quota_admitted_units_total", POLICY, "free")] == 7
    assert metrics[("meltguard_quota_refused_units_total", POLICY, "free")] == 2
    reaching = {
        int(key[1]): value
        for key, value in metrics.items()
        if key[0] == "meltguard_quota_subjects_reaching" and key[3] == "free"
    }
    assert reaching == {1: 3, 2: 3, 3: 1, 4: 1, 5: 1, 6: 0}


async def test_a_retried_request_id_is_not_a_new_attempt(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    for _ in range(3):
        await consume(http, server.url, subject="retrier", requestId="same-image")
    _, body = await get_demand(http, server.url)
    assert body["tiers"][0]["reaching"][:2] == [1, 0]
    assert body["tiers"][0]["attemptsPerSecond"] == 1.0


async def test_rates_fade_and_reaching_resets_with_the_window(
    server: QuotaServer, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    await attempt(http, [server], "user-1", [1, 1])
    clock.now += 30
    _, body = await get_demand(http, server.url)
    assert body["tiers"][0]["attemptsPerSecond"] == pytest.approx(2 / 30)
    clock.now += 40
    _, body = await get_demand(http, server.url)
    assert body["tiers"][0]["attemptsPerSecond"] == 0.0
    assert body["tiers"][0]["reaching"][:3] == [1, 1, 0]  # same 24 h window
    clock.now += 86400
    _, body = await get_demand(http, server.url)
    assert body["tiers"][0]["reaching"] == []
    assert not any("reaching" in key[0] for key in await scraped(http, server.url))


async def test_a_new_baseline_resizes_reaching(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    await attempt(http, [server], "user-1", [1])
    server.publish(quotas_json(free=10, free_baseline=10))
    await attempt(http, [server], "user-2", [1, 1])
    _, body = await get_demand(http, server.url)
    assert body["tiers"][0]["reaching"] == [2, 1] + [0] * 18


@needs_redis
async def test_replicas_sharing_a_store_add_up_to_the_exact_whole(
    redis_server: RedisServer, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    replicas = [await start_quota_server(make_store("redis", redis_server), clock)]
    replicas.append(await start_quota_server(RedisStore(redis_server.url), clock))
    try:
        spread = [
            attempt(http, replicas, "heavy", [1] * 7),
            attempt(http, replicas, "light", [1, 1]),
            attempt(http, replicas[1:], "batch", [3, 2]),
        ]
        await asyncio.gather(*spread)
        parts = [(await get_demand(http, replica.url))[1] for replica in replicas]
    finally:
        for replica in replicas:
            await replica.close()
    reaching = [part["tiers"][0]["reaching"] for part in parts]
    assert all(any(entries) for entries in reaching)  # each replica holds a share
    assert [a + b for a, b in zip(*reaching, strict=True)] == [3, 3, 2, 2, 2, 1]
    assert sum(part["tiers"][0]["attemptsPerSecond"] for part in parts) == 14.0


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("", 400, "policy"),
        (f"policy={POLICY}&policy={POLICY}", 400, "policy"),
        (f"policy={POLICY}&tier=free", 400, "tier"),
        ("policy=", 400, "policy"),
        ("policy=nobody/nothing", 404, "policy"),
    ],
)
async def test_a_bad_demand_query_is_refused_naming_the_field(
    query: str, status: int, field: str, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    server = await start_quota_server(make_store("memory", None), clock)
    try:
        answer = await get_demand(http, server.url, query)
    finally:
        await server.close()
    assert answer[0] == status
    assert answer[1]["field"] == field, answer[1]


def test_a_late_answer_from_the_previous_window_does_not_reset_the_current_one() -> None:
    tally = TierTally(started=0.0)
    tally.count_reaching(Window(86400, DAY.number + 1), attempts=1, cost=1, length=2)
    tally.count_reaching(DAY, attempts=2, cost=2, length=2)
    assert tally.window == Window(86400, DAY.number + 1) and tally.reaching == [1, 0]
    tally.count_reaching(Window(3600, 1), attempts=1, cost=1, length=2)  # a new window length
    assert tally.reaching == [1, 0] and tally.window == Window(3600, 1)
