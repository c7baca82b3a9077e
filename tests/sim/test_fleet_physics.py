"""The fleet's replicas and queues on cases small enough to work out by hand (spread-free GPUs;
the heat itself is in test_gpu_profiles.py)."""

from __future__ import annotations

import numpy as np
import pytest

from meltguard.sim.queues import max_age_steps
from meltguard.sim.scenario import CoolingFailure
from tests.sim.conftest import make_fleet

#: a quarter of four single-GPU nodes (node 3) on degraded cooling all along
LAST_OF_FOUR_DEGRADED = CoolingFailure(profile="degraded-cooling", node_share=0.25,
                                       start_hour=0)


def one_tier(images: float) -> np.ndarray:
    return np.array([images], dtype=np.int64)


def test_a_start_up_delay_delays_capacity() -> None:
    # One serving replica; two more asked for at t=0 load their model for 60 s.
    fleet = make_fleet(initial_replicas=1, gpuSupply=3, gpuSecondsPerImage=10,
                       startupSeconds=60, requestTimeoutSeconds=10_000)
    fleet.scale_to(3, now=0.0)
    served = [float(fleet.step(index * 10.0, one_tier(5)).served.sum()) for index in range(8)]
    assert served == pytest.approx([1, 1, 1, 1, 1, 1, 3, 3])
    assert fleet.allocated_gpus == 3


def test_the_gpu_supply_cap_holds_and_the_rest_is_pending() -> None:
    fleet = make_fleet(initial_replicas=1, gpuSupply=4)
    fleet.scale_to(10, now=0.0)
    fleet.step(0.0, one_tier(0))
    assert (len(fleet.replicas), fleet.pending, fleet.allocated_gpus) == (4, 6, 4)
    fleet.scale_to(3, now=10.0)
    assert (len(fleet.replicas), fleet.pending, fleet.allocated_gpus) == (3, 0, 3)


def test_replicas_of_several_gpus_take_whole_gpu_sets() -> None:
    fleet = make_fleet(initial_replicas=0, gpuSupply=8, gpusPerReplica=3)
    fleet.scale_to(3, now=0.0)
    assert (len(fleet.replicas), fleet.pending, fleet.allocated_gpus) == (2, 1, 6)


def test_scaling_down_removes_loading_replicas_first() -> None:
    fleet = make_fleet(initial_replicas=2, gpuSupply=4, startupSeconds=100)
    fleet.step(0.0, one_tier(0))
    fleet.scale_to(3, now=0.0)  # one more, loading until t=100
    fleet.scale_to(2, now=10.0)
    fleet.step(10.0, one_tier(0))
    assert fleet.serving_gpus == 2


def test_the_last_age_a_request_is_served_at_follows_the_timeout() -> None:
    # mean wait of an age: (age + 0.5) steps; served while that stays within the timeout
    assert max_age_steps(120, 30) == 4
    assert max_age_steps(120, 60) == 2
    assert max_age_steps(100, 60) == 2
    assert max_age_steps(20, 60) == 0


def answers_within(slo_seconds: float) -> float:
    """One GPU, one image per 10 s step, 10 images at once, 30 s timeout: served in the
    arrival step and the three after it (max_age_steps(30, 10) == 3), waiting 0, 10, 20 and
    30 s, plus 10 s to make each image: answered after 10, 20, 30 and 40 s."""
    fleet = make_fleet(initial_replicas=1, gpuSupply=1, gpuSecondsPerImage=10,
                       requestTimeoutSeconds=30, slo_seconds=slo_seconds)
    outcomes = [fleet.step(index * 10.0, one_tier(10 if index == 0 else 0)) for index in range(6)]
    assert sum(o.served.sum() for o in outcomes) == pytest.approx(4)
    assert sum(o.failed.sum() for o in outcomes) == pytest.approx(6)
    return fleet.queues.answered_within_slo


def test_requests_queued_past_the_timeout_fail_and_answers_take_wait_plus_making() -> None:
    assert [answers_within(slo) for slo in (9, 11, 25, 31, 41)] == pytest.approx([0, 1, 2, 3, 4])


def test_admitted_requests_are_spread_evenly_over_the_serving_gpus() -> None:
    # Two serving GPUs and one loading: 3 images in a 10 s step, each GPU makes one per 10 s.
    fleet = make_fleet(initial_replicas=2, gpuSupply=3, gpuSecondsPerImage=10,
                       startupSeconds=60, requestTimeoutSeconds=10_000)
    fleet.scale_to(3, now=0.0)
    outcome = fleet.step(0.0, one_tier(3))
    assert outcome.served.sum() == pytest.approx(2)
    assert fleet.queues.wanted(3).tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert fleet.utilization.tolist() == pytest.approx([1.0, 1.0, 0.0])


def test_utilization_is_each_gpus_own_busy_share() -> None:
    # Four single-GPU nodes, the last on degraded cooling. Each GPU is given 90% of what it
    # makes at full clocks; the degraded one can only do 80.85% before its slowdown
    # threshold, so it is busy the whole step at lower clocks and falls behind.
    fleet = make_fleet(initial_replicas=4, gpuSupply=4, gpusPerNode=1, gpuSecondsPerImage=1,
                       requestTimeoutSeconds=10_000, failures=[LAST_OF_FOUR_DEGRADED])
    for index in range(5):
        outcome = fleet.step(index * 10.0, one_tier(36))  # 9 a GPU, 10 at full clocks
    assert fleet.utilization.tolist() == pytest.approx([0.9, 0.9, 0.9, 1.0])
    assert fleet.throttled.tolist() == [False, False, False, True]
    assert outcome.served.sum() == pytest.approx(3 * 9 + 10 * 0.80852, abs=0.01)
    assert fleet.queues.wanted(4)[3] > 0  # the even spread keeps sending it as much
    assert fleet.mean_utilization() == pytest.approx(0.925)


def test_requests_at_a_removed_replica_fail() -> None:
    fleet = make_fleet(initial_replicas=2, gpuSupply=2, gpuSecondsPerImage=10,
                       requestTimeoutSeconds=10_000)
    fleet.step(0.0, one_tier(10))  # 5 each, 1 each served
    fleet.scale_to(1, now=10.0)
    outcome = fleet.step(10.0, one_tier(0))
    assert outcome.failed.sum() == pytest.approx(4)  # what waited at the removed one
    assert outcome.served.sum() == pytest.approx(1)


def test_with_no_gpu_serving_requests_fail_at_once() -> None:
    fleet = make_fleet(initial_replicas=0, gpuSupply=2)
    fleet.scale_to(1, now=0.0)  # loading for 240 s
    outcome = fleet.step(0.0, one_tier(7))
    assert outcome.failed.sum() == 7
    assert outcome.served.sum() == 0


def test_samples_are_one_nvml_like_reading_per_allocated_gpu() -> None:
    fleet = make_fleet(initial_replicas=2, gpuSupply=6, gpuSecondsPerImage=10,
                       startupSeconds=60)
    fleet.scale_to(3, now=0.0)
    fleet.step(0.0, one_tier(1))  # half of what the two serving GPUs can do
    samples = fleet.samples(10.0, "inference")
    assert len(samples) == 3
    assert len({s.uuid for s in samples}) == 3
    assert sorted(s.utilization for s in samples) == [0.0, 0.5, 0.5]  # the new one is loading
    # h200: 78 W idle, 692 W at full load; half busy is half way
    assert sorted(s.power_watts or 0 for s in samples) == pytest.approx([78, 385, 385])
    assert {s.power_limit_watts for s in samples} == {700}
    assert {s.slowdown_temperature_celsius for s in samples} == {89}
    assert all(s.pod and s.pod.startswith("imagegen-worker-") for s in samples)
    assert all(s.namespace == "inference" and s.sampled_at == 10.0 for s in samples)
    assert all(s.temperature_celsius == round(s.temperature_celsius) for s in samples)
    assert all(s.memory_used_bytes < s.memory_total_bytes for s in samples)


def test_a_busy_gpu_reports_the_power_cap_an_idle_one_nothing() -> None:
    fleet = make_fleet(initial_replicas=2, gpuSupply=2, gpuSecondsPerImage=10)
    fleet.step(0.0, one_tier(2))  # one image each: busy the whole step
    busy = fleet.samples(10.0, "inference")
    fleet.step(10.0, one_tier(0))
    idle = fleet.samples(20.0, "inference")
    assert [s.throttle_reasons for s in busy] == [frozenset({"sw_power_cap"})] * 2
    assert [s.throttle_reasons for s in idle] == [frozenset()] * 2
    assert fleet.melting_gpus == 0
