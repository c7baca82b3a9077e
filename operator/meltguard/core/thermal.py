"""Per-GPU thermal states with hysteresis, and the policy's phase.

A GPU is, on each tick:

* **Stale** when its sample is older than ``staleAfterSeconds`` or its read failed: it is not
  averaged, and whatever it was doing before (hot, melting) is remembered unchanged.
* **Melting** when it has been hot for ``melt.sustainSeconds``, or a throttle reason listed in
  ``melt.throttleReasons`` is active right now. A melting GPU stays Melting until the ``cool``
  thresholds have held for ``cool.sustainSeconds`` (hysteresis: no flapping at the line).
  Such a GPU whose cool thresholds hold (its cool timer runs) is counted as ``cooling``.
* **Hot** when any ``melt`` threshold is crossed (temperature, utilization, memory).
* **Warm** when its utilization is above the scaling target, else **Cool**.

The policy's phase is Melting when at least ``fleetFraction`` of the fresh GPUs melt (and at
least one does), else the worst state of any fresh GPU, and Unknown with no fresh sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from meltguard.api.models import MeltSpec
from meltguard.api.state import ControllerState
from meltguard.api.vocabulary import THROTTLE_LABEL_OF_NAME, Phase
from meltguard.core.observation import Observation


def melt_throttle_labels(melt: MeltSpec) -> frozenset[str]:
    """``melt.throttleReasons`` (NVML's names, as the spec gives them) as the exporter labels
    that samples carry."""
    return frozenset(THROTTLE_LABEL_OF_NAME[reason] for reason in melt.throttle_reasons)


@dataclass(frozen=True, slots=True)
class FleetThermal:
    """The thermal picture of the target's GPUs on one tick, and the memory to keep."""

    phase: Phase
    total: int
    fresh: int
    hot: int
    melting: int
    stale: int
    warm: int
    cooling: int
    max_temperature_celsius: float | None
    mean_utilization: float | None
    hot_since: dict[str, float]
    melting_since: dict[str, float]
    cool_since: dict[str, float]


@dataclass(frozen=True, slots=True)
class _Thresholds:
    """The spec's thresholds in the units samples carry (ratios 0..1, exporter reason labels)."""

    hot_temperature: float
    hot_utilization: float
    hot_memory: float
    throttle_reasons: frozenset[str]
    sustain: float
    cool_temperature: float
    cool_utilization: float
    cool_sustain: float
    warm_utilization: float

    @classmethod
    def of(cls, melt: MeltSpec, target_utilization_percent: float) -> _Thresholds:
        return cls(
            hot_temperature=melt.temperature_celsius,
            hot_utilization=melt.utilization_percent / 100,
            hot_memory=melt.memory_percent / 100,
            throttle_reasons=melt_throttle_labels(melt),
            sustain=melt.sustain_seconds,
            cool_temperature=melt.cool.temperature_celsius,
            cool_utilization=melt.cool.utilization_percent / 100,
            cool_sustain=melt.cool.sustain_seconds,
            warm_utilization=target_utilization_percent / 100,
        )


class _Timers(NamedTuple):
    """Since when each GPU (by uuid) is hot, melting, and cooling down from melting."""

    hot_since: dict[str, float]
    melting_since: dict[str, float]
    cool_since: dict[str, float]


def assess_fleet(
    melt: MeltSpec,
    *,
    target_utilization_percent: float,
    stale_after_seconds: float,
    previous: ControllerState,
    observation: Observation,
    now: float,
) -> FleetThermal:
    """Classify every GPU of the observation and derive the policy's phase.

    Written as one flat loop over the samples because it runs over every GPU of the
    fleet on every tick (``bench/decide.py`` measures it).
    """
    limits = _Thresholds.of(melt, target_utilization_percent)
    # thresholds in locals: this loop runs for every GPU of the fleet on every tick
    hot_temperature, hot_utilization = limits.hot_temperature, limits.hot_utilization
    hot_memory, melt_reasons = limits.hot_memory, limits.throttle_reasons
    cool_temperature, cool_utilization = limits.cool_temperature, limits.cool_utilization
    sustain, cool_sustain = limits.sustain, limits.cool_sustain
    warm_utilization = limits.warm_utilization
    old_timers = _Timers(previous.hot_since, previous.melting_since, previous.cool_since)
    old_hot, old_melting, old_cool = old_timers
    new_timers = _Timers({}, {}, {})
    hot_since, melting_since, cool_since = new_timers
    oldest_fresh = now - stale_after_seconds
    fresh = hot = melting = warm = stale = cooling = 0
    utilization_sum = 0.0
    max_temperature = float("-inf")

    for sample in observation.samples:
        uuid = sample.uuid
        if not sample.up or sample.sampled_at < oldest_fresh:
            stale += 1
            _carry_over(uuid, old=old_timers, new=new_timers)
            continue
        fresh += 1
        utilization = sample.utilization
        temperature = sample.temperature_celsius
        utilization_sum += utilization
        if temperature > max_temperature:
            max_temperature = temperature
        reasons = sample.throttle_reasons
        throttled = bool(reasons) and not melt_reasons.isdisjoint(reasons)
        if uuid in old_melting:
            if throttled or temperature > cool_temperature or utilization > cool_utilization:
                melting_since[uuid] = old_melting[uuid]
                melting += 1
                hot += 1
                continue
            cooling_from = old_cool.get(uuid, now)
            if now - cooling_from < cool_sustain:
                melting_since[uuid] = old_melting[uuid]
                cool_since[uuid] = cooling_from
                cooling += 1
                melting += 1
                hot += 1
                continue
        elif (
            throttled
            or temperature >= hot_temperature
            or utilization >= hot_utilization
            or sample.memory_used_bytes >= hot_memory * sample.memory_total_bytes > 0
        ):
            started = old_hot.get(uuid, now)
            hot += 1
            if throttled or now - started >= sustain:
                melting_since[uuid] = now
                melting += 1
            else:
                hot_since[uuid] = started
            continue
        if utilization > warm_utilization:
            warm += 1

    if observation.lost_gpus:
        sampled = {sample.uuid for sample in observation.samples}
        for uuid in observation.lost_gpus - sampled:
            stale += 1
            _carry_over(uuid, old=old_timers, new=new_timers)
    return FleetThermal(
        phase=_phase(fresh=fresh, hot=hot, melting=melting, warm=warm,
                      fleet_fraction=melt.fleet_fraction),
        total=fresh + stale,
        fresh=fresh,
        hot=hot,
        melting=melting,
        stale=stale,
        warm=warm,
        cooling=cooling,
        max_temperature_celsius=max_temperature if fresh else None,
        mean_utilization=utilization_sum / fresh if fresh else None,
        hot_since=hot_since,
        melting_since=melting_since,
        cool_since=cool_since,
    )


def _carry_over(uuid: str, *, old: _Timers, new: _Timers) -> None:
    """Keep a stale GPU's memory as it was: no news is not good news."""
    for old_timer, new_timer in zip(old, new, strict=True):
        if uuid in old_timer:
            new_timer[uuid] = old_timer[uuid]


def _phase(*, fresh: int, hot: int, melting: int, warm: int, fleet_fraction: float) -> Phase:
    if fresh == 0:
        return "Unknown"
    if melting and melting >= fleet_fraction * fresh:
        return "Melting"
    if hot:
        return "Hot"
    return "Warm" if warm else "Cool"
