"""The GPU profiles against the H200 measurement, worked out by hand.

The h200 profile's line: 78 W at 36 C and 692 W at 59.5 C, so 23.5 / 614 = 0.038274 C/W
above an effective inlet of 36 - 78 x 0.038274 = 33.015 C, and a time constant of 0.9 s.
One GPU, one image per second at full clocks, one-second steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meltguard.sim.fleet import SimulatedFleet
from meltguard.sim.thermal import (
    ThermalConstants,
    ThermalStep,
    celsius_per_watt,
    inlet_celsius,
)
from tests.sim.conftest import PROFILES, exact_profile, make_fleet

H200_RISE = 23.5 / 614  # C per W
H200_INLET = 36 - 78 * H200_RISE
DEGRADED_RISE = 2 * H200_RISE  # half the heat removal
DEGRADED_INLET = H200_INLET + 12  # inlet air 12 C hotter


def one_gpu(profile: str = "h200") -> SimulatedFleet:
    return make_fleet(1, initial_replicas=1, gpuSupply=1, gpuSecondsPerImage=1,
                      requestTimeoutSeconds=1, profile=profile)


def run(fleet: SimulatedFleet, images_each_second: list[int], start: int = 0) -> list[float]:
    """Step once a second; the temperature after each step."""
    temperatures = []
    for offset, images in enumerate(images_each_second):
        fleet.step(float(start + offset), np.array([images], dtype=np.int64))
        temperatures.append(float(fleet.temperature[0]))
    return temperatures


def test_the_profiles_line_is_the_measured_points() -> None:
    h200 = PROFILES["h200"]
    assert celsius_per_watt(h200) == pytest.approx(H200_RISE)
    assert inlet_celsius(h200) == pytest.approx(33.015, abs=1e-3)
    degraded = PROFILES["degraded-cooling"]
    assert celsius_per_watt(degraded) == pytest.approx(DEGRADED_RISE, rel=1e-3)
    assert inlet_celsius(degraded) == pytest.approx(DEGRADED_INLET, abs=0.05)
    assert "Measured" in h200.source and "Assumed" in degraded.source


def test_an_h200_heats_up_as_measured() -> None:
    # From idle (36 C) at full load: T(t) = 59.5 - 23.5 e^(-t / 0.9)
    fleet = one_gpu()
    assert float(fleet.temperature[0]) == pytest.approx(36.0)
    temperatures = run(fleet, [1] * 40)
    assert temperatures[0] == pytest.approx(59.5 - 23.5 * math.exp(-1 / 0.9))  # 51.76
    assert temperatures[1] == pytest.approx(56.95, abs=0.01)
    assert abs(temperatures[1] - 57) < 0.5  # measured: 57 C after 2 s
    assert temperatures[-1] == pytest.approx(59.5, abs=1e-6)  # measured: 59-60 C within 40 s


def test_an_h200_at_full_load_sits_at_its_power_cap_far_below_slowdown() -> None:
    fleet = one_gpu()
    run(fleet, [1] * 40)
    sample = fleet.samples(40.0, "inference")[0]
    assert sample.utilization == 1.0  # measured: 0.99-1.00
    assert sample.power_watts == pytest.approx(692)  # measured: 689-696 W
    assert sample.power_watts <= sample.power_limit_watts == 700
    assert sample.throttle_reasons == frozenset({"sw_power_cap"})  # measured: all along
    assert sample.slowdown_temperature_celsius == 89
    assert sample.temperature_celsius == 60  # 59.5, read in whole degrees
    assert fleet.melting_gpus == 0 and not fleet.throttled[0]  # the cap is normal
    # about 30 C below its slowdown threshold
    assert sample.slowdown_temperature_celsius - fleet.temperature[0] == pytest.approx(29.5)


def test_an_h200_cools_down_as_measured() -> None:
    # From 59.5 C with no work: T(t) = 36 + 23.5 e^(-t / 0.9)
    fleet = one_gpu()
    run(fleet, [1] * 40)
    temperatures = run(fleet, [0, 0, 0], start=40)
    assert temperatures[0] == pytest.approx(36 + 23.5 * math.exp(-1 / 0.9))  # 43.74
    assert abs(temperatures[0] - 44) < 0.5  # measured: 44 C after 1 s
    assert temperatures[2] == pytest.approx(36.84, abs=0.01)
    # measured 39 C after 3 s, while the board still drew 123 W; at 123 W the same line and
    # time constant give 37.72 + 21.78 e^(-3 / 0.9) = 38.5 C
    constants = ThermalConstants.of([exact_profile("h200")], np.zeros(1, dtype=np.int64),
                                    np.zeros(1))
    at_123_watts = constants.after(np.array([59.5]), np.array([123.0]), 3.0)[0]
    assert at_123_watts == pytest.approx(38.50, abs=0.01)
    assert abs(at_123_watts - 39) < 0.6


def test_degraded_cooling_reaches_slowdown_and_throttles_there() -> None:
    # Idle at 45.03 + 78 x 0.07655 = 51.0 C; at full load it would settle at 98 C, with a
    # 1.8 s time constant: T(t) = 98 - 47 e^(-t / 1.8), 89 C after 1.8 ln(47 / 9) = 2.98 s.
    fleet = one_gpu("degraded-cooling")
    assert float(fleet.temperature[0]) == pytest.approx(51.0, abs=0.01)
    served = []
    temperatures = []
    for second in range(8):
        outcome = fleet.step(float(second), np.array([1], dtype=np.int64))
        served.append(float(outcome.served.sum()))
        temperatures.append(float(fleet.temperature[0]))
    assert temperatures[0] == pytest.approx(98 - 47 * math.exp(-1 / 1.8), abs=0.01)  # 71.03
    assert temperatures[1] == pytest.approx(98 - 47 * math.exp(-2 / 1.8), abs=0.01)  # 82.53
    assert served[:2] == pytest.approx([1, 1])  # still below the threshold
    assert temperatures[2:] == pytest.approx([89.0] * 6)  # held at the threshold
    # held there, the GPU draws what keeps it at 89 C: (89 - 45.03) / 0.07655 = 574.4 W,
    # i.e. (574.4 - 78) / 614 = 80.85% of its full-clock work: heat and images agree
    held_watts = (89 - DEGRADED_INLET) / DEGRADED_RISE
    held_share = (held_watts - 78) / 614
    assert held_share == pytest.approx(0.8085, abs=1e-3)
    assert served[3:] == pytest.approx([held_share] * 5, abs=1e-3)
    assert fleet.throttled[0] and fleet.melting_gpus == 1
    sample = fleet.samples(8.0, "inference")[0]
    assert sample.throttle_reasons == frozenset({"sw_thermal"})
    assert sample.utilization == 1.0  # busy all along, at lower clocks
    assert sample.power_watts == pytest.approx(held_watts, abs=0.5)


def test_degraded_cooling_below_the_threshold_is_not_throttled() -> None:
    # at 70% of full-clock work: 45.03 + 0.07655 x (78 + 0.7 x 614) = 83.9 C
    fleet = make_fleet(10, initial_replicas=1, gpuSupply=1, gpuSecondsPerImage=1,
                       profile="degraded-cooling")
    for index in range(5):
        fleet.step(index * 10.0, np.array([7], dtype=np.int64))
    assert float(fleet.temperature[0]) == pytest.approx(
        DEGRADED_INLET + DEGRADED_RISE * (78 + 0.7 * 614), abs=0.05)
    assert not fleet.throttled[0] and fleet.melting_gpus == 0


@settings(max_examples=60, deadline=None)
@given(
    celsius=st.lists(st.floats(20, 120), min_size=1, max_size=8),
    work=st.floats(0, 1),
    seconds=st.sampled_from([0.5, 1.0, 10.0, 30.0, 60.0]),
    profile=st.sampled_from(sorted(PROFILES)),
)
def test_the_folded_step_agrees_with_the_plain_formulas(
    celsius: list[float], work: float, seconds: float, profile: str
) -> None:
    gpus = len(celsius)
    constants = ThermalConstants.of([PROFILES[profile]], np.zeros(gpus, dtype=np.int64),
                                    np.linspace(-1, 1, gpus))
    folded = ThermalStep.of(constants, seconds)
    temperatures = np.array(celsius)
    works = np.full(gpus, work)
    np.testing.assert_allclose(folded.max_work(temperatures),
                               constants.max_work(temperatures, seconds), atol=1e-9)
    np.testing.assert_allclose(folded.after(temperatures, works),
                               constants.after(temperatures, constants.watts(works), seconds),
                               atol=1e-9)
