"""The contract between the exporter (writer) and the operator's ingest (reader).

The exporter serves the families below; the ingest reads the same names back, so a renamed
metric or label cannot drift between the two. The throttle reasons' labels and NVML bits are
part of the contract too; they live in :mod:`meltguard.api.vocabulary`, which also spells
them as the resource does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuGauge:
    """One per-GPU gauge: its served name, help text and the reading attribute it shows
    (the same name as the quantity the ingest reads it into)."""

    name: str
    help: str
    attribute: str


GPU_GAUGES: tuple[GpuGauge, ...] = (
    GpuGauge(
        "meltguard_gpu_utilization_ratio",
        "Share of the last sample period during which a kernel ran on the GPU (0..1).",
        "utilization",
    ),
    GpuGauge("meltguard_gpu_memory_used_bytes", "Framebuffer memory in use.", "memory_used_bytes"),
    GpuGauge("meltguard_gpu_memory_total_bytes", "Framebuffer memory size.", "memory_total_bytes"),
    GpuGauge("meltguard_gpu_temperature_celsius", "GPU core temperature.", "temperature_celsius"),
    GpuGauge(
        "meltguard_gpu_slowdown_temperature_celsius",
        "Temperature at which the GPU starts slowing its clocks down.",
        "slowdown_temperature_celsius",
    ),
    GpuGauge("meltguard_gpu_power_watts", "Power draw.", "power_watts"),
    GpuGauge("meltguard_gpu_power_limit_watts", "Enforced power limit.", "power_limit_watts"),
)
GPU_THROTTLED = "meltguard_gpu_throttled"
GPU_THROTTLED_HELP = "1 for each clock-slowdown reason active on the GPU (label reason)."
GPU_UP = "meltguard_gpu_up"
GPU_UP_HELP = "1 when the last read of this GPU succeeded, 0 when it failed."

#: Family names the exporter's /metrics serves.
EXPORTER_METRIC_NAMES: frozenset[str] = frozenset(
    [gauge.name for gauge in GPU_GAUGES] + [GPU_THROTTLED, GPU_UP]
)

#: Labels of every GPU series: which GPU, on which node, and (where known) which pod holds it.
GPU_INDEX_LABEL = "gpu"
UUID_LABEL = "uuid"
MODEL_LABEL = "model"
NODE_LABEL = "node"
NAMESPACE_LABEL = "namespace"
POD_LABEL = "pod"
CONTAINER_LABEL = "container"
#: The label of :data:`GPU_THROTTLED` naming the reason (a throttle reason's ``label``).
REASON_LABEL = "reason"
