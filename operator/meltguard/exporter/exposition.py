"""Renders the sampler's snapshot as the exporter's Prometheus families."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from meltguard.exporter.devices import DeviceReading, PodRef
from meltguard.exporter.sampler import Snapshot
from meltguard.wire import (
    CONTAINER_LABEL,
    GPU_GAUGES,
    GPU_INDEX_LABEL,
    GPU_THROTTLED,
    GPU_THROTTLED_HELP,
    GPU_UP,
    GPU_UP_HELP,
    MODEL_LABEL,
    NAMESPACE_LABEL,
    NODE_LABEL,
    POD_LABEL,
    REASON_LABEL,
    UUID_LABEL,
)


def gpu_labels(reading: DeviceReading, node: str, pod: PodRef | None) -> dict[str, str]:
    """The identifying labels of one GPU; pod labels only where the pod is known."""
    labels = {
        GPU_INDEX_LABEL: str(reading.index),
        UUID_LABEL: reading.uuid,
        MODEL_LABEL: reading.model,
        NODE_LABEL: node,
    }
    if pod is not None:
        labels[NAMESPACE_LABEL] = pod.namespace
        labels[POD_LABEL] = pod.pod
        if pod.container:
            labels[CONTAINER_LABEL] = pod.container
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
                throttled.add_sample(GPU_THROTTLED, {**labels, REASON_LABEL: reason}, 1.0)
        yield from gauges
        yield throttled
        yield up
