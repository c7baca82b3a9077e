"""Prometheus metrics of the quota service.

Each :class:`QuotaMetrics` owns its registry, so several services (tests, the benchmark) can
live in one process. :data:`METRIC_NAMES` is read off a fresh registry, so it always matches
what ``/metrics`` serves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from meltguard.quota.memory_store import MemoryStore

#: Latency buckets around the service's target (p99 <= 5 ms), in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

#: (policy, tier, k, subjects whose attempts in the current window reached k)
ReachingEntries = Callable[[], Iterable[tuple[str, str, int, int]]]


class _ReachingCollector(Collector):
    """The ``meltguard_quota_subjects_reaching`` gauge, read off the demand tally at scrape
    time (so an ended window reads as no series, even on a replica that has had no consume
    since)."""

    def __init__(self) -> None:
        self.entries: ReachingEntries = tuple

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "meltguard_quota_subjects_reaching",
            "Subjects whose attempts (units, admitted or refused) in the tier's current window "
            "reached the `attempts` label, as counted by this replica; the sum over replicas "
            "sharing a store is exact.",
            labels=["policy", "tier", "attempts"],
        )
        for policy, tier, k, subjects in self.entries():
            family.add_metric([policy, tier, str(k)], subjects)
        yield family


class QuotaMetrics:
    """The service's metric families, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.decisions = Counter(
            "meltguard_quota_decisions",
            "Consume decisions by policy, tier and result "
            "(allowed, denied, fail_open, fail_closed).",
            ["policy", "tier", "result"],
            registry=self.registry,
        )
        self.refunds = Counter(
            "meltguard_quota_refunds",
            "Refund requests by policy, tier and outcome (refunded or why not).",
            ["policy", "tier", "outcome"],
            registry=self.registry,
        )
        self.invalid_requests = Counter(
            "meltguard_quota_invalid_requests",
            "Requests refused before touching any counter, by endpoint (HTTP route or gRPC method) "
            "and status (HTTP code or gRPC status name).",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meltguard_quota_request_duration_seconds",
            "Time to answer an API request, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.store_errors = Counter(
            "meltguard_quota_store_errors",
            "Store operations that failed (store unreachable or erroring), by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.store_up = Gauge(
            "meltguard_quota_store_up",
            "1 when the last store operation succeeded, 0 while it fails or before it answered.",
            registry=self.registry,
        )
        self.fail_open = Gauge(
            "meltguard_quota_fail_open",
            "1 when the service allows requests while its store is failing "
            "(--on-store-error open), 0 when it refuses them.",
            registry=self.registry,
        )
        self.failing_open = Gauge(
            "meltguard_quota_failing_open",
            "1 while the store fails and requests are allowed anyway (--on-store-error open, "
            "for at most --fail-open-for after its last answer), else 0.",
            registry=self.registry,
        )
        self.connections_open = Gauge(
            "meltguard_quota_connections_open",
            "HTTP connections open now (at most --max-connections).",
            registry=self.registry,
        )
        self.connections_evicted = Counter(
            "meltguard_quota_connections_evicted",
            "HTTP connections closed to make room for a new one at --max-connections, "
            "the least recently active first.",
            registry=self.registry,
        )
        self.request_ids = Gauge(
            "meltguard_quota_request_ids",
            "Request ids the memory store remembers now (at most --max-request-ids).",
            registry=self.registry,
        )
        self.request_ids_forgotten = Counter(
            "meltguard_quota_request_ids_forgotten",
            "Request ids the memory store forgot before their time to stay under "
            "--max-request-ids (a retry of one would count again).",
            registry=self.registry,
        )
        self.limit = Gauge(
            "meltguard_quota_limit",
            "Limit in force per window, by policy and tier, with up to two decimals (each "
            "subject's own limit is it rounded down or up; unlimited tiers are absent).",
            ["policy", "tier"],
            registry=self.registry,
        )
        self.baseline = Gauge(
            "meltguard_quota_baseline",
            "The tier's configured limit before any tightening, by policy and tier.",
            ["policy", "tier"],
            registry=self.registry,
        )
        self.limit_reloads = Counter(
            "meltguard_quota_limit_reloads",
            "Limits documents loaded (result=ok) or refused as malformed (result=invalid).",
            ["result"],
            registry=self.registry,
        )
        self.envoy_unmatched = Counter(
            "meltguard_quota_envoy_unmatched",
            "Envoy rate limit descriptors that named no published tier, by reason "
            "(unknown-domain, unknown-policy, unknown-tier, malformed); OK unless --strict.",
            ["reason"],
            registry=self.registry,
        )
        self.attempted_units = Counter(
            "meltguard_quota_attempted_units",
            "Units asked for by consume requests (retries of a request id excluded), "
            "by policy and tier.",
            ["policy", "tier"],
            registry=self.registry,
        )
        self.admitted_units = Counter(
            "meltguard_quota_admitted_units",
            "Units admitted (allowed or failing open), by policy and tier.",
            ["policy", "tier"],
            registry=self.registry,
        )
        self.refused_units = Counter(
            "meltguard_quota_refused_units",
            "Units refused (over the limit or failing closed), by policy and tier.",
            ["policy", "tier"],
            registry=self.registry,
        )
        self._reaching = _ReachingCollector()
        self.registry.register(self._reaching)
        # labelled children by label values: labels() validates and locks on every call,
        # which costs more than the rest of a decision's bookkeeping
        self._decision_children: dict[tuple[str, str, str], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._unit_children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def count_decision(self, policy: str, tier: str, result: str) -> None:
        """One more consume decision (label sets are bounded by the published tiers)."""
        key = (policy, tier, result)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(*key)
        child.inc()

    def count_units(self, policy: str, tier: str, cost: int, *, allowed: bool) -> None:
        """``cost`` more units attempted, and admitted or refused."""
        children = self._unit_children.get((policy, tier))
        if children is None:
            children = self._unit_children[(policy, tier)] = (
                self.attempted_units.labels(policy, tier),
                self.admitted_units.labels(policy, tier),
                self.refused_units.labels(policy, tier),
            )
        attempted, admitted, refused = children
        attempted.inc(cost)
        (admitted if allowed else refused).inc(cost)

    def watch_reaching(self, entries: ReachingEntries) -> None:
        """Serve ``entries()`` as ``meltguard_quota_subjects_reaching`` on each scrape."""
        self._reaching.entries = entries

    def observe_latency(self, endpoint: str, seconds: float) -> None:
        """Time taken to answer one request to ``endpoint`` (a route, or "unmatched")."""
        child = self._latency_children.get(endpoint)
        if child is None:
            child = self._latency_children[endpoint] = self.latency.labels(endpoint)
        child.observe(seconds)

    def watch_request_records(self, store: object) -> None:
        """Report the request ids of ``store`` when it is a memory store (Redis keeps its
        own, with its own memory policy)."""
        if isinstance(store, MemoryStore):
            store.on_forget = self.request_ids_forgotten.inc
            self.request_ids.set_function(store.request_records)

    def set_limits(self, limits: dict[tuple[str, str], tuple[int | float, int]]) -> None:
        """Replace the limit/baseline gauges with ``{(policy, tier): (limit, baseline)}``."""
        self.limit.clear()
        self.baseline.clear()
        for (policy, tier), (limit, baseline) in limits.items():
            self.limit.labels(policy, tier).set(limit)
            self.baseline.labels(policy, tier).set(baseline)

    def exposition(self) -> bytes:
        """The Prometheus text format of every family."""
        return generate_latest(self.registry)


def _family_names(metrics: QuotaMetrics) -> frozenset[str]:
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return frozenset(names)


#: Family names as served on ``/metrics`` (counters with their ``_total`` suffix).
METRIC_NAMES: frozenset[str] = _family_names(QuotaMetrics())
