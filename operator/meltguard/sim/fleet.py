"""The simulated GPU fleet: replicas, a queue per GPU, power and heat per GPU.

Model (seconds, images, watts, degrees Celsius):

* The cluster can give the Deployment at most ``gpuSupply`` GPUs (a hard cap: no GPU, no pod).
  A replica takes ``gpusPerReplica`` free GPUs when it is created, loads its model for
  ``startupSeconds`` (GPU held, idle, not serving), then serves. Replicas the cluster cannot
  place are Pending. Scaling down removes loading replicas first, then the newest; requests
  queued at a removed replica fail.
* Admitted requests wait at the GPUs (:mod:`meltguard.sim.queues`): spread evenly over the
  serving GPUs, served oldest first, failed once they have waited about
  ``requestTimeoutSeconds``; with no GPU serving they fail at once (no endpoint). A GPU makes
  one image per ``gpuSecondsPerImage`` at full clocks.
* Power and heat follow each GPU's profile (:mod:`meltguard.sim.thermal`); a GPU about to pass
  its slowdown threshold slows its clocks and serves less, and is then *thermally throttled*.
* Utilization, as NVML counts it, is the share of the step a GPU was busy: the work it did
  over the clocks it ran at (1 for a throttled GPU with requests left).
* A GPU *melts* while it is thermally throttled or at or above its slowdown threshold; the
  power cap at full load is normal and is not melting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import numpy.typing as npt

from meltguard.core.observation import GpuSample
from meltguard.sim.queues import GpuQueues
from meltguard.sim.scenario import Fleet as FleetSpec
from meltguard.sim.thermal import CoolingPlan

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
GIB = float(1 << 30)
THERMALLY_THROTTLED = frozenset({"sw_thermal"})
POWER_CAPPED = frozenset({"sw_power_cap"})
NOT_THROTTLED: frozenset[str] = frozenset()
#: A sample reports ``sw_power_cap`` when its GPU was busy at least this share of the step:
#: the cap holds whenever kernels run, and a reading then more likely lands in one than not.
POWER_CAP_SEEN_FROM_UTILIZATION = 0.5

#: throttle reasons of a sample by code: 0 none, 1 power cap, 2 thermal slowdown
_REASONS_BY_CODE = np.array([NOT_THROTTLED, POWER_CAPPED, THERMALLY_THROTTLED], dtype=object)


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What the fleet did with one step's admitted requests, per tier."""

    served: FloatArray
    failed: FloatArray


@dataclass(slots=True)
class _Replica:
    pod: str
    gpus: list[int]


class SimulatedFleet:
    """GPUs, replicas and the queues in front of them, advanced one physics step at a time.

    ``initial_replicas`` are placed already serving at the plan's start; answers within
    ``slo_seconds`` are counted.
    """

    def __init__(self, spec: FleetSpec, plan: CoolingPlan, *, tier_count: int,
                 step_seconds: int, initial_replicas: int, slo_seconds: float = 30,
                 pod_prefix: str = "imagegen-worker") -> None:
        self.spec = spec
        self._plan = plan
        self._step = step_seconds
        gpus = spec.gpu_supply
        self._full_speed = step_seconds / spec.gpu_seconds_per_image  # images a step at w=1
        constants = plan.at(plan.start)
        self.temperature = constants.steady_celsius(constants.idle_watts)
        self._now = plan.start
        self.throttled = np.zeros(gpus, dtype=bool)
        self.utilization = np.zeros(gpus)
        self.work = np.zeros(gpus)
        self._max_work = np.ones(0)  # of the GPUs up to the last one held, in the last step
        #: allocated GPUs thermally throttled or at or above their slowdown threshold
        self.melting_gpus = 0
        self._pods = np.full(gpus, None, dtype=object)
        self._allocated = np.zeros(gpus, dtype=bool)
        self._ready_at = np.full(gpus, np.inf)
        self._serving = np.zeros(gpus, dtype=bool)
        self._uuids = np.array([f"GPU-sim-{index:05d}" for index in range(gpus)], dtype=object)
        self._nodes = np.array([f"gpu-node-{index // spec.gpus_per_node:04d}"
                                for index in range(gpus)], dtype=object)
        self._pod_prefix = pod_prefix
        self._next_pod = 0
        self.replicas: list[_Replica] = []
        self.desired = 0
        self._tier_count = tier_count
        self._span = 0  # GPUs up to the last one held
        self.queues = GpuQueues(gpus, tiers=tier_count, step_seconds=step_seconds,
                                timeout_seconds=spec.request_timeout_seconds,
                                slo_seconds=slo_seconds)
        self._dropped: FloatArray | None = None  # requests of removed replicas, failing
        self.scale_to(initial_replicas, now=plan.start - spec.startup_seconds)
        self._serving = self._ready_at <= plan.start

    # -- replicas ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Replicas wanted but not placed for lack of GPUs."""
        return max(0, self.desired - len(self.replicas))

    @property
    def allocated_gpus(self) -> int:
        """GPUs held by replicas (loading or serving)."""
        return len(self.replicas) * self.spec.gpus_per_replica

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
        if missing <= 0 or len(self.replicas) * per_replica + per_replica > len(self._allocated):
            return  # nothing to add, or no room for one more replica (pods stay Pending)
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
        self._pods[gpus] = replica.pod
        self._allocated[gpus] = True
        self._ready_at[gpus] = ready_at
        self._span = max(self._span, max(gpus) + 1)

    def _remove(self, index: int) -> None:
        replica = self.replicas.pop(index)
        self._pods[replica.gpus] = None
        self._allocated[replica.gpus] = False
        self._ready_at[replica.gpus] = np.inf
        self._serving[replica.gpus] = False
        self.work[replica.gpus] = 0.0
        self.utilization[replica.gpus] = 0.0
        self.throttled[replica.gpus] = False
        dropped = self.queues.drop(replica.gpus)
        self._dropped = dropped if self._dropped is None else self._dropped + dropped
        if max(replica.gpus) + 1 == self._span:  # it held the last GPU held: the span shrinks
            held = np.flatnonzero(self._allocated[:self._span])
            self._span = int(held[-1]) + 1 if held.size else 0

    # -- physics ----------------------------------------------------------------------

    def settle(self, images_per_second: float) -> None:
        """Put the serving GPUs in the steady state of ``images_per_second`` spread evenly
        over them (the warm start: as if that load had lasted for a while)."""
        servers = self.serving_gpus
        if servers == 0:
            return
        constants = self._plan.at(self._plan.start)
        share = images_per_second * self.spec.gpu_seconds_per_image / servers
        steady_most = constants.max_work(self.temperature, math.inf)
        self.work = np.where(self._serving, np.minimum(share, steady_most), 0.0)
        self.utilization = self.work.copy()
        self.temperature = constants.steady_celsius(constants.watts(self.work))

    def step(self, now: float, admitted: npt.NDArray[np.int64]) -> StepOutcome:
        """Serve, fail and heat for one physics step starting at ``now``."""
        thermal = self._plan.stepping(now, self._step)
        self._now = now
        span = self._span  # GPUs past the last one held have no pod and no queue
        serving = self._ready_at[:span] <= now
        self._serving[:span] = serving
        failed = self.queues.admit(admitted, serving)
        if self._dropped is not None:
            failed = failed + self._dropped
            self._dropped = None
        self._max_work = thermal.max_work(self.temperature[:span])
        capacity = self._max_work * serving * self._full_speed
        clocks = self._slow_down_where_hot(capacity)
        making = self.spec.gpu_seconds_per_image
        served_by_gpu, served = self.queues.serve(
            capacity, making if clocks is None else making / np.maximum(clocks, 1e-9))
        failed = failed + self.queues.expire(span)
        work = self.work[:span]
        np.divide(served_by_gpu, self._full_speed, out=work)
        self.utilization[:span] = work if clocks is None else np.minimum(1.0, work / clocks)
        self.temperature = thermal.after(self.temperature, self.work)
        self._count_melting(now)
        return StepOutcome(served=served, failed=failed)

    def _slow_down_where_hot(self, capacity: FloatArray) -> FloatArray | None:
        """Mark the GPUs that get more work than their heat lets them do as throttled; their
        clocks (work share while busy), or None when every GPU runs at full clocks."""
        span = len(capacity)
        throttled = self.throttled[:span]
        if np.minimum.reduce(self._max_work, initial=1.0) >= 1.0:  # every GPU at full clocks
            throttled[:] = False
            return None
        np.greater(self.queues.wanted(span), capacity, out=throttled)
        throttled &= self._max_work < 1
        clocks: FloatArray = np.where(throttled, self._max_work, 1.0)
        return clocks

    def _count_melting(self, now: float) -> None:
        span = self._span  # GPUs past it are held by no replica
        slowdown = self._plan.at(now).slowdown_celsius[:span]
        hot = self.throttled[:span] | (self.temperature[:span] >= slowdown)
        self.melting_gpus = int(np.count_nonzero(hot & self._allocated[:span]))

    @property
    def watts(self) -> FloatArray:
        """Mean power of each GPU over the last step."""
        return self._plan.at(self._now).watts(self.work)

    def capacity_per_second(self) -> float:
        """Images per second the serving GPUs could make in the last step (slowdown counted)."""
        serving = self._serving[:len(self._max_work)]
        return float(self._max_work[serving].sum()) / self.spec.gpu_seconds_per_image

    # -- telemetry --------------------------------------------------------------------

    def mean_utilization(self) -> float:
        """Mean utilization over the allocated GPUs, as the exporter would report them."""
        allocated = self.allocated_gpus
        if not allocated:
            return 0.0
        # GPUs not held have utilization 0: the sum over the span is the sum over those held
        return float(self.utilization[:self._span].sum()) / allocated

    def allocated_temperatures(self) -> FloatArray:
        """Temperatures of the GPUs held by replicas."""
        return self.temperature[self._held()]

    def _held(self) -> slice | IntArray:
        """The GPUs held by replicas, in order: a slice when they are the first ones (most
        ticks: replicas take the lowest free GPUs), else their indices."""
        span = self._span
        if self.allocated_gpus == span:
            return slice(0, span)
        return np.flatnonzero(self._allocated[:span])

    def samples(self, now: float, namespace: str) -> tuple[GpuSample, ...]:
        """One NVML-like reading per allocated GPU, attributed to its pod.

        Like NVML, utilization comes in whole percent and temperature in whole degrees.
        """
        spec = self.spec
        constants = self._plan.at(now)
        held = self._held()
        utilization = np.round(self.utilization[held] * 100) / 100
        memory = (spec.model_memory_gib + spec.busy_memory_gib * utilization) * GIB
        reasons = np.where(self.throttled[held], 2,
                           utilization >= POWER_CAP_SEEN_FROM_UTILIZATION)
        columns: dict[str, Iterable[object]] = {
            "uuid": self._uuids[held].tolist(),
            "utilization": utilization.tolist(),
            "temperature_celsius": np.round(self.temperature[held]).tolist(),
            "memory_used_bytes": memory.tolist(),
            "memory_total_bytes": repeat(spec.memory_total_gib * GIB),
            "sampled_at": repeat(now),
            "node": self._nodes[held].tolist(),
            "namespace": repeat(namespace),
            "pod": self._pods[held].tolist(),
            "slowdown_temperature_celsius": constants.slowdown_celsius[held].tolist(),
            "power_watts": self.watts[held].tolist(),
            "power_limit_watts": constants.power_limit_watts[held].tolist(),
            "throttle_reasons": _REASONS_BY_CODE[reasons].tolist(),
        }
        return _samples(columns)


def _samples(columns: dict[str, Iterable[object]]) -> tuple[GpuSample, ...]:
    """GpuSamples from one column per field (a field without a column takes its default).

    The tuples are zipped and made in C: a sample per GPU per tick is the simulator's
    costliest loop otherwise.
    """
    defaults = GpuSample._field_defaults
    ordered = [columns[name] if name in columns else repeat(defaults[name])
               for name in GpuSample._fields]
    return tuple(map(tuple.__new__, repeat(GpuSample),
                     zip(*ordered, strict=False)))  # the defaults repeat
