"""Metric families of the telemetry area, defined once and used by both sides.

The exporter serves the GPU families of :data:`GPU_GAUGES` plus ``meltguard_gpu_throttled``
and ``meltguard_gpu_up``; the operator's sources parse the same names back, so a renamed
metric cannot drift between writer and reader. The source-side counters below are
registered on prometheus-client's default registry, which the operator serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase


@dataclass(frozen=True, slots=True)
class GpuGauge:
    """One per-GPU gauge: its served name, help text and the reading attribute it shows."""

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

ENDPOINT_ERRORS = Counter(
    "meltguard_telemetry_endpoint_errors_total",
    "Telemetry endpoint reads that failed (their GPUs count as stale), by source and reason.",
    ["source", "reason"],
)
REJECTED_SAMPLES = Counter(
    "meltguard_telemetry_rejected_samples_total",
    "Series or GPU readings dropped as malformed or implausible, by source and reason.",
    ["source", "reason"],
)
SOURCE_METRICS: tuple[MetricWrapperBase, ...] = (ENDPOINT_ERRORS, REJECTED_SAMPLES)


def served_names(metric: MetricWrapperBase) -> frozenset[str]:
    """Names a prometheus-client metric appears under in the text format (counters get _total)."""
    return frozenset(
        family.name + "_total" if family.type == "counter" else family.name
        for family in metric.describe()
    )


#: Every family name this area serves: the exporter's and the operator-side source counters.
METRIC_NAMES: frozenset[str] = EXPORTER_METRIC_NAMES.union(
    *(served_names(metric) for metric in SOURCE_METRICS)
)
