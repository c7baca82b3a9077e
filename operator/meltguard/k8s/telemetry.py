"""The telemetry sources of every policy, shared: policies that name the same exporter (its
namespace, selector and port) read one source, scraped once per tick for all of them
(:class:`~meltguard.ingest.shared.SharedScrape`). A source is kept across ticks (connections,
which GPU each endpoint served), and closed when no policy reads it any more. A Prometheus
source is queried for one policy's pods, so it stays that policy's own."""

from __future__ import annotations

from collections.abc import Collection, Hashable

from meltguard.api.models import PolicySpec, TelemetrySpec
from meltguard.ingest.factory import create_source
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.scrape import ScrapeSource
from meltguard.ingest.shared import SharedScrape
from meltguard.ingest.source import ListEndpoints, TelemetryReading, TelemetrySource
from meltguard.k8s.world import NamespacedName


def source_key(policy: NamespacedName, telemetry: TelemetrySpec) -> Hashable:
    """What two policies must share to read the same source."""
    if telemetry.source == "prometheus":
        return ("prometheus", policy, telemetry.model_dump_json())
    endpoints = telemetry.dcgm if telemetry.source == "dcgm" else telemetry.exporter
    return (telemetry.source, endpoints.namespace,
            tuple(sorted(endpoints.selector.match_labels.items())), endpoints.port)


class TelemetrySources:
    """The sources of every policy this operator reconciles, shared where they can be."""

    def __init__(self, list_endpoints: ListEndpoints, metrics: IngestMetrics) -> None:
        self._list_endpoints = list_endpoints
        self._metrics = metrics
        self._keys: dict[NamespacedName, Hashable] = {}
        self._sources: dict[Hashable, TelemetrySource] = {}

    async def read(self, policy: NamespacedName, spec: PolicySpec, pods: Collection[NamespacedName],
                   now: float) -> TelemetryReading:
        """Read the GPUs of ``pods`` through the policy's source (never raises for telemetry)."""
        key = source_key(policy, spec.telemetry)
        if self._keys.get(policy) != key:
            await self.forget(policy)  # a new policy, or a new telemetry spec
            self._keys[policy] = key
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = self._create(spec.telemetry)
        return await source.read(pods, now)

    def _create(self, telemetry: TelemetrySpec) -> TelemetrySource:
        source = create_source(telemetry, self._list_endpoints, metrics=self._metrics)
        return SharedScrape(source) if isinstance(source, ScrapeSource) else source

    async def forget(self, policy: NamespacedName) -> None:
        """The policy reads no more (deleted, or a new telemetry spec): close its source
        if no other policy reads it."""
        key = self._keys.pop(policy, None)
        if key is not None and key not in self._keys.values():
            source = self._sources.pop(key, None)
            if source is not None:
                await source.close()

    async def close(self) -> None:
        """Close every source (operator shutdown)."""
        sources, self._sources, self._keys = list(self._sources.values()), {}, {}
        for source in sources:
            await source.close()


def telemetry_sources(list_endpoints: ListEndpoints, metrics: IngestMetrics) -> TelemetrySources:
    """Sources that find exporter endpoints through ``list_endpoints`` (the pod caches) and
    count their trouble in ``metrics``."""
    return TelemetrySources(list_endpoints, metrics)
