"""The scale model's arithmetic (bench/sizing.py), on round figures worked out by hand."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bench.sizing import (
    Budget,
    UnitCosts,
    exporter_source_limit,
    operator_shards,
    plan_fleet,
    plan_quota,
    prometheus_shards,
)

#: Round figures: a 1-core operator at 50% has 0.5 core and 100 MiB of its 200 MiB.
BUDGET = Budget(utilization=0.5, operator_cores=1.0, operator_memory_mib=200.0,
                quota_cores=1.0, redis_cores=1.0, prometheus_cores=2.0,
                prometheus_memory_gib=2.0, interval_seconds=1.0, gpus_per_policy=10.0,
                min_redis_masters=3)
COSTS = UnitCosts(
    quota_cpu_us_per_decision=100.0,      # 0.5 core: 5,000 decisions/s
    redis_cpu_us_per_decision=50.0,       # 0.5 core: 10,000 decisions/s
    series_per_gpu=10.0,
    exporter_read_cpu_us_per_gpu=10.0,    # fleet-wide: 10,000 GPUs = 0.1 core
    prometheus_read_cpu_us_per_gpu=20.0,
    prometheus_cpu_us_per_sample=1.0,     # 1 core: 1e6 samples/s
    prometheus_bytes_per_series=2**30 / 1e6,  # 1 GiB per million series
    operator_cpu_ms_per_tick=0.8,         # per GPU: 0.08 ms per tick
    operator_mib_per_policy=0.1,          # per GPU: 0.01 MiB
    operator_mib_per_gpu=0.0,
    operator_base_mib=50.0,
    api_calls_per_tick=2.0,
)


def test_a_small_fleet_keeps_the_exporter_source_on_one_shard() -> None:
    plan = plan_fleet(1000, COSTS, BUDGET)
    # exporter: CPU 1000 x 10 us = 0.01 core fleet-wide, ticks 1000 x 0.08 ms = 0.08 core.
    assert plan.source == "exporter"
    assert (plan.operator_shards, plan.operator_replicas, plan.prometheus_shards) == (1, 2, 0)
    assert plan.policies == 100
    assert plan.api_requests_per_second == pytest.approx(200.0)
    assert plan.samples_per_second == pytest.approx(10_000.0)


def test_shards_by_cpu_with_each_source() -> None:
    # 10,000 GPUs. exporter: 0.1 core fleet-wide leaves 0.4; ticks 0.8 core -> 2 shards.
    assert operator_shards(10_000, "exporter", costs=COSTS, budget=BUDGET) == 2
    # prometheus: 0.08 + 0.02 ms per GPU = 1.0 core over 0.5 -> 2 shards: a tie keeps exporter.
    assert operator_shards(10_000, "prometheus", costs=COSTS, budget=BUDGET) == 2
    assert plan_fleet(10_000, COSTS, BUDGET).source == "exporter"
    # 40,000 GPUs. exporter: 0.4 core fleet-wide leaves 0.1 for 3.2 cores of ticks -> 32;
    # prometheus: 4.0 cores -> 8 shards, so prometheus takes over.
    assert operator_shards(40_000, "exporter", costs=COSTS, budget=BUDGET) == 32
    plan = plan_fleet(40_000, COSTS, BUDGET)
    assert (plan.source, plan.operator_shards, plan.operator_replicas) == ("prometheus", 8, 16)
    # 400,000 samples/s = 0.4 core of 1 (2 cores at 50%); 400,000 series = 0.38 GiB of 1.
    assert plan.prometheus_shards == 1


def test_a_fleet_wide_read_that_overflows_a_shard_cannot_use_the_exporter_source() -> None:
    # 50,000 x 10 us = 0.5 core fleet-wide: nothing left for the ticks.
    assert operator_shards(50_000, "exporter", costs=COSTS, budget=BUDGET) is None
    assert plan_fleet(50_000, COSTS, BUDGET).source == "prometheus"


def test_memory_can_bind_before_cpu() -> None:
    heavy = dataclasses.replace(COSTS, operator_mib_per_policy=5.0)  # 0.5 MiB per GPU
    # 1,000 GPUs: 500 MiB of policies over 100 - 50 MiB of room -> 10 shards (CPU wants 1).
    assert operator_shards(1000, "prometheus", costs=heavy, budget=BUDGET) == 10


def test_prometheus_shards_by_cpu_and_by_memory() -> None:
    # 1e6 GPUs x 10 series: 1e7 samples/s = 10 cores / 1 -> 10; 9.3 GiB / 1 GiB -> 10.
    assert prometheus_shards(1_000_000, COSTS, BUDGET) == 10
    hungry = dataclasses.replace(COSTS, prometheus_bytes_per_series=2**30 / 1e5)
    assert prometheus_shards(1_000_000, hungry, BUDGET) == 100  # 100 GiB / 1 GiB


def test_quota_replicas_and_redis_masters() -> None:
    # 3,500/s: 0.35 core -> 1 replica, +1 to drain one; Redis 0.175 core -> the minimum 3.
    small = plan_quota(3500, COSTS, BUDGET)
    assert (small.quota_replicas, small.redis_masters, small.redis_nodes) == (2, 3, 6)
    # 35,000/s: 3.5 cores / 0.5 -> 7 (+1 = 8); Redis 1.75 cores / 0.5 -> 4 masters, 8 nodes.
    large = plan_quota(35_000, COSTS, BUDGET)
    assert (large.quota_replicas, large.redis_masters, large.redis_nodes) == (8, 4, 8)


def test_the_exporter_source_limit_is_where_the_plan_switches() -> None:
    limit = exporter_source_limit(COSTS, BUDGET)
    assert plan_fleet(limit, COSTS, BUDGET).source == "exporter"
    assert plan_fleet(limit + 1, COSTS, BUDGET).source == "prometheus"
    assert 10_000 <= limit < 40_000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"utilization": 0.0}, "utilization must be in (0, 1]"),
        ({"gpus_per_policy": 0.0}, "gpus_per_policy must be positive"),
        ({"prometheus_cores": -1.0}, "prometheus_cores must be a number >= 0"),
    ],
)
def test_a_bad_budget_is_refused_by_name(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
        dataclasses.replace(BUDGET, **change)


def test_bad_costs_and_inputs_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="series_per_gpu must be a number >= 0, got nan"):
        dataclasses.replace(COSTS, series_per_gpu=float("nan"))
    with pytest.raises(ValueError, match="gpus must be at least 1"):
        plan_fleet(0, COSTS, BUDGET)
    with pytest.raises(ValueError, match="decisions per second must be positive"):
        plan_quota(0, COSTS, BUDGET)
    with pytest.raises(ValueError, match="source must be one of exporter, prometheus"):
        operator_shards(10, "dcgm", costs=COSTS, budget=BUDGET)
