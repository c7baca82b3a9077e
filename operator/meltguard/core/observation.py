"""What the control loop sees on one tick: GPU samples plus the target's replica counts.

Telemetry adapters (NVML exporter scrape, dcgm-exporter, Prometheus, the simulator)
all produce these plain values, so the decision core never knows where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

#: Throttle reasons as the exporter labels them (``meltguard_gpu_throttled{reason=...}``),
#: mapped to the NVML names used in ``spec.melt.throttleReasons``.
THROTTLE_REASON_NVML_NAMES: dict[str, str] = {
    "hw_thermal": "HwThermalSlowdown",
    "sw_thermal": "SwThermalSlowdown",
    "hw_power_brake": "HwPowerBrakeSlowdown",
    "hw_slowdown": "HwSlowdown",
    "sw_power_cap": "SwPowerCap",
}
NVML_NAME_THROTTLE_REASONS: dict[str, str] = {v: k for k, v in THROTTLE_REASON_NVML_NAMES.items()}


class GpuSample(NamedTuple):
    """One reading of one GPU (immutable; a NamedTuple because telemetry builds one per GPU
    per tick, and it constructs about four times faster than a frozen dataclass).

    ``utilization`` is the SM busy share 0..1; temperatures in Celsius; memory in bytes;
    power in watts; ``sampled_at`` in seconds since the epoch. ``throttle_reasons`` holds
    the exporter's short names (keys of :data:`THROTTLE_REASON_NVML_NAMES`).
    ``up`` is False when the last read of this GPU failed: such a sample counts as stale.
    """

    uuid: str
    utilization: float
    temperature_celsius: float
    memory_used_bytes: float
    memory_total_bytes: float
    sampled_at: float
    node: str = ""
    namespace: str | None = None
    pod: str | None = None
    slowdown_temperature_celsius: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    throttle_reasons: frozenset[str] = frozenset()
    model: str = ""
    up: bool = True

    @property
    def memory_ratio(self) -> float:
        """Framebuffer used share 0..1 (0 when the total is unknown)."""
        if self.memory_total_bytes <= 0:
            return 0.0
        return self.memory_used_bytes / self.memory_total_bytes


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything the core needs to know about the world on one tick.

    ``current_replicas`` is the target's ``spec.replicas`` (scale subresource);
    ``pending_replicas`` counts the target's pods that cannot be scheduled for lack of GPUs.
    ``lost_gpus`` names GPUs that were expected but whose endpoint failed this tick
    (timeout, refused, malformed page): they count as stale.
    ``telemetry_errors`` counts failed endpoints, for reporting.
    """

    samples: tuple[GpuSample, ...]
    current_replicas: int
    pending_replicas: int = 0
    lost_gpus: frozenset[str] = field(default_factory=frozenset)
    telemetry_errors: int = 0
