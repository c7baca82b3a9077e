"""Both stores against a reference model: random consume/refund/clock sequences must agree.

The model is the contract written plainly (a dict per window, answers remembered per
request id); the memory store and the Redis store (a real redis-server) must give the same
outcome as the model at every step.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meltguard.core.windows import Window
from meltguard.quota.memory_store import MemoryStore
from meltguard.quota.redis_store import RedisStore
from meltguard.quota.store import Consumption, QuotaStore, Subject

from .conftest import RedisServer, needs_redis

WINDOW_SECONDS = 60
#: 8 s before a window ends; the ticks of one example add up to less than 55 s, so an
#: example crosses at most one window boundary and no request record reaches its 60 s
#: expiry (Redis expires by its own clock, the memory store by the fake one).
START = 1_800_000_000.0 - 8
Op = tuple[Any, ...]


@dataclass
class Model:
    used: dict[tuple[str, int], int] = field(default_factory=dict)
    answers: dict[tuple[str, str], tuple[bool, int, int]] = field(default_factory=dict)
    refunded: set[tuple[str, str]] = field(default_factory=set)

    def consume(
        self, subject: str, window: int, cost: int, limit: int, rid: str | None
    ) -> tuple[bool, int, bool]:
        counter = (subject, window)
        if rid is not None and (subject, rid) in self.answers:
            return (self.answers[(subject, rid)][0], self.used.get(counter, 0), True)
        used = self.used.get(counter, 0)
        allowed = used + cost <= limit
        if allowed:
            self.used[counter] = used = used + cost
        if rid is not None:
            self.answers[(subject, rid)] = (allowed, cost, window)
        return (allowed, used, False)

    def refund(self, subject: str, window: int, rid: str) -> tuple[str, int]:
        used = self.used.get((subject, window), 0)
        if (subject, rid) not in self.answers:
            return ("unknown-request", used)
        allowed, cost, consumed_in = self.answers[(subject, rid)]
        if not allowed:
            return ("not-consumed", used)
        if (subject, rid) in self.refunded:
            return ("already-refunded", used)
        self.refunded.add((subject, rid))
        if consumed_in != window:
            return ("window-ended", used)
        self.used[(subject, window)] = used = max(0, used - cost)
        return ("refunded", used)


consume_op = st.tuples(
    st.just("consume"),
    st.sampled_from(["a", "b"]),
    st.integers(1, 3),
    st.integers(0, 5),
    st.none() | st.sampled_from(["r1", "r2", "r3"]),
)
refund_op = st.tuples(
    st.just("refund"), st.sampled_from(["a", "b"]), st.sampled_from(["r1", "r2", "r3"])
)
tick_op = st.tuples(st.just("tick"), st.sampled_from([2.0, 12.0]))


def _within_request_lifetime(ops: list[Op]) -> bool:
    return sum(float(op[1]) for op in ops if op[0] == "tick") < 55


any_op: st.SearchStrategy[Op] = st.one_of(consume_op, refund_op, tick_op)
operations = st.lists(any_op, min_size=1, max_size=20).filter(_within_request_lifetime)


#: Sequences worth checking every run: a refund after the window ended, a replay after a
#: refund, and a refused request retried once there is room.
KNOWN_CASES: list[list[Op]] = [
    [("consume", "a", 1, 5, "r1"), ("tick", 12.0), ("refund", "a", "r1")],
    [("consume", "a", 2, 5, "r1"), ("refund", "a", "r1"), ("consume", "a", 2, 5, "r1")],
    [
        ("consume", "a", 3, 3, None),
        ("consume", "b", 1, 0, "r2"),
        ("tick", 12.0),
        ("consume", "b", 1, 3, "r2"),
        ("refund", "b", "r2"),
    ],
]


async def replay(store: QuotaStore, ops: list[Op]) -> None:
    model, now = Model(), START
    for op in ops:
        if op[0] == "tick":
            now += op[1]
            continue
        window = Window.containing(now, WINDOW_SECONDS)
        who = Subject("ns/policy", "free", op[1])
        if op[0] == "consume":
            _, subject, cost, limit, rid = op
            got = await store.consume(Consumption(who, window, cost, limit, rid, now))
            expected = model.consume(subject, window.number, cost, limit, rid)
            assert (got.allowed, got.used, got.replayed) == expected, op
        else:
            got_refund = await store.refund(who, window, op[2], now)
            assert (got_refund.reason, got_refund.used) == model.refund(op[1], window.number, op[2])


def with_known_cases(test: Any) -> Any:
    for case in KNOWN_CASES:
        test = example(ops=case)(test)
    return test


@settings(max_examples=60, deadline=None)
@given(ops=operations)
@with_known_cases
def test_the_memory_store_behaves_like_the_model(ops: list[Op]) -> None:
    asyncio.run(replay(MemoryStore(), ops))


@needs_redis
@pytest.mark.slow
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
@with_known_cases
def test_the_redis_store_behaves_like_the_model(redis_server: RedisServer, ops: list[Op]) -> None:
    async def run() -> None:
        redis_server.flush()
        store = RedisStore(redis_server.url)
        try:
            await replay(store, ops)
        finally:
            await store.close()

    asyncio.run(run())
