"""The simulated GPU fleet: replicas, a FIFO request queue, and first-order heating.

Model (seconds, images, degrees Celsius):

* The cluster can give the Deployment at most ``gpuSupply`` GPUs (a hard cap: no GPU, no pod).
  A replica takes ``gpusPerReplica`` free GPUs when it is created, loads its model for
  ``startupSeconds`` (GPU held, idle, not serving), then serves. Replicas the cluster cannot
  place are Pending. Scaling down removes loading replicas first, then the newest.
* A serving GPU makes one image per ``gpuSecondsPerImage`` seconds, half as fast while it
  throttles. Admitted requests wait in one FIFO queue (the load balancer spreads work evenly);
  a request still queued ``requestTimeoutSeconds`` after it arrived fails (the client gave up:
  the errors users met). Queue wait is measured from a request's arrival to its start.
* Utilization of every serving GPU is the busy share of the step: 1 while a backlog remains,
  else work done / work possible. Loading and unallocated GPUs are idle (0).
* Temperature moves toward a steady state with time constant ``timeConstantSeconds``:
  ``T += (T_ss - T) * (1 - exp(-step / tau))`` (exact for a load held over the step), where
  ``T_ss = idle + (fullLoad - idle) * heat + offset``, ``heat`` is the utilization (times
  ``throttledHeatShare`` while throttling, as clocks drop), and ``offset`` a fixed per-GPU
  cooling difference drawn once (normal, ``spreadCelsius``). A GPU throttles from
  ``slowdownCelsius`` on until it cools ``hysteresisCelsius`` below it.
* Melting, for the report, is judged on these physical temperatures with the policy's own
  numbers: a GPU melts once it has been at or above ``melt.temperatureCelsius`` (or
  throttling) for longer than ``melt.sustainSeconds``; the fleet melts while at least
  ``melt.fleetFraction`` of its allocated GPUs melt.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meltguard.api.models import MeltSpec
from meltguard.core.observation import GpuSample
from meltguard.sim.scenario import Fleet as FleetSpec

FloatArray = npt.NDArray[np.float64]
GIB = float(1 << 30)
THROTTLED = frozenset({"sw_thermal"})
NOT_THROTTLED: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What the fleet did with one step's admitted requests, per tier."""

    served: FloatArray
    failed: FloatArray


@dataclass(slots=True)
class _Replica:
    pod: str
    gpus: list[int]


@dataclass(slots=True)
class _Cohort:
    arrived_step: int
    waiting: FloatArray


class WaitHistogram:
    """Queue waits in whole seconds, weighted by images, for percentiles."""

    def __init__(self, longest_seconds: float) -> None:
        self.counts = np.zeros(int(longest_seconds) + 2)

    def add(self, wait_seconds: float, images: float) -> None:
        """Record ``images`` that waited ``wait_seconds``."""
        index = min(int(wait_seconds), len(self.counts) - 1)
        self.counts[index] += images

    def percentile(self, share: float) -> float:
        """The wait (seconds) that ``share`` of the images did not exceed; 0 when empty."""
        total = self.counts.sum()
        if total <= 0:
            return 0.0
        return float(np.searchsorted(np.cumsum(self.counts), share * total))


class SimulatedFleet:
    """GPUs, replicas and the queue in front of them, advanced one physics step at a time."""

    def __init__(self, spec: FleetSpec, melt: MeltSpec, tier_count: int, step_seconds: int,
                 seed: int, pod_prefix: str = "imagegen-worker") -> None:
        self.spec = spec
        self._melt = melt
        self._step = step_seconds
        gpus = spec.gpu_supply
        thermal = spec.thermal
        self._offset = np.random.default_rng(seed).normal(0.0, thermal.spread_celsius, gpus)
        self.temperature = thermal.idle_celsius + self._offset
        self.throttled = np.zeros(gpus, dtype=bool)
        self.utilization = np.zeros(gpus)
        self._hot_seconds = np.zeros(gpus)
        self._pods: list[str | None] = [None] * gpus
        self._allocated = np.zeros(gpus, dtype=bool)
        self._ready_at = np.full(gpus, np.inf)
        self._serving = np.zeros(gpus, dtype=bool)
        self._cooling = 1 - math.exp(-step_seconds / thermal.time_constant_seconds)
        self._uuids = [f"GPU-sim-{index:05d}" for index in range(gpus)]
        self._nodes = [f"gpu-node-{index // spec.gpus_per_node:04d}" for index in range(gpus)]
        self._pod_prefix = pod_prefix
        self._next_pod = 0
        self.replicas: list[_Replica] = []
        self.desired = 0
        self._queue: deque[_Cohort] = deque()
        self._tier_count = tier_count
        self.waits = WaitHistogram(spec.request_timeout_seconds + step_seconds)
        self.step_index = 0
        self.melting_fraction = 0.0
        self.scale_to(spec.initial_replicas, now=-spec.startup_seconds)

    # -- replicas ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Replicas wanted but not placed for lack of GPUs."""
        return max(0, self.desired - len(self.replicas))

    @property
    def allocated_gpus(self) -> int:
        """GPUs held by replicas (loading or serving)."""
        return int(self._allocated.sum())

    @property
    def serving_gpus(self) -> int:
        """GPUs of replicas that finished loading."""
        return int(self._serving.sum())

    def scale_to(self, desired: int, now: float) -> None:
        """Set the Deployment's replicas: remove extras, place new ones while GPUs are free."""
        self.desired = desired
        while len(self.replicas) > desired:
            self._remove(self._victim_index())
        per_replica = self.spec.gpus_per_replica
        missing = desired - len(self.replicas)
        if missing <= 0:
            return
        free = np.flatnonzero(~self._allocated).tolist()
        placeable = min(missing, len(free) // per_replica)
        for first in range(0, placeable * per_replica, per_replica):
            self._add(free[first:first + per_replica], now + self.spec.startup_seconds)

    def _victim_index(self) -> int:
        """The replica a scale-down removes: the newest loading one, else the newest."""
        if self._serving[self._allocated].all():
            return len(self.replicas) - 1
        for index in range(len(self.replicas) - 1, -1, -1):
            if not self._serving[self.replicas[index].gpus[0]]:
                return index
        return len(self.replicas) - 1

    def _add(self, gpus: list[int], ready_at: float) -> None:
        replica = _Replica(f"{self._pod_prefix}-{self._next_pod:05d}", gpus)
        self._next_pod += 1
        self.replicas.append(replica)
        for index in gpus:
            self._pods[index] = replica.pod
        self._allocated[gpus] = True
        self._ready_at[gpus] = ready_at

    def _remove(self, index: int) -> None:
        replica = self.replicas.pop(index)
        for index in replica.gpus:
            self._pods[index] = None
        self._allocated[replica.gpus] = False
        self._ready_at[replica.gpus] = np.inf
        self._serving[replica.gpus] = False

    # -- physics ----------------------------------------------------------------------

    def step(self, now: float, admitted: npt.NDArray[np.int64]) -> StepOutcome:
        """Serve, fail and heat for one physics step starting at ``now``."""
        self._serving = self._ready_at <= now
        speed = np.where(self.throttled, 0.5, 1.0) * (self._step / self.spec.gpu_seconds_per_image)
        capacity = float(speed[self._serving].sum())
        self._queue.append(_Cohort(self.step_index, admitted.astype(np.float64)))
        served = self._serve(capacity)
        failed = self._fail_timed_out()
        busy = 1.0 if self._queue else (served.sum() / capacity if capacity > 0 else 0.0)
        self.utilization = np.where(self._serving, busy, 0.0)
        self._heat()
        self.step_index += 1
        return StepOutcome(served=served, failed=failed)

    def _serve(self, capacity: float) -> FloatArray:
        served = np.zeros(self._tier_count)
        done = 0.0
        while self._queue and done < capacity:
            cohort = self._queue[0]
            waiting = float(cohort.waiting.sum())
            chunk = min(waiting, capacity - done)
            if chunk > 0:
                position = (done + chunk / 2) / capacity
                age_steps = self.step_index - cohort.arrived_step - 0.5 + position
                self.waits.add(max(0.0, age_steps * self._step), chunk)
                share = cohort.waiting * (chunk / waiting)
                served += share
                cohort.waiting = cohort.waiting - share
            done += chunk
            if chunk >= waiting:
                self._queue.popleft()
        return served

    def _fail_timed_out(self) -> FloatArray:
        failed = np.zeros(self._tier_count)
        timeout = self.spec.request_timeout_seconds
        while self._queue and (self.step_index - self._queue[0].arrived_step + 0.5) \
                * self._step > timeout:
            cohort = self._queue.popleft()
            failed += cohort.waiting
            self.waits.add(timeout, float(cohort.waiting.sum()))
        return failed

    def _heat(self) -> None:
        thermal = self.spec.thermal
        heat = self.utilization * np.where(self.throttled, thermal.throttled_heat_share, 1.0)
        steady = thermal.idle_celsius + (thermal.full_load_celsius - thermal.idle_celsius) * heat
        self.temperature += (steady + self._offset - self.temperature) * self._cooling
        still_hot = self.throttled & (self.temperature > thermal.slowdown_celsius
                                      - thermal.hysteresis_celsius)
        self.throttled = (self.temperature >= thermal.slowdown_celsius) | still_hot
        hot = self._allocated & ((self.temperature >= self._melt.temperature_celsius)
                                 | self.throttled)
        self._hot_seconds = np.where(hot, self._hot_seconds + self._step, 0.0)
        melting = int((self._hot_seconds > self._melt.sustain_seconds).sum())
        allocated = self.allocated_gpus
        self.melting_fraction = melting / allocated if allocated else 0.0

    @property
    def fleet_melting(self) -> bool:
        """Whether at least ``melt.fleetFraction`` of the allocated GPUs melt."""
        return self.allocated_gpus > 0 and self.melting_fraction >= self._melt.fleet_fraction

    def capacity_per_second(self) -> float:
        """Images per second the serving GPUs make at full speed (no throttling)."""
        return self.serving_gpus / self.spec.gpu_seconds_per_image

    # -- telemetry --------------------------------------------------------------------

    def mean_utilization(self) -> float:
        """Mean utilization over the allocated GPUs, as the exporter would report them."""
        allocated = self.allocated_gpus
        return float(self.utilization[self._allocated].sum() / allocated) if allocated else 0.0

    def allocated_temperatures(self) -> FloatArray:
        """Temperatures of the GPUs held by replicas."""
        return self.temperature[self._allocated]

    def samples(self, now: float, namespace: str) -> tuple[GpuSample, ...]:
        """One NVML-like reading per allocated GPU, attributed to its pod.

        Like NVML, utilization comes in whole percent and temperature in whole degrees.
        """
        spec = self.spec
        total = spec.memory_total_gib * GIB
        indices = np.flatnonzero(self._allocated)
        utilization = np.round(self.utilization[indices] * 100) / 100
        memory = (spec.model_memory_gib + spec.busy_memory_gib * utilization) * GIB
        power_span = spec.power_limit_watts - spec.idle_power_watts
        power = spec.idle_power_watts + power_span * utilization
        temperature = np.round(self.temperature[indices])
        slowdown = spec.thermal.slowdown_celsius
        limit = spec.power_limit_watts
        uuids, nodes, pods = self._uuids, self._nodes, self._pods
        return tuple(
            GpuSample(uuids[index], util, celsius, used, total, now, nodes[index], namespace,
                      pods[index], slowdown, watts, limit,
                      THROTTLED if throttled else NOT_THROTTLED)
            for index, util, celsius, used, watts, throttled in zip(
                indices.tolist(), utilization.tolist(), temperature.tolist(),
                memory.tolist(), power.tolist(), self.throttled[indices].tolist(), strict=True
            )
        )
