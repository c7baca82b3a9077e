"""The ``exporter`` and ``dcgm`` telemetry sources: every endpoint of an exporter, scraped.

Endpoints come from the injected :data:`~.source.ListEndpoints` coroutine (bounded by a
timeout), pages from the keep-alive :class:`~.http_client.Scraper`, tables from one
:class:`~.reader.PageReader` per endpoint (which stays fast by remembering the endpoint's
last page). An endpoint that fails marks lost the GPUs it served last time.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections import Counter
from collections.abc import Mapping

from meltguard.collector import collector_paused
from meltguard.core.observation import GpuSample
from meltguard.ingest.http_client import ScrapeError, Scraper
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.reader import PageReader
from meltguard.ingest.schema import Schema
from meltguard.ingest.source import EndpointError, ListEndpoints, Pods, TelemetryReading
from meltguard.ingest.table import Collected, Served

log = logging.getLogger(__name__)
_UUID = operator.attrgetter("uuid")

WantedPods = frozenset[tuple[str, str]]


class ScrapeSource:
    """Scrapes every endpoint of an exporter (meltguard's or dcgm-exporter) concurrently."""

    def __init__(
        self,
        schema: Schema,
        *,
        namespace: str,
        match_labels: Mapping[str, str],
        port: int,
        list_endpoints: ListEndpoints,
        metrics: IngestMetrics,
        scraper: Scraper | None = None,
        discovery_timeout: float = 10.0,
    ) -> None:
        self.schema = schema
        self.discovery_timeout = discovery_timeout
        self.namespace = namespace
        self.match_labels = dict(match_labels)
        self.port = port
        self._list_endpoints = list_endpoints
        self._metrics = metrics
        self._scraper = scraper or Scraper()
        self._readers: dict[str, PageReader] = {}
        #: endpoint -> the GPUs (and their pods) on its last good page
        self._served: dict[str, Served] = {}

    async def read(self, pods: Pods, now: float) -> TelemetryReading:
        wanted = frozenset(pods)
        try:
            async with asyncio.timeout(self.discovery_timeout):
                endpoints = await self._list_endpoints(self.namespace, self.match_labels, self.port)
        except TimeoutError:
            message = f"no endpoint list within {self.discovery_timeout:g}s"
            return self._discovery_failed(TimeoutError(message), wanted)
        except Exception as error:  # the operator's lookup failing must not stop the tick
            return self._discovery_failed(error, wanted)
        pages = await self._scraper.fetch_all(endpoints)
        # a synchronous burst with no await: nothing else runs while the collector is paused
        with collector_paused():
            return self._ingest_all(pages, wanted, now)

    def _ingest_all(
        self, pages: Mapping[str, bytes | ScrapeError], pods: WantedPods, now: float
    ) -> TelemetryReading:
        self._readers = {e: self._readers.get(e) or PageReader(self.schema) for e in pages}
        self._served = {e: s for e, s in self._served.items() if e in pages}
        tables: list[Collected] = []
        lost: set[str] = set()
        errors: list[EndpointError] = []
        rejected: Counter[str] = Counter()
        for endpoint, page in pages.items():
            outcome = self._ingest(endpoint, page)
            if isinstance(outcome, EndpointError):
                errors.append(outcome)
                lost |= self._lost(endpoint, pods)
            else:
                tables.append(outcome)
        table = Collected.merge(self.schema, tables)
        samples = table.samples(pods, now)
        rejected.update(table.rejected)
        return self._finish(samples, lost=lost, errors=errors, rejected=rejected)

    def _discovery_failed(self, error: Exception, pods: WantedPods) -> TelemetryReading:
        log.warning("listing %s endpoints failed: %s", self.schema.source, error)
        lost = set().union(*(self._lost(endpoint, pods) for endpoint in self._served))
        failure = EndpointError("discovery", "discovery", f"listing endpoints: {error}")
        return self._finish([], lost=lost, errors=[failure], rejected=Counter())

    def _ingest(self, endpoint: str, page: bytes | ScrapeError) -> Collected | EndpointError:
        """One endpoint's table, or why it has none (its lines then count as nothing)."""
        if isinstance(page, ScrapeError):
            return EndpointError(endpoint, page.reason, str(page))
        table = self._readers[endpoint].read(page)
        if table.malformed:
            message = f"{endpoint}: not a metrics page ({table.bad_lines} bad lines)"
            return EndpointError(endpoint, "malformed", message)
        self._served[endpoint] = table.served()
        return table

    def _lost(self, endpoint: str, pods: WantedPods) -> set[str]:
        served = self._served.get(endpoint)
        if served is None:
            return set()
        return {uuid for uuid, pod in served.pods().items() if pod in pods}

    def _finish(
        self,
        samples: list[GpuSample],
        *,
        lost: set[str],
        errors: list[EndpointError],
        rejected: Counter[str],
    ) -> TelemetryReading:
        uuids = set(map(_UUID, samples))
        if len(uuids) < len(samples):  # two endpoints claim one GPU: keep the first
            unique: dict[str, GpuSample] = {}
            for sample in samples:
                unique.setdefault(sample.uuid, sample)
            rejected["duplicate"] += len(samples) - len(unique)
            samples = list(unique.values())
        self._metrics.count(self.schema.source, errors, rejected)
        return TelemetryReading(
            samples=tuple(samples),
            lost_gpus=frozenset(lost - uuids),
            errors=tuple(errors),
            rejected=dict(rejected),
        )

    async def close(self) -> None:
        await self._scraper.close()
