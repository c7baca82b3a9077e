"""One telemetry source per policy, kept across ticks (connections, which GPU each endpoint
served), rebuilt when the policy's ``spec.telemetry`` changes and closed when it goes away."""

from __future__ import annotations

from collections.abc import Collection

from meltguard.api.models import PolicySpec, TelemetrySpec
from meltguard.ingest.factory import create_source
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.source import ListEndpoints, TelemetryReading, TelemetrySource
from meltguard.k8s.client import Kube
from meltguard.k8s.world import NamespacedName, endpoint_lister


class TelemetrySources:
    """The sources of every policy this operator reconciles, by ``(namespace, name)``."""

    def __init__(self, list_endpoints: ListEndpoints, metrics: IngestMetrics) -> None:
        self._list_endpoints = list_endpoints
        self._metrics = metrics
        self._sources: dict[NamespacedName, tuple[TelemetrySpec, TelemetrySource]] = {}

    async def read(self, policy: NamespacedName, spec: PolicySpec, pods: Collection[NamespacedName],
                   now: float) -> TelemetryReading:
        """Read the GPUs of ``pods`` through the policy's source (never raises for telemetry)."""
        known = self._sources.get(policy)
        if known is None or known[0] != spec.telemetry:
            await self.forget(policy)
            source = create_source(spec.telemetry, self._list_endpoints, metrics=self._metrics)
            known = (spec.telemetry, source)
            self._sources[policy] = known
        return await known[1].read(pods, now)

    async def forget(self, policy: NamespacedName) -> None:
        """Close the policy's source (deleted policy, or a new telemetry spec)."""
        known = self._sources.pop(policy, None)
        if known is not None:
            await known[1].close()

    async def close(self) -> None:
        """Close every source (operator shutdown)."""
        for policy in list(self._sources):
            await self.forget(policy)


def telemetry_sources(client: Kube, metrics: IngestMetrics) -> TelemetrySources:
    """Sources that find exporter endpoints through the pods API and count their trouble in
    ``metrics``."""
    return TelemetrySources(endpoint_lister(client), metrics)
