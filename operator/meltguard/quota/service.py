"""Quota decisions over a store and the limits in force, free of HTTP.

The service resolves the tier, picks the current window, asks the store, and turns store
failures into the ``--on-store-error`` answer (``open``: allow, ``closed``: refuse), counting
each outcome in the metrics. :mod:`meltguard.quota.app` maps the answers to HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from meltguard.api.quotas import QuotaTier
from meltguard.core.demand import DemandSignal
from meltguard.core.windows import Window
from meltguard.quota.demand import DemandTally, TierTally, reaching_length
from meltguard.quota.limits import LimitsRegistry, LimitsTable, UnknownQuota
from meltguard.quota.metrics import QuotaMetrics
from meltguard.quota.requests import ConsumeRequest, PeekRequest, RefundRequest
from meltguard.quota.store import (
    Consumption,
    QuotaStore,
    RefundReason,
    StoreUnavailable,
    Subject,
)

log = logging.getLogger(__name__)

OnStoreError = Literal["open", "closed"]
#: How long ``--on-store-error open`` allows requests after the store's last answer.
DEFAULT_FAIL_OPEN_SECONDS = 300.0


class QuotaAnswer(NamedTuple):
    """What the service knows about one subject's tier after an operation.

    ``limit`` is the subject's own whole limit in its current window (the tier's limit in
    force may be fractional, see :meth:`QuotaTier.subject_limit`), None for an unlimited tier;
    ``used``/``reset_seconds`` are None for an unlimited tier and when the store failed
    (``degraded``); ``allowed`` is None for a peek.
    """

    policy: str
    tier: QuotaTier
    allowed: bool | None = None
    used: int | None = None
    reset_seconds: int | None = None
    replayed: bool = False
    degraded: bool = False
    limit: int | None = None

    @property
    def remaining(self) -> int | None:
        if self.used is None or self.limit is None:
            return None
        return max(0, self.limit - self.used)

    @property
    def tightened(self) -> bool:
        """The limit in force is below the tier's baseline (GPUs are melting)."""
        limit, baseline = self.tier.limit, self.tier.baseline
        return self.tier.tightened or (
            limit is not None and baseline is not None and limit < baseline
        )


def subject_window(policy: str, tier: QuotaTier, subject: str, now: float) -> tuple[Window, int]:
    """The window of a limited ``tier`` holding ``now`` and ``subject``'s whole limit in it."""
    assert tier.window_seconds is not None  # a limited tier of a validated document
    window = Window.containing(now, tier.window_seconds)
    return window, tier.subject_limit(f"{policy}/{tier.name}", subject, window.start)


@dataclass(frozen=True, slots=True)
class RefundAnswer:
    """A refund's outcome; ``answer`` holds the counter after it."""

    reason: RefundReason | Literal["unlimited"]
    answer: QuotaAnswer

    @property
    def refunded(self) -> bool:
        return self.reason == "refunded"


@dataclass(frozen=True, slots=True)
class Readiness:
    """``ready`` is what ``/readyz`` answers; the rest says why."""

    ready: bool
    limits_loaded: bool
    store_reachable: bool
    on_store_error: OnStoreError
    store_error: str | None = None
    store_ever_answered: bool = False
    #: seconds this replica keeps allowing requests while the store fails; None when not
    fail_open_seconds_left: float | None = None


class QuotaService:
    """Consume, refund and peek against ``store`` with the limits of ``registry``.

    ``clock`` returns epoch seconds; tests pass a fake one to cross window boundaries.
    """

    def __init__(
        self,
        registry: LimitsRegistry,
        store: QuotaStore,
        metrics: QuotaMetrics,
        on_store_error: OnStoreError = "open",
        clock: Callable[[], float] = time.time,
        *,
        fail_open_seconds: float = DEFAULT_FAIL_OPEN_SECONDS,
    ) -> None:
        self.registry = registry
        self.store = store
        self.metrics = metrics
        self.on_store_error = on_store_error
        self.clock = clock
        self.fail_open_seconds = fail_open_seconds
        self._store_state: Literal["unknown", "up", "down"] = "unknown"
        #: clock time of the store's last answer; None until it has answered once
        self._last_answer: float | None = None
        self._failing_open = False
        self.demand_tally = DemandTally()
        metrics.watch_reaching(lambda: self.demand_tally.reaching_entries(self.clock()))
        metrics.fail_open.set(1 if on_store_error == "open" else 0)
        metrics.set_limits(registry.table.limited_tiers())
        registry.on_change = self.limits_changed

    def limits_changed(self, table: LimitsTable) -> None:
        """Registry hook: refresh the limit gauges, forget the demand of unpublished tiers."""
        self.metrics.set_limits(table.limited_tiers())
        self.demand_tally.keep_only(
            {(policy, tier.name) for policy, doc in table.policies.items() for tier in doc.tiers}
        )

    def fails_open(self, now: float) -> bool:
        """Whether a store failure at ``now`` allows the request: only with
        ``--on-store-error open``, only for a store that has answered before (a wrong
        password or host must not give a server that enforces nothing), and only for
        ``fail_open_seconds`` after its last answer."""
        return (
            self.on_store_error == "open"
            and self._last_answer is not None
            and now - self._last_answer <= self.fail_open_seconds
        )

    def _store_failed(self, operation: str, error: StoreUnavailable, now: float) -> None:
        """Count every failure; log only the change to failing (an outage under load
        would otherwise write one line per request)."""
        failing_open = self.fails_open(now)
        if self._store_state != "down":
            if failing_open:
                effect = f"allowing requests for up to {self.fail_open_seconds:g} s"
            elif self._last_answer is None:
                effect = "it has never answered, so requests are refused"
            else:
                effect = "refusing requests"
            log.error("quota store failed during %s: %s; %s", operation, error, effect)
        elif self._failing_open and not failing_open:
            log.error(
                "quota store still failing after --fail-open-for %g s; refusing requests",
                self.fail_open_seconds,
            )
        self._failing_open = failing_open
        self._store_state = "down"
        self.metrics.store_errors.labels(operation).inc()
        self.metrics.store_up.set(0)
        self.metrics.failing_open.set(1 if failing_open else 0)

    def _store_answered(self, now: float) -> None:
        self._last_answer = now
        if self._store_state != "up":
            if self._store_state == "down":
                log.warning("quota store answers again")
            self._store_state = "up"
            self._failing_open = False
            self.metrics.store_up.set(1)
            self.metrics.failing_open.set(0)

    async def consume(self, request: ConsumeRequest, caller: str = "") -> QuotaAnswer:
        """Take ``request.cost`` units of the subject's current window if the limit allows;
        ``caller`` (authenticated, or "") is remembered as the only one who may refund."""
        tier = self.registry.table.lookup(request.policy, request.tier)
        now = self.clock()
        if tier.unlimited:
            self._count(request, "allowed")
            self._count_units(request, now, allowed=True)
            return QuotaAnswer(request.policy, tier, allowed=True)
        assert tier.limit is not None  # validated document
        window, limit = subject_window(request.policy, tier, request.subject, now)
        who = Subject(request.policy, request.tier, request.subject)
        try:
            outcome = await self.store.consume(
                Consumption(who, window, request.cost, limit, request.request_id, now, caller)
            )
        except StoreUnavailable as error:
            self._store_failed("consume", error, now)
            allowed = self.fails_open(now)
            self._count(request, "fail_open" if allowed else "fail_closed")
            self._count_units(request, now, allowed=allowed)
            return QuotaAnswer(request.policy, tier, allowed=allowed, degraded=True, limit=limit)
        self._store_answered(now)
        self._count(request, "allowed" if outcome.allowed else "denied")
        if not outcome.replayed:
            tally = self._count_units(request, now, allowed=outcome.allowed)
            baseline = tier.baseline if tier.baseline is not None else math.ceil(tier.limit)
            length = reaching_length(baseline)
            tally.count_reaching(
                window, attempts=outcome.attempts, cost=request.cost, length=length
            )
        return QuotaAnswer(
            request.policy,
            tier,
            allowed=outcome.allowed,
            used=outcome.used,
            reset_seconds=window.reset_seconds(now),
            replayed=outcome.replayed,
            limit=limit,
        )

    def _count(self, request: ConsumeRequest, result: str) -> None:
        self.metrics.count_decision(request.policy, request.tier, result)

    def _count_units(self, request: ConsumeRequest, now: float, *, allowed: bool) -> TierTally:
        """Count a decision's units in the metrics and the demand tally; the tier's tally."""
        self.metrics.count_units(request.policy, request.tier, request.cost, allowed=allowed)
        tally = self.demand_tally.tier(request.policy, request.tier, now)
        tally.count_units(now, request.cost, allowed=allowed)
        return tally

    def demand(self, policy: str) -> DemandSignal:
        """What the subjects of every tier of ``policy`` attempted (UnknownQuota when the
        policy has no published quotas)."""
        document = self.registry.table.policies.get(policy)
        if document is None:
            raise UnknownQuota("policy", f"policy {policy!r} has no published quotas")
        now = self.clock()
        tiers = tuple(self.demand_tally.demand(policy, tier.name, now) for tier in document.tiers)
        return DemandSignal(tiers=tiers, observed_at=now)

    async def refund(self, request: RefundRequest, caller: str = "") -> RefundAnswer:
        """Give back what ``request.request_id`` took, once, if ``caller`` consumed it
        (raises StoreUnavailable)."""
        tier = self.registry.table.lookup(request.policy, request.tier)
        if tier.unlimited or tier.window_seconds is None:
            return RefundAnswer("unlimited", QuotaAnswer(request.policy, tier))
        now = self.clock()
        window, limit = subject_window(request.policy, tier, request.subject, now)
        who = Subject(request.policy, request.tier, request.subject)
        try:
            outcome = await self.store.refund(who, window, request.request_id, now, caller=caller)
        except StoreUnavailable as error:
            self._store_failed("refund", error, now)
            raise
        self._store_answered(now)
        self.metrics.refunds.labels(request.policy, request.tier, outcome.reason).inc()
        return RefundAnswer(
            outcome.reason,
            QuotaAnswer(
                request.policy,
                tier,
                used=outcome.used,
                reset_seconds=window.reset_seconds(now),
                limit=limit,
            ),
        )

    async def peek(self, request: PeekRequest) -> QuotaAnswer:
        """The subject's standing without consuming (raises StoreUnavailable)."""
        tier = self.registry.table.lookup(request.policy, request.tier)
        if tier.unlimited or tier.window_seconds is None:
            return QuotaAnswer(request.policy, tier)
        now = self.clock()
        window, limit = subject_window(request.policy, tier, request.subject, now)
        try:
            used = await self.store.used(
                Subject(request.policy, request.tier, request.subject), window
            )
        except StoreUnavailable as error:
            self._store_failed("peek", error, now)
            raise
        self._store_answered(now)
        return QuotaAnswer(
            request.policy, tier, used=used, reset_seconds=window.reset_seconds(now), limit=limit
        )

    async def readiness(self, timeout_seconds: float = 1.0) -> Readiness:
        """Ready when limits are loaded and the store answers, or while it fails open."""
        limits_loaded = bool(self.registry.sources)
        error: str | None = None
        now = self.clock()
        try:
            await asyncio.wait_for(self.store.ping(), timeout_seconds)
        except (StoreUnavailable, TimeoutError) as failure:
            error = str(failure) or "store ping timed out"
            self._store_failed("ping", StoreUnavailable(error), now)
        else:
            self._store_answered(now)
        reachable = error is None
        failing_open = not reachable and self.fails_open(now)
        left = None
        if failing_open and self._last_answer is not None:
            left = self._last_answer + self.fail_open_seconds - now
        return Readiness(
            ready=limits_loaded and (reachable or failing_open),
            limits_loaded=limits_loaded,
            store_reachable=reachable,
            on_store_error=self.on_store_error,
            store_error=error,
            store_ever_answered=self._last_answer is not None,
            fail_open_seconds_left=left,
        )
