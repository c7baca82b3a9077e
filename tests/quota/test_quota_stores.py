"""Store internals: key safety, window arithmetic, the memory store forgetting old data, and
the Redis store batching its script calls."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from meltguard.core.windows import Window
from meltguard.quota.memory_store import MemoryStore
from meltguard.quota.redis_store import ScriptPipeliner, counter_key, request_key
from meltguard.quota.store import Consumption, Subject

from .conftest import QuotaServer, RedisServer, consume, peek

names = st.text(min_size=1, max_size=20)


@given(names, names, names, names, names, names)
def test_redis_keys_never_collide_for_different_subjects(
    p1: str, t1: str, s1: str, p2: str, t2: str, s2: str
) -> None:
    window = Window(86400, 20000)
    first, second = Subject(p1, t1, s1), Subject(p2, t2, s2)
    if first != second:
        assert counter_key(first, window) != counter_key(second, window)
        assert request_key(first, "r") != request_key(second, "r")
    assert counter_key(first, window) != request_key(first, str(window.number))


@given(st.floats(0, 4e9), st.integers(1, 366 * 86400))
def test_a_window_holds_its_instant_and_resets_within_its_length(now: float, seconds: int) -> None:
    window = Window.containing(now, seconds)
    assert window.start == window.number * seconds <= now < window.end == window.start + seconds
    assert 1 <= window.reset_seconds(now) <= seconds


def test_a_window_must_last_at_least_a_second() -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        Window.containing(10.0, 0)


@pytest.mark.slow
async def test_subjects_that_look_alike_as_keys_are_counted_apart(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    lookalikes = ["a:b", "a%3Ab", "a%253Ab", "a*", "a?", "ä:b", "🔥", "a b", "a/b"]
    await asyncio.gather(
        *(
            consume(http, server.url, subject=s, cost=n + 1 if n < 3 else 1)
            for n, s in enumerate(lookalikes)
        )
    )
    used = [(await peek(http, server.url, subject))["used"] for subject in lookalikes]
    assert used == [1, 2, 3, 1, 1, 1, 1, 1, 1]


async def test_the_memory_store_forgets_ended_windows_and_old_requests() -> None:
    store = MemoryStore()
    day = 86400
    for n in range(100):
        who = Subject("p/q", "free", f"user-{n}")
        await store.consume(Consumption(who, Window.containing(10.0, day), 1, 3, f"r-{n}", 10.0))
    assert (len(store._counters), len(store._requests)) == (100, 100)
    later = 10.0 + day  # next window: old counters ended, requests kept one window length
    who = Subject("p/q", "free", "user-0")
    outcome = await store.consume(
        Consumption(who, Window.containing(later, day), 1, 3, None, later)
    )
    assert outcome.used == 1
    assert (len(store._counters), len(store._requests)) == (1, 0)


async def test_a_memory_refund_after_the_window_ended_gives_nothing() -> None:
    store = MemoryStore()
    who = Subject("p/q", "free", "u")
    await store.consume(Consumption(who, Window(60, 1), 1, 3, "r", 61.0))
    outcome = await store.refund(who, Window(60, 2), "r", 120.5)
    assert (outcome.reason, outcome.used, outcome.refunded) == ("window-ended", 0, False)


@pytest.mark.parametrize("max_in_flight", [1, 3])
async def test_script_calls_made_while_a_batch_is_out_join_the_next_one(
    redis_server: RedisServer, max_in_flight: int
) -> None:
    """Calls spread over several loop turns share at most ``max_in_flight`` connections
    (one per batch out), and each still gets its own script's answer."""
    redis_server.flush()
    name = f"pipeliner-{max_in_flight}"
    client = aioredis.Redis.from_url(redis_server.url, client_name=name, decode_responses=True)
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    pipeliner = ScriptPipeliner(client, max_in_flight=max_in_flight)

    async def call_later(turns: int) -> int:
        for _ in range(turns):
            await asyncio.sleep(0)
        return int(await pipeliner.call(script, ["total"], [1]))

    try:
        answers = await asyncio.gather(*(call_later(n % 10) for n in range(100)))
        admin = redis.Redis(port=redis_server.port)
        connections = [c for c in admin.client_list() if c["name"] == name]
        admin.close()
    finally:
        await client.aclose()
    assert sorted(answers) == list(range(1, 101))  # every INCRBY ran once, alone
    assert 1 <= len(connections) <= max_in_flight
