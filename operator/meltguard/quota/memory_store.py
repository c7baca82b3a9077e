"""In-memory store for a single replica: counters live in the process and die with it.

Every operation runs to completion without awaiting, so on one event loop each is atomic.
Per subject and window it keeps the units used and the units attempted (refused ones too).
Expired counters and request records are dropped lazily, oldest first, on each write.
Request records are capped (``max_requests``): past the cap the oldest is forgotten, and
counted, so a flood of distinct request ids costs bounded memory instead of an OOM kill
that would lose every counter. A refused request shares one record: it took nothing.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
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
    caller: str = ""
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

    def drop_soonest(self) -> None:
        """Forget the entry that expires first (each key is in the heap exactly once)."""
        self.entries.pop(heapq.heappop(self._expiry)[2], None)


#: What a refused request is remembered by: one shared record, since it took nothing.
_REFUSED = _RequestRecord(allowed=False, cost=0, window=Window(1, 0))
#: Request records kept at most by default (about 100 MiB at a few hundred bytes each).
DEFAULT_MAX_REQUESTS = 200_000


class MemoryStore:
    """A :class:`~meltguard.quota.store.QuotaStore` held in dictionaries.

    ``on_forget`` is called for each request record dropped at the ``max_requests`` cap
    before its time (a retry of that request would count again).
    """

    def __init__(
        self,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        on_forget: Callable[[], None] = lambda: None,
    ) -> None:
        self._counter_table: _Expiring[_CounterKey, int] = _Expiring()
        self._attempt_table: _Expiring[_CounterKey, int] = _Expiring()
        self._request_table: _Expiring[_RequestKey, _RequestRecord] = _Expiring()
        self._counters = self._counter_table.entries
        self._attempts = self._attempt_table.entries
        self._requests = self._request_table.entries
        self.max_requests = max_requests
        self.on_forget = on_forget

    def request_records(self) -> int:
        """Request ids remembered now."""
        return len(self._requests)

    def _drop_expired(self, now: float) -> None:
        self._counter_table.drop_expired(now)
        self._attempt_table.drop_expired(now)
        self._request_table.drop_expired(now)

    async def consume(self, take: Consumption) -> ConsumeOutcome:
        self._drop_expired(take.now)
        who, counter = take.who, (take.who, take.window)
        if take.request_id is not None:
            prior = self._requests.get((who, take.request_id))
            if prior is not None:
                return ConsumeOutcome(
                    prior.allowed,
                    self._counters.get(counter, 0),
                    self._attempts.get(counter, 0),
                    replayed=True,
                )
        attempts = self._attempts.get(counter, 0) + take.cost
        self._attempt_table.set(counter, attempts, take.window.end)
        used = self._counters.get(counter, 0)
        allowed = used + take.cost <= take.limit
        if allowed:
            used += take.cost
            self._counter_table.set(counter, used, take.window.end)
        if take.request_id is not None:
            if len(self._requests) >= self.max_requests:
                self._request_table.drop_soonest()
                self.on_forget()
            record = (
                _RequestRecord(allowed, take.cost, take.window, take.caller)
                if allowed
                else _REFUSED
            )
            self._request_table.set((who, take.request_id), record, take.now + take.window.seconds)
        return ConsumeOutcome(allowed, used, attempts)

    async def refund(
        self, who: Subject, window: Window, request_id: str, now: float, *, caller: str = ""
    ) -> RefundOutcome:
        self._drop_expired(now)
        counter = (who, window)
        record = self._requests.get((who, request_id))
        used = self._counters.get(counter, 0)
        if record is None:
            return RefundOutcome("unknown-request", used)
        if not record.allowed:
            return RefundOutcome("not-consumed", used)
        if record.caller != caller:
            return RefundOutcome("other-caller", used)
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
