"""Per-GPU thermal states with hysteresis, and the policy phase (worked numbers)."""

from __future__ import annotations

from meltguard.api.models import PolicySpec
from meltguard.api.state import ControllerState
from meltguard.core.observation import Observation
from meltguard.core.thermal import FleetThermal, assess_fleet

from .conftest import NOW, fleet, gpu, make_spec


def assess(spec: PolicySpec, observation: Observation, now: float = NOW,
           state: ControllerState | None = None) -> FleetThermal:
    return assess_fleet(spec.melt,
                        target_utilization_percent=spec.scaling.target_utilization_percent,
                        stale_after_seconds=spec.telemetry.stale_after_seconds,
                        previous=state or ControllerState(), observation=observation, now=now)


def remember(result: FleetThermal) -> ControllerState:
    return ControllerState(hot_since=result.hot_since, melting_since=result.melting_since,
                           cool_since=result.cool_since)


def test_cool_and_warm_by_utilization_against_target(spec: PolicySpec) -> None:
    assert assess(spec, fleet(4, 4, util=0.5)).phase == "Cool"
    warm = assess(spec, fleet(4, 4, util=0.75))  # target 70 %
    assert (warm.phase, warm.warm, warm.hot) == ("Warm", 4, 0)


def test_each_melt_threshold_makes_a_gpu_hot(spec: PolicySpec) -> None:
    for sample in (dict(temp=85.0), dict(util=0.97), dict(mem=0.95)):
        result = assess(spec, fleet(1, 1, **sample))
        assert (result.phase, result.hot, result.melting) == ("Hot", 1, 0), sample
    assert assess(spec, fleet(1, 1, temp=84.9, util=0.96, mem=0.94)).phase == "Warm"


def test_hot_for_sustain_seconds_melts() -> None:
    spec = make_spec()  # sustainSeconds 30
    first = assess(spec, fleet(1, 1, temp=90.0))
    assert first.hot_since == {"GPU-0": NOW}
    later = assess(spec, fleet(1, 1, temp=90.0, at=NOW + 29), NOW + 29, remember(first))
    assert later.phase == "Hot" and later.melting == 0
    melted = assess(spec, fleet(1, 1, temp=90.0, at=NOW + 30), NOW + 30, remember(later))
    assert melted.phase == "Melting" and melted.melting_since == {"GPU-0": NOW + 30}


def test_listed_thermal_throttle_melts_at_once_but_power_cap_does_not(spec: PolicySpec) -> None:
    assert assess(spec, fleet(1, 1, reasons=frozenset({"hw_thermal"}))).phase == "Melting"
    assert assess(spec, fleet(1, 1, reasons=frozenset({"sw_power_cap"}))).phase == "Cool"


def test_melting_gpu_needs_cool_to_hold_for_cool_sustain_seconds() -> None:
    spec = make_spec()  # cool: 78 C, 85 %, 120 s
    state = ControllerState(melting_since={"GPU-0": NOW - 100})
    warm_but_not_cool = assess(spec, fleet(1, 1, temp=80.0, util=0.5), NOW, state)
    assert warm_but_not_cool.phase == "Melting"
    cooling = assess(spec, fleet(1, 1, temp=70.0, util=0.5), NOW, state)
    assert cooling.phase == "Melting" and cooling.cool_since == {"GPU-0": NOW}
    still = assess(spec, fleet(1, 1, temp=70.0, util=0.5, at=NOW + 119), NOW + 119,
                   remember(cooling))
    assert still.phase == "Melting"
    cooled = assess(spec, fleet(1, 1, temp=70.0, util=0.5, at=NOW + 120), NOW + 120,
                    remember(still))
    assert cooled.phase == "Cool" and cooled.melting_since == {}


def test_a_blip_above_cool_restarts_the_cool_timer() -> None:
    spec = make_spec()
    state = ControllerState(melting_since={"GPU-0": NOW - 500}, cool_since={"GPU-0": NOW - 100})
    blip = assess(spec, fleet(1, 1, temp=79.0, util=0.5), NOW, state)
    assert blip.phase == "Melting" and blip.cool_since == {}


def test_fleet_fraction_decides_melting_versus_hot() -> None:
    spec = make_spec()  # fleetFraction 0.25
    samples = [gpu(i, reasons=frozenset({"hw_thermal"}) if i < 2 else frozenset())
               for i in range(8)]
    result = assess(spec, Observation(tuple(samples), current_replicas=8))
    assert (result.melting, result.phase) == (2, "Melting")  # 2/8 = 0.25
    samples[1] = gpu(1)
    assert assess(spec, Observation(tuple(samples), current_replicas=8)).phase == "Hot"


def test_stale_samples_are_not_averaged_and_keep_their_memory() -> None:
    spec = make_spec()  # staleAfterSeconds 30
    state = ControllerState(melting_since={"GPU-1": NOW - 10})
    observation = Observation((gpu(0, util=0.4), gpu(1, util=1.0, temp=95, at=NOW - 31)),
                              current_replicas=2)
    result = assess(spec, observation, NOW, state)
    assert (result.stale, result.fresh, result.mean_utilization) == (1, 1, 0.4)
    assert result.melting_since == {"GPU-1": NOW - 10}
    assert result.max_temperature_celsius == 60.0


def test_no_fresh_sample_is_unknown_and_lost_gpus_count_as_stale(spec: PolicySpec) -> None:
    observation = Observation((gpu(0, up=False),), current_replicas=1,
                              lost_gpus=frozenset({"GPU-7"}))
    result = assess(spec, observation)
    assert (result.phase, result.stale, result.total, result.mean_utilization) == (
        "Unknown", 2, 2, None)
