"""The operator's Prometheus metrics, per policy.

:class:`OperatorMetrics` registers its families in the registry it is given (the default
one in ``meltguard operator``, which also carries the telemetry sources' counters; a fresh
one per test). :data:`METRIC_NAMES` is read off a fresh instance, so it always matches what
``/metrics`` serves.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from meltguard.api.vocabulary import PHASES
from meltguard.core.decide import Decision

POLICY_LABELS = ("namespace", "policy")
#: Reconcile durations: a tick reads a few objects and scrapes exporters, tens of ms to seconds.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OperatorMetrics:
    """Every family the operator serves, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.phase = Gauge("meltguard_policy_phase",
                           "1 for the policy's current phase, 0 for the others.",
                           [*POLICY_LABELS, "phase"], registry=self.registry)
        self.replicas = Gauge("meltguard_policy_replicas",
                              "The target's replicas: current, desired, pending for GPUs, "
                              "and the policy's min and max.",
                              [*POLICY_LABELS, "kind"], registry=self.registry)
        self.gpus = Gauge("meltguard_policy_gpus",
                          "The target's GPUs by state: total, hot, melting, stale.",
                          [*POLICY_LABELS, "state"], registry=self.registry)
        self.quota_limit = Gauge("meltguard_quota_limit",
                                 "The limit in force per tier (unlimited tiers are not shown).",
                                 [*POLICY_LABELS, "tier"], registry=self.registry)
        self.quota_changes = Counter("meltguard_quota_changes",
                                     "Quota steps applied, by tier and direction.",
                                     [*POLICY_LABELS, "tier", "direction"],
                                     registry=self.registry)
        self.scale_changes = Counter("meltguard_scale_changes",
                                     "Replica changes applied to scale targets, by direction.",
                                     [*POLICY_LABELS, "direction"], registry=self.registry)
        self.ticks = Counter("meltguard_policy_ticks",
                             "Ticks that decided, per policy (their rate is the tick rate).",
                             POLICY_LABELS, registry=self.registry)
        self.reconcile_seconds = Histogram("meltguard_reconcile_seconds",
                                           "Time one reconcile tick took, reads and writes.",
                                           buckets=RECONCILE_BUCKETS, registry=self.registry)

    def families(self) -> tuple[MetricWrapperBase, ...]:
        """The families, for naming and for forgetting a policy."""
        return (self.phase, self.replicas, self.gpus, self.quota_limit, self.quota_changes,
                self.scale_changes, self.ticks, self.reconcile_seconds)

    def observe(self, namespace: str, policy: str, decision: Decision, applied: bool,
                bounds: tuple[int, int] | None = None) -> None:
        """Record one tick's decision; changes count only when they were applied.

        ``bounds`` is the policy's (minReplicas, maxReplicas), served as replicas kinds
        ``min``/``max`` so alerts can compare desired replicas with them.
        """
        self.ticks.labels(namespace, policy).inc()
        for phase in PHASES:
            self.phase.labels(namespace, policy, phase).set(int(decision.phase == phase))
        replicas = [("current", decision.current_replicas),
                    ("desired", decision.desired_replicas),
                    ("pending", decision.pending_replicas)]
        if bounds is not None:
            replicas += [("min", bounds[0]), ("max", bounds[1])]
        for kind, value in replicas:
            self.replicas.labels(namespace, policy, kind).set(value)
        gpus = decision.gpus
        for state, count in (("total", gpus.total), ("hot", gpus.hot),
                             ("melting", gpus.melting), ("stale", gpus.stale)):
            self.gpus.labels(namespace, policy, state).set(count)
        for tier in decision.tiers:
            if tier.limit is not None and not tier.unlimited:
                self.quota_limit.labels(namespace, policy, tier.name).set(tier.limit)
        if not applied:
            return
        for change in decision.quota_changes:
            self.quota_changes.labels(namespace, policy, change.tier, change.direction).inc()
        if decision.scale_direction is not None:
            self.scale_changes.labels(namespace, policy, decision.scale_direction).inc()

    def forget(self, namespace: str, policy: str) -> None:
        """Drop every series of a deleted policy."""
        for family in self.families():
            if not family._labelnames:
                continue
            for labels in list(family._metrics):
                if labels[:2] == (namespace, policy):
                    family.remove(*labels)


def served_name(family: MetricWrapperBase) -> str:
    """The name a family is served and queried under (counters get ``_total``)."""
    described = next(iter(family.describe()))
    name: str = described.name
    return name + "_total" if described.type == "counter" else name


METRIC_NAMES: frozenset[str] = frozenset(served_name(f) for f in OperatorMetrics().families())
