"""The fleet's physics on cases small enough to work out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from meltguard.api.models import MeltSpec
from meltguard.sim.fleet import SimulatedFleet
from tests.sim.conftest import fleet_spec

MELT = MeltSpec()  # 85 C, sustain 30 s, fleetFraction 0.25


def one_tier(images: float) -> np.ndarray:
    return np.array([images], dtype=np.int64)


def make_fleet(step: int = 10, **fields: object) -> SimulatedFleet:
    return SimulatedFleet(fleet_spec(**fields), MELT, tier_count=1, step_seconds=step, seed=0)


def test_a_busy_gpu_heats_toward_its_steady_state_with_the_time_constant() -> None:
    # idle 35 C, steady state at 100% busy 85 C, tau 100 s, 10 s steps.
    fleet = make_fleet(gpuSupply=1, initialReplicas=1, gpuSecondsPerImage=10,
                       requestTimeoutSeconds=10_000,
                       thermal={"idleCelsius": 35, "fullLoadCelsius": 85,
                                "timeConstantSeconds": 100, "slowdownCelsius": 120})
    temperatures = []
    for index in range(30):
        fleet.step(index * 10.0, one_tier(2))  # twice what it serves: always busy
        temperatures.append(float(fleet.temperature[0]))
    assert fleet.utilization[0] == 1.0
    # after one time constant: 85 - 50 * e^-1 = 85 - 18.39 = 66.61
    assert temperatures[9] == pytest.approx(66.61, abs=0.01)
    # after three: 85 - 50 * e^-3 = 85 - 2.49 = 82.51
    assert temperatures[29] == pytest.approx(82.51, abs=0.01)


def test_an_idle_gpu_cools_back_toward_idle() -> None:
    fleet = make_fleet(gpuSupply=1, initialReplicas=1,
                       thermal={"idleCelsius": 35, "timeConstantSeconds": 100})
    fleet.temperature[0] = 85.0
    for index in range(10):
        fleet.step(index * 10.0, one_tier(0))
    # 35 + 50 * e^-1 = 53.39
    assert fleet.temperature[0] == pytest.approx(53.39, abs=0.01)


def test_throttling_halves_throughput() -> None:
    # Two GPUs, one image per 10 s step each; they pass the 50 C slowdown in the first step.
    fleet = make_fleet(gpuSupply=2, initialReplicas=2, gpuSecondsPerImage=10,
                       requestTimeoutSeconds=10_000,
                       thermal={"idleCelsius": 35, "fullLoadCelsius": 85, "slowdownCelsius": 50,
                                "timeConstantSeconds": 1})
    first = fleet.step(0.0, one_tier(100))
    assert fleet.throttled.all()
    second = fleet.step(10.0, one_tier(0))
    assert first.served.sum() == pytest.approx(2.0)
    assert second.served.sum() == pytest.approx(1.0)


def test_a_throttled_gpu_recovers_only_below_the_hysteresis_band() -> None:
    fleet = make_fleet(gpuSupply=1, initialReplicas=1,
                       thermal={"slowdownCelsius": 90, "hysteresisCelsius": 3,
                                "timeConstantSeconds": 1e9})  # temperature stays put
    fleet.temperature[0] = 91.0
    fleet.step(0.0, one_tier(0))
    assert fleet.throttled[0]
    fleet.temperature[0] = 88.0  # below 90 but within 3 degrees: still throttling
    fleet.step(10.0, one_tier(0))
    assert fleet.throttled[0]
    fleet.temperature[0] = 86.9
    fleet.step(20.0, one_tier(0))
    assert not fleet.throttled[0]


def test_a_start_up_delay_delays_capacity() -> None:
    # One serving replica; two more asked for at t=0 load their model for 60 s.
    fleet = make_fleet(gpuSupply=3, initialReplicas=1, gpuSecondsPerImage=10,
                       startupSeconds=60, requestTimeoutSeconds=10_000)
    fleet.scale_to(3, now=0.0)
    served = [float(fleet.step(index * 10.0, one_tier(5)).served.sum()) for index in range(8)]
    assert served == pytest.approx([1, 1, 1, 1, 1, 1, 3, 3])
    assert fleet.allocated_gpus == 3


def test_the_gpu_supply_cap_holds_and_the_rest_is_pending() -> None:
    fleet = make_fleet(gpuSupply=4, initialReplicas=1)
    fleet.scale_to(10, now=0.0)
    fleet.step(0.0, one_tier(0))
    assert (len(fleet.replicas), fleet.pending, fleet.allocated_gpus) == (4, 6, 4)
    fleet.scale_to(3, now=10.0)
    assert (len(fleet.replicas), fleet.pending, fleet.allocated_gpus) == (3, 0, 3)


def test_replicas_of_several_gpus_take_whole_gpu_sets() -> None:
    fleet = make_fleet(gpuSupply=8, gpusPerReplica=3, initialReplicas=0)
    fleet.scale_to(3, now=0.0)
    assert (len(fleet.replicas), fleet.pending, fleet.allocated_gpus) == (2, 1, 6)


def test_scaling_down_removes_loading_replicas_first() -> None:
    fleet = make_fleet(gpuSupply=4, initialReplicas=2, startupSeconds=100)
    fleet.step(0.0, one_tier(0))
    fleet.scale_to(3, now=0.0)  # one more, loading until t=100
    fleet.scale_to(2, now=10.0)
    fleet.step(10.0, one_tier(0))
    assert fleet.serving_gpus == 2


def test_requests_queued_past_the_timeout_fail() -> None:
    # One image per 10 s step, 10 images at once, 30 s timeout: the cohort's mean arrival is
    # 5 s into the first step, so it passes 30 s during the fourth step.
    fleet = make_fleet(gpuSupply=1, initialReplicas=1, gpuSecondsPerImage=10,
                       requestTimeoutSeconds=30)
    outcomes = [fleet.step(index * 10.0, one_tier(10 if index == 0 else 0)) for index in range(6)]
    assert sum(o.served.sum() for o in outcomes) == pytest.approx(4)
    assert sum(o.failed.sum() for o in outcomes) == pytest.approx(6)
    # waits: 0, 10, 20, 30 s for the served images, 30 s (the timeout) for the failed ones
    assert fleet.waits.percentile(0.2) == 10  # 2 of 10 images waited 10 s or less
    assert fleet.waits.percentile(0.3) == 20
    assert fleet.waits.percentile(0.95) == 30


def test_melting_needs_the_melt_temperature_for_longer_than_sustain_seconds() -> None:
    # Instant heating to 95 C (above the policy's 85 C) on a 10 s step; sustainSeconds is 30.
    fleet = make_fleet(gpuSupply=4, initialReplicas=4, gpuSecondsPerImage=1,
                       thermal={"fullLoadCelsius": 95, "slowdownCelsius": 120,
                                "timeConstantSeconds": 0.001})
    melting = []
    for index in range(5):
        fleet.step(index * 10.0, one_tier(1000))
        melting.append(fleet.fleet_melting)
    assert melting == [False, False, False, True, True]


def test_samples_are_one_nvml_like_reading_per_allocated_gpu() -> None:
    fleet = make_fleet(gpuSupply=6, initialReplicas=2, gpuSecondsPerImage=10,
                       startupSeconds=60)
    fleet.scale_to(3, now=0.0)
    fleet.step(0.0, one_tier(1))  # half of what the two serving GPUs can do
    samples = fleet.samples(10.0, "inference")
    assert len(samples) == 3
    assert len({s.uuid for s in samples}) == 3
    assert sorted(s.utilization for s in samples) == [0.0, 0.5, 0.5]  # the new one is loading
    assert all(s.pod and s.pod.startswith("imagegen-worker-") for s in samples)
    assert all(s.namespace == "inference" and s.sampled_at == 10.0 for s in samples)
    assert all(s.temperature_celsius == round(s.temperature_celsius) for s in samples)
