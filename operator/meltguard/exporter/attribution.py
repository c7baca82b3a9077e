"""Simple GPU-to-pod attributions: none, one pod for all GPUs (sidecar), round-robin (--attach).

The kubelet pod-resources attribution for DaemonSet mode lives in :mod:`.podresources`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meltguard.exporter.devices import DeviceReading, PodRef


class NoAttribution:
    """GPUs are served without namespace/pod labels."""

    def pods_by_uuid(self, readings: Sequence[DeviceReading]) -> Mapping[str, PodRef]:
        return {}


class SidecarAttribution:
    """Sidecar mode: every GPU the exporter sees belongs to its own pod (downward API)."""

    def __init__(self, pod: PodRef) -> None:
        self.pod = pod

    def pods_by_uuid(self, readings: Sequence[DeviceReading]) -> Mapping[str, PodRef]:
        return {reading.uuid: self.pod for reading in readings}


class RoundRobinAttribution:
    """``--attach``: GPU i belongs to ``pods[i % len(pods)]``."""

    def __init__(self, pods: Sequence[PodRef]) -> None:
        if not pods:
            raise ValueError("round-robin attribution needs at least one pod")
        self.pods = tuple(pods)

    def pods_by_uuid(self, readings: Sequence[DeviceReading]) -> Mapping[str, PodRef]:
        return {r.uuid: self.pods[r.index % len(self.pods)] for r in readings}


def parse_attach(text: str) -> list[PodRef]:
    """Parse ``NS/POD[,NS/POD...]``; raise ValueError naming the malformed item."""
    pods = []
    for item in text.split(","):
        namespace, slash, pod = item.strip().partition("/")
        if not slash or not namespace or not pod or "/" in pod:
            raise ValueError(f"--attach: {item!r} is not NAMESPACE/POD")
        pods.append(PodRef(namespace=namespace, pod=pod))
    return pods
