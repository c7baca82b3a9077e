"""In-memory store for a single replica: counters live in the process and die with it.

Every operation runs to completion without awaiting, so on one event loop each is atomic.
Expired counters and request records are dropped lazily, oldest first, on each write.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from meltguard.quota.store import ConsumeOutcome, Consumption, RefundOutcome, Subject
from meltguard.quota.windows import Window

_CounterKey = tuple[Subject, Window]
_RequestKey = tuple[Subject, str]


@dataclass(slots=True)
class _RequestRecord:
    allowed: bool
    cost: int
    window: Window
    refunded: bool = False


class MemoryStore:
    """A :class:`~meltguard.quota.store.QuotaStore` held in dictionaries."""

    def __init__(self) -> None:
        self._counters: dict[_CounterKey, int] = {}
        self._requests: dict[_RequestKey, _RequestRecord] = {}
        self._counter_expiry: list[tuple[float, int, _CounterKey]] = []
        self._request_expiry: list[tuple[float, int, _RequestKey]] = []
        self._sequence = 0  # tie-breaker so the heap never compares keys

    def _expire_counter(self, when: float, key: _CounterKey) -> None:
        self._sequence += 1
        heapq.heappush(self._counter_expiry, (when, self._sequence, key))

    def _expire_request(self, when: float, key: _RequestKey) -> None:
        self._sequence += 1
        heapq.heappush(self._request_expiry, (when, self._sequence, key))

    def _drop_expired(self, now: float) -> None:
        while self._counter_expiry and self._counter_expiry[0][0] <= now:
            self._counters.pop(heapq.heappop(self._counter_expiry)[2], None)
        while self._request_expiry and self._request_expiry[0][0] <= now:
            self._requests.pop(heapq.heappop(self._request_expiry)[2], None)

    async def consume(self, take: Consumption) -> ConsumeOutcome:
        self._drop_expired(take.now)
        who, counter = take.who, (take.who, take.window)
        if take.request_id is not None:
            prior = self._requests.get((who, take.request_id))
            if prior is not None:
                return ConsumeOutcome(prior.allowed, self._counters.get(counter, 0), replayed=True)
        used = self._counters.get(counter, 0)
        allowed = used + take.cost <= take.limit
        if allowed:
            if counter not in self._counters:
                self._expire_counter(take.window.end, counter)
            used += take.cost
            self._counters[counter] = used
        if take.request_id is not None:
            self._requests[(who, take.request_id)] = _RequestRecord(allowed, take.cost, take.window)
            self._expire_request(take.now + take.window.seconds, (who, take.request_id))
        return ConsumeOutcome(allowed, used)

    async def refund(
        self, who: Subject, window: Window, request_id: str, now: float
    ) -> RefundOutcome:
        self._drop_expired(now)
        counter = (who, window)
        record = self._requests.get((who, request_id))
        used = self._counters.get(counter, 0)
        if record is None:
            return RefundOutcome("unknown-request", used)
        if not record.allowed:
            return RefundOutcome("not-consumed", used)
        if record.refunded:
            return RefundOutcome("already-refunded", used)
        record.refunded = True
        if record.window != window:
            return RefundOutcome("window-ended", used)
        used = max(0, used - record.cost)
        self._counters[counter] = used
        return RefundOutcome("refunded", used)

    async def used(self, who: Subject, window: Window) -> int:
        return self._counters.get((who, window), 0)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
