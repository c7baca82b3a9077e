"""The scale model's arithmetic: from measured per-unit costs to how many of each part a fleet
needs. Pure: nothing here measures or prints (bench/scale_model.py does both).

The rules, each a division rounded up:

* Operator shards. A shard's load is a fleet-wide part (what it pays whatever its share of the
  policies) plus a part per GPU of its own policies. With the ``exporter`` source every shard
  scrapes every exporter of the DaemonSet (a node's page holds all its GPUs, whoever owns
  them), so reading is fleet-wide; with the ``prometheus`` source a shard queries only its own
  namespaces' series. Ticks (the policy loop) are always the shard's own. CPU and memory are
  both checked; a shard runs two replicas (active and standby).
* The ``exporter`` source is kept while it needs no more operator shards than the
  ``prometheus`` source (which adds Prometheus servers to run); past that line, ``prometheus``.
* Prometheus shards: the samples it ingests per second (CPU) and the series it holds (memory).
* Quota replicas: CPU per decision, plus one so that a replica can be drained (the chart's
  PodDisruptionBudget allows one unavailable); Redis masters: Redis's CPU per decision, at
  least three (what Redis Cluster needs), each with one replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

SOURCES = ("exporter", "prometheus")


def ceil(quotient: float) -> int:
    """Round up, ignoring float noise: an exact 32.000000000000004 is 32, not 33."""
    return math.ceil(round(quotient, 9))


@dataclass(frozen=True, slots=True)
class UnitCosts:
    """Measured per-unit costs (bench/scale_model.py says how each was measured)."""

    #: CPU of one quota-server process per decision, Redis store (microseconds).
    quota_cpu_us_per_decision: float
    #: CPU of redis-server per decision (microseconds).
    redis_cpu_us_per_decision: float
    #: Series one GPU's exporter page holds (what Prometheus ingests per GPU per scrape).
    series_per_gpu: float
    #: Operator CPU per GPU read through the ``exporter`` source (microseconds).
    exporter_read_cpu_us_per_gpu: float
    #: Operator CPU per GPU read through the ``prometheus`` source (microseconds).
    prometheus_read_cpu_us_per_gpu: float
    #: Prometheus CPU per sample ingested (microseconds).
    prometheus_cpu_us_per_sample: float
    #: Prometheus memory per series held (bytes).
    prometheus_bytes_per_series: float
    #: Operator CPU per policy tick, telemetry read excluded (milliseconds).
    operator_cpu_ms_per_tick: float
    #: Operator memory per policy and per GPU (MiB), and with no policy at all.
    operator_mib_per_policy: float
    operator_mib_per_gpu: float
    operator_base_mib: float
    #: API requests per policy per tick.
    api_calls_per_tick: float

    def __post_init__(self) -> None:
        _check_non_negative(self)


@dataclass(frozen=True, slots=True)
class Budget:
    """What one process of each part may use, and the fleet's shape: assumptions, not
    measurements (bench/scale_model.py takes them as flags and prints them)."""

    #: Share of a process's CPU and memory a plan fills, leaving headroom for bursts.
    utilization: float = 0.7
    #: A Python process runs on one core (the operator, a quota-server replica); so does
    #: Redis's command loop.
    operator_cores: float = 1.0
    operator_memory_mib: float = 512.0  # the chart's default limit
    quota_cores: float = 1.0
    redis_cores: float = 1.0
    prometheus_cores: float = 8.0
    prometheus_memory_gib: float = 64.0
    #: Policy tick and Prometheus scrape interval: every GPU read once per interval.
    interval_seconds: float = 1.0
    gpus_per_policy: float = 64.0
    min_redis_masters: int = 3

    def __post_init__(self) -> None:
        _check_non_negative(self)
        if not 0 < self.utilization <= 1:
            raise ValueError(f"utilization must be in (0, 1], got {self.utilization}")
        for name in ("interval_seconds", "gpus_per_policy", "operator_cores"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """What a fleet of ``gpus`` GPUs needs on the operator and telemetry side."""

    gpus: int
    policies: int
    source: str
    operator_shards: int
    operator_replicas: int
    api_requests_per_second: float
    samples_per_second: float
    prometheus_shards: int


@dataclass(frozen=True, slots=True)
class QuotaPlan:
    """What ``decisions_per_second`` quota decisions need."""

    decisions_per_second: float
    quota_replicas: int
    redis_masters: int
    redis_nodes: int


@dataclass(frozen=True, slots=True)
class ShardLoad:
    """One resource of a shard: a fleet-wide part, a part per GPU of its own, its capacity."""

    fleet_wide: float
    per_own_gpu: float
    capacity: float

    def shards_for(self, gpus: int) -> int | None:
        """Shards needed for ``gpus`` GPUs; None when the fleet-wide part alone overflows one."""
        room = self.capacity - self.fleet_wide
        if room <= 0:
            return None
        return max(1, ceil(gpus * self.per_own_gpu / room))


def _check_non_negative(values: UnitCosts | Budget) -> None:
    for field in fields(values):
        value = getattr(values, field.name)
        if not isinstance(value, int | float) or math.isnan(value) or value < 0:
            raise ValueError(f"{field.name} must be a number >= 0, got {value!r}")


def shard_loads(gpus: int, source: str, *, costs: UnitCosts,
                budget: Budget) -> list[ShardLoad]:
    """A shard's CPU (cores) and memory (MiB) with ``source``, in a fleet of ``gpus`` GPUs."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    tick = costs.operator_cpu_ms_per_tick / 1e3 / budget.gpus_per_policy / budget.interval_seconds
    memory_per_gpu = costs.operator_mib_per_policy / budget.gpus_per_policy
    if source == "exporter":
        read = costs.exporter_read_cpu_us_per_gpu / 1e6 / budget.interval_seconds
        cpu = ShardLoad(gpus * read, tick, budget.operator_cores * budget.utilization)
        memory_fleet_wide = costs.operator_base_mib + gpus * costs.operator_mib_per_gpu
    else:
        read = costs.prometheus_read_cpu_us_per_gpu / 1e6 / budget.interval_seconds
        cpu = ShardLoad(0.0, tick + read, budget.operator_cores * budget.utilization)
        memory_fleet_wide = costs.operator_base_mib
        memory_per_gpu += costs.operator_mib_per_gpu
    memory = ShardLoad(memory_fleet_wide, memory_per_gpu,
                       budget.operator_memory_mib * budget.utilization)
    return [cpu, memory]


def operator_shards(gpus: int, source: str, *, costs: UnitCosts, budget: Budget) -> int | None:
    """Operator shards for ``gpus`` GPUs with ``source``; None when no number of shards can
    carry it (a fleet-wide part overflows one shard)."""
    loads = shard_loads(gpus, source, costs=costs, budget=budget)
    needs = [load.shards_for(gpus) for load in loads]
    return None if None in needs else max(n for n in needs if n is not None)


def prometheus_shards(gpus: int, costs: UnitCosts, budget: Budget) -> int:
    """Prometheus servers to scrape and hold ``gpus`` GPUs' series."""
    series = gpus * costs.series_per_gpu
    cpu = series / budget.interval_seconds * costs.prometheus_cpu_us_per_sample / 1e6
    memory = series * costs.prometheus_bytes_per_series / 2**30
    return max(1, ceil(cpu / (budget.prometheus_cores * budget.utilization)),
               ceil(memory / (budget.prometheus_memory_gib * budget.utilization)))


def plan_fleet(gpus: int, costs: UnitCosts, budget: Budget) -> FleetPlan:
    """The operator shards and telemetry a fleet of ``gpus`` GPUs needs."""
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    direct = operator_shards(gpus, "exporter", costs=costs, budget=budget)
    through_prometheus = operator_shards(gpus, "prometheus", costs=costs, budget=budget)
    if through_prometheus is None:
        raise ValueError(f"{gpus} GPUs: a shard overflows with either source "
                         f"(operator_base_mib {costs.operator_base_mib} >= its memory budget?)")
    use_direct = direct is not None and direct <= through_prometheus
    policies = ceil(gpus / budget.gpus_per_policy)
    shards = direct if use_direct and direct is not None else through_prometheus
    return FleetPlan(
        gpus=gpus, policies=policies, source="exporter" if use_direct else "prometheus",
        operator_shards=shards, operator_replicas=2 * shards,
        api_requests_per_second=policies * costs.api_calls_per_tick / budget.interval_seconds,
        samples_per_second=gpus * costs.series_per_gpu / budget.interval_seconds,
        prometheus_shards=0 if use_direct else prometheus_shards(gpus, costs, budget))


def exporter_source_limit(costs: UnitCosts, budget: Budget, *, ceiling: int = 10**7) -> int:
    """The largest fleet for which :func:`plan_fleet` keeps the ``exporter`` source (0 if
    none), found by bisection: the exporter source's fleet-wide part grows with the fleet, so
    the choice flips once, from exporter to prometheus."""
    def direct(gpus: int) -> bool:
        return plan_fleet(gpus, costs, budget).source == "exporter"

    if not direct(1):
        return 0
    low, high = 1, ceiling
    if direct(high):
        return high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if direct(middle) else (low, middle)
    return low


def plan_quota(decisions_per_second: float, costs: UnitCosts, budget: Budget) -> QuotaPlan:
    """Quota-server replicas and Redis Cluster nodes for a decision rate."""
    if decisions_per_second <= 0:
        raise ValueError(f"decisions per second must be positive, got {decisions_per_second}")
    quota_cores = decisions_per_second * costs.quota_cpu_us_per_decision / 1e6
    redis_cores = decisions_per_second * costs.redis_cpu_us_per_decision / 1e6
    replicas = ceil(quota_cores / (budget.quota_cores * budget.utilization)) + 1
    masters = max(budget.min_redis_masters,
                  ceil(redis_cores / (budget.redis_cores * budget.utilization)))
    return QuotaPlan(decisions_per_second=decisions_per_second, quota_replicas=replicas,
                     redis_masters=masters, redis_nodes=2 * masters)
