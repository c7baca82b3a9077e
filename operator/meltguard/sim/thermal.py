"""GPU power and heat: a profile's line from watts to degrees, thermal slowdown, and which
profile each GPU follows when (cooling failures).

Model (watts, degrees Celsius, seconds). A GPU's *work share* ``w`` is the images it makes
per second as a share of what it makes at full load with its clocks unslowed (0..1). It draws

    P = idleWatts + (fullLoadWatts - idleWatts) * w

so each image costs the same energy: the heat a GPU makes and the images it makes always
agree, throttled or not. Its temperature moves toward the steady state of that power,

    T_ss = inlet + offset + R * P,    T <- T_ss + (T - T_ss) * exp(-step / timeConstantSeconds)

(exact for a power held over the step), where ``R`` (degrees per watt) and ``inlet`` come from
the profile's two operating points and ``offset`` is the GPU's own inlet difference, drawn once
(normal, ``spreadCelsius``).

Thermal slowdown: a GPU does not pass ``slowdownCelsius``. When the work it is given would take
it past the threshold by the end of the step, it slows its clocks to the work share that ends
the step exactly at the threshold, and is busy all step at those clocks. The real regulator
acts within milliseconds, but holds the same mean, which is all a step can see.

Power cap: ``fullLoadWatts`` is the draw at full load under the cap, and the fleet's
``gpuSecondsPerImage`` is the speed at it, so the cap costs no speed beyond what that figure
says; the samples report ``sw_power_cap`` while a GPU is busy, as the H200 does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meltguard.sim.scenario import CoolingFailure, GpuProfile, Scenario

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def celsius_per_watt(profile: GpuProfile) -> float:
    """The cooling's resistance: degrees of steady temperature per watt drawn."""
    return (profile.full_load_celsius - profile.idle_celsius) \
        / (profile.full_load_watts - profile.idle_watts)


def inlet_celsius(profile: GpuProfile) -> float:
    """The steady temperature the line gives at 0 W: the effective inlet temperature."""
    return profile.idle_celsius - celsius_per_watt(profile) * profile.idle_watts


def _per_gpu(profiles: Sequence[GpuProfile], assignment: IntArray, field: str) -> FloatArray:
    return np.array([getattr(profile, field) for profile in profiles])[assignment]


@dataclass(frozen=True, slots=True)
class ThermalConstants:
    """The constants of the profiles in force, one entry per GPU."""

    inlet_celsius: FloatArray
    celsius_per_watt: FloatArray
    idle_watts: FloatArray
    full_load_watts: FloatArray
    power_limit_watts: FloatArray
    slowdown_celsius: FloatArray
    time_constant_seconds: FloatArray

    @classmethod
    def of(cls, profiles: Sequence[GpuProfile], assignment: IntArray,
           deviations: FloatArray) -> ThermalConstants:
        """Constants of GPU ``i`` following ``profiles[assignment[i]]``; ``deviations`` are the
        GPUs' inlet differences in standard deviations (scaled by each profile's spread)."""
        inlets = np.array([inlet_celsius(profile) for profile in profiles])[assignment]
        spreads = _per_gpu(profiles, assignment, "spread_celsius")
        return cls(
            inlet_celsius=inlets + spreads * deviations,
            celsius_per_watt=np.array([celsius_per_watt(p) for p in profiles])[assignment],
            idle_watts=_per_gpu(profiles, assignment, "idle_watts"),
            full_load_watts=_per_gpu(profiles, assignment, "full_load_watts"),
            power_limit_watts=_per_gpu(profiles, assignment, "power_limit_watts"),
            slowdown_celsius=_per_gpu(profiles, assignment, "slowdown_celsius"),
            time_constant_seconds=_per_gpu(profiles, assignment, "time_constant_seconds"),
        )

    def watts(self, work: FloatArray) -> FloatArray:
        """Mean power at work share ``work``."""
        return self.idle_watts + (self.full_load_watts - self.idle_watts) * work

    def steady_celsius(self, watts: FloatArray) -> FloatArray:
        """The temperature a GPU settles at when it keeps drawing ``watts``."""
        return self.inlet_celsius + self.celsius_per_watt * watts

    def after(self, celsius: FloatArray, watts: FloatArray, seconds: float) -> FloatArray:
        """Temperatures ``seconds`` later, at ``watts`` held from ``celsius``."""
        steady = self.steady_celsius(watts)
        return steady + (celsius - steady) * np.exp(-seconds / self.time_constant_seconds)

    def max_work(self, celsius: FloatArray, seconds: float) -> FloatArray:
        """The most work share each GPU can do over the next ``seconds`` from ``celsius``
        without ending above its slowdown threshold (1 where that threshold is out of reach).
        """
        kept = np.exp(-seconds / self.time_constant_seconds)
        return self.steady_max_work((self.slowdown_celsius - celsius * kept) / (1 - kept))

    def steady_max_work(self, limit_celsius: FloatArray | float) -> FloatArray:
        """The most work share each GPU can keep up forever with its steady temperature at or
        under ``limit_celsius`` (1 where full load stays under it, 0 where even idle does not):
        :meth:`max_work` over endless seconds, with ``limit_celsius`` as the threshold."""
        allowed_watts = (limit_celsius - self.inlet_celsius) / self.celsius_per_watt
        share: FloatArray = (allowed_watts - self.idle_watts) \
            / (self.full_load_watts - self.idle_watts)
        return np.clip(share, 0.0, 1.0, out=share)


@dataclass(frozen=True, slots=True)
class ThermalStep:
    """:meth:`ThermalConstants.max_work` and :meth:`ThermalConstants.after` for one step
    length, folded into per-GPU coefficients (the fleet steps every GPU every step):
    ``max_work = clip(limit - per_degree * T, 0, 1)`` and
    ``T' = kept * T + base + per_work * w``."""

    limit: FloatArray
    per_degree: FloatArray
    kept: FloatArray
    base: FloatArray
    per_work: FloatArray

    @classmethod
    def of(cls, constants: ThermalConstants, seconds: float) -> ThermalStep:
        """The coefficients of ``constants`` over steps of ``seconds``."""
        kept = np.exp(-seconds / constants.time_constant_seconds)
        span_watts = constants.full_load_watts - constants.idle_watts
        per_watt_share = 1 / (constants.celsius_per_watt * span_watts)
        limit = (constants.slowdown_celsius / (1 - kept) - constants.inlet_celsius) \
            * per_watt_share - constants.idle_watts / span_watts
        idle_steady = constants.steady_celsius(constants.idle_watts)
        return cls(
            limit=limit,
            per_degree=kept / (1 - kept) * per_watt_share,
            kept=kept,
            base=(1 - kept) * idle_steady,
            per_work=(1 - kept) * constants.celsius_per_watt * span_watts,
        )

    def max_work(self, celsius: FloatArray) -> FloatArray:
        """As :meth:`ThermalConstants.max_work` over this step, for the first
        ``len(celsius)`` GPUs."""
        gpus = len(celsius)
        share = self.limit[:gpus] - self.per_degree[:gpus] * celsius
        return np.minimum(np.maximum(share, 0.0, out=share), 1.0, out=share)

    def after(self, celsius: FloatArray, work: FloatArray) -> FloatArray:
        """As :meth:`ThermalConstants.after` for the power of ``work`` over this step."""
        return self.kept * celsius + self.base + self.per_work * work


def affected_nodes(nodes: int, share: float) -> IntArray:
    """``share`` of ``nodes``, spread evenly: node ``n`` is one when ``floor((n + 1) * share)``
    passes ``floor(n * share)`` (every fourth node, the fourth of each four, for 0.25)."""
    index = np.arange(nodes)
    chosen = np.floor((index + 1) * share + 1e-9) > np.floor(index * share + 1e-9)
    nodes_chosen: IntArray = index[chosen]
    return nodes_chosen


@dataclass(frozen=True, slots=True)
class _Failure:
    start_seconds: float
    end_seconds: float
    profile: int
    gpus: BoolArray


class CoolingPlan:
    """Which profile each of a fleet's GPUs follows at each moment, as per-GPU constants.

    ``start`` is the clock time of the day's first second; cooling failures are placed in
    hours from it.
    """

    def __init__(self, profiles: dict[str, GpuProfile], base: str,
                 failures: Sequence[CoolingFailure], *, gpus: int, gpus_per_node: int,
                 seed: int, start: float) -> None:
        names = list(profiles)
        self._profiles = [profiles[name] for name in names]
        self._base = names.index(base)
        self._deviations = np.random.default_rng(seed).standard_normal(gpus)
        self.start = start
        self.gpus = gpus
        nodes = math.ceil(gpus / gpus_per_node)
        node_of_gpu = np.arange(gpus) // gpus_per_node
        self._failures = [
            _Failure(
                start_seconds=failure.start_hour * 3600,
                end_seconds=math.inf if failure.end_hour is None else failure.end_hour * 3600,
                profile=names.index(failure.profile),
                gpus=np.isin(node_of_gpu, affected_nodes(nodes, failure.node_share)),
            )
            for failure in failures
        ]
        self._constants: dict[tuple[bool, ...], ThermalConstants] = {}
        self._steps: dict[tuple[tuple[bool, ...], float], ThermalStep] = {}
        # the last moment asked about and its failures under way: a step asks several times
        self._asked: tuple[float, tuple[bool, ...]] = (math.nan, ())

    @classmethod
    def of_scenario(cls, scenario: Scenario, *, seed: int, start: float) -> CoolingPlan:
        """The plan of a scenario's fleet (GPU inlet differences drawn from ``seed``)."""
        return cls(scenario.gpu_profiles, scenario.fleet.gpu_profile,
                   scenario.cooling_failures, gpus=scenario.fleet.gpu_supply,
                   gpus_per_node=scenario.fleet.gpus_per_node, seed=seed, start=start)

    def active(self, now: float) -> tuple[bool, ...]:
        """Which cooling failures are under way at clock time ``now``."""
        asked_at, under_way = self._asked
        if now != asked_at:
            since_start = now - self.start
            under_way = tuple(failure.start_seconds <= since_start < failure.end_seconds
                              for failure in self._failures)
            self._asked = (now, under_way)
        return under_way

    def at(self, now: float) -> ThermalConstants:
        """The per-GPU constants in force at clock time ``now`` (later failures win)."""
        key = self.active(now)
        constants = self._constants.get(key)
        if constants is None:
            assignment = self.assignment(key)
            constants = ThermalConstants.of(self._profiles, assignment, self._deviations)
            self._constants[key] = constants
        return constants

    def stepping(self, now: float, seconds: float) -> ThermalStep:
        """The constants in force at ``now`` folded for a step of ``seconds``."""
        key = (self.active(now), seconds)
        folded = self._steps.get(key)
        if folded is None:
            folded = ThermalStep.of(self.at(now), seconds)
            self._steps[key] = folded
        return folded

    def assignment(self, active: tuple[bool, ...]) -> IntArray:
        """Each GPU's profile (an index into the plan's profiles) with ``active`` failures."""
        assignment = np.full(self.gpus, self._base, dtype=np.int64)
        for failure, under_way in zip(self._failures, active, strict=True):
            if under_way:
                assignment[failure.gpus] = failure.profile
        return assignment

    def coolest_celsius(self) -> FloatArray:
        """Per GPU, a temperature it can never be below: the lowest idle steady state of any
        profile (a GPU always draws at least idle power, and moves toward a steady state)."""
        every = [ThermalConstants.of(self._profiles, np.full(self.gpus, index),
                                     self._deviations)
                 for index in range(len(self._profiles))]
        coolest: FloatArray = np.min([c.steady_celsius(c.idle_watts) for c in every], axis=0)
        return coolest
