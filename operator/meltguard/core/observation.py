"""What the control loop sees on one tick: GPU samples plus the target's replica counts.

Telemetry adapters (NVML exporter scrape, dcgm-exporter, Prometheus, the simulator)
all produce these plain values, so the decision core never knows where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class GpuSample(NamedTuple):
    """One reading of one GPU (immutable; a NamedTuple because telemetry builds one per GPU
    per tick, and a tuple is the cheapest immutable value Python constructs).

    ``utilization`` is the SM busy share 0..1; temperatures in Celsius; memory in bytes;
    power in watts; ``sampled_at`` in seconds since the epoch. ``throttle_reasons`` holds
    the exporter's labels (:data:`meltguard.api.vocabulary.THROTTLE_REASONS`).
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
