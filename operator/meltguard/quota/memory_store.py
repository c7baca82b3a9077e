"""In-memory store for a single replica: counters live in the process and die with it.

Every operation runs to completion without awaiting, so on one event loop each is atomic.
Expired counters and request records are dropped lazily, oldest first, on each write.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Generic, TypeVar

from meltguard.core.windows import Window
from meltguard.quota.store import ConsumeOutcome, Consumption, RefundOutcome, Subject

K = TypeVar("K")
V = TypeVar("V")
_CounterKey = tuple[Subject, Window]
_RequestKey = tuple[Subject, str]


@dataclass(slots=True)
class _RequestRecord:
    allowed: bool
    cost: int
    window: Window
    refunded: bool = False


class _Expiring(Generic[K, V]):
    """A dict whose entries vanish at the time given when they were first set.

    A heap of (expiry, sequence, key) finds the expired entries oldest first; the sequence
    breaks ties so the heap never compares keys. Re-setting a key keeps its first expiry:
    counters end with their window, request records one window after their first answer.
    """

    def __init__(self) -> None:
        self.entries: dict[K, V] = {}
        self._expiry: list[tuple[float, int, K]] = []
        self._sequence = 0

    def set(self, key: K, value: V, expires_at: float) -> None:
        if key not in self.entries:
            self._sequence += 1
            heapq.heappush(self._expiry, (expires_at, self._sequence, key))
        self.entries[key] = value

    def drop_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            self.entries.pop(heapq.heappop(self._expiry)[2], None)


class MemoryStore:
    """A :class:`~meltguard.quota.store.QuotaStore` held in dictionaries."""

    def __init__(self) -> None:
        self._counter_table: _Expiring[_CounterKey, int] = _Expiring()
        self._request_table: _Expiring[_RequestKey, _RequestRecord] = _Expiring()
        self._counters = self._counter_table.entries
        self._requests = self._request_table.entries

    def _drop_expired(self, now: float) -> None:
        self._counter_table.drop_expired(now)
        self._request_table.drop_expired(now)

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
            used += take.cost
            self._counter_table.set(counter, used, take.window.end)
        if take.request_id is not None:
            record = _RequestRecord(allowed, take.cost, take.window)
            self._request_table.set((who, take.request_id), record, take.now + take.window.seconds)
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
        self._counter_table.set(counter, used, window.end)
        return RefundOutcome("refunded", used)

    async def used(self, who: Subject, window: Window) -> int:
        return self._counters.get((who, window), 0)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
