"""Renders the sampler's snapshot as the exporter's Prometheus families."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from meltguard.telemetry.devices import DeviceReading, PodRef
from meltguard.telemetry.metrics import (
    GPU_GAUGES,
    GPU_THROTTLED,
    GPU_THROTTLED_HELP,
    GPU_UP,
    GPU_UP_HELP,
)
from meltguard.telemetry.sampler import Snapshot


def gpu_labels(reading: DeviceReading, node: str, pod: PodRef | None) -> dict[str, str]:
    """The identifying labels of one GPU; pod labels only where the pod is known."""
    labels = {"gpu": str(reading.index), "uuid": reading.uuid, "model": reading.model, "node": node}
    if pod is not None:
        labels["namespace"] = pod.namespace
        labels["pod"] = pod.pod
        if pod.container:
            labels["container"] = pod.container
    return labels


class GpuCollector(Collector):
    """Collects the current snapshot on every scrape; GPUs whose read failed get only ``up 0``."""

    def __init__(self, snapshot: Callable[[], Snapshot], node: str) -> None:
        self._snapshot = snapshot
        self._node = node

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        gauges = [Metric(gauge.name, gauge.help, "gauge") for gauge in GPU_GAUGES]
        throttled = Metric(GPU_THROTTLED, GPU_THROTTLED_HELP, "gauge")
        up = Metric(GPU_UP, GPU_UP_HELP, "gauge")
        for reading in snapshot.readings:
            labels = gpu_labels(reading, self._node, snapshot.pods.get(reading.uuid))
            up.add_sample(GPU_UP, labels, 1.0 if reading.up else 0.0)
            if not reading.up:
                continue
            for gauge, metric in zip(GPU_GAUGES, gauges, strict=True):
                value = getattr(reading, gauge.attribute)
                if value is not None:
                    metric.add_sample(gauge.name, labels, float(value))
            for reason in sorted(reading.throttle_reasons):
                throttled.add_sample(GPU_THROTTLED, {**labels, "reason": reason}, 1.0)
        yield from gauges
        yield throttled
        yield up
