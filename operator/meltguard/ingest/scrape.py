"""The ``exporter`` and ``dcgm`` telemetry sources: every endpoint of an exporter, scraped.

Endpoints come from the injected :data:`~.source.ListEndpoints` coroutine (bounded by a
timeout), pages from the keep-alive :class:`~.http_client.Scraper`, tables from one
:class:`~.reader.PageReader` per endpoint (which stays fast by remembering the endpoint's
last page). An endpoint that fails marks lost the GPUs it served last time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from meltguard.collector import collector_paused
from meltguard.core.observation import GpuSample
from meltguard.ingest.http_client import ScrapeError, Scraper
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.reader import PageReader
from meltguard.ingest.schema import Schema
from meltguard.ingest.source import EndpointError, ListEndpoints, Pods, TelemetryReading
from meltguard.ingest.table import Collected, Served

log = logging.getLogger(__name__)
PodKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Scrape:
    """One scrape of every endpoint, shared by every reader: the GPUs by pod.

    ``lost_by_pod`` holds the GPUs that endpoints failing this time served last time (the
    core counts them stale); ``errors`` and ``rejected`` are the scrape's, whoever reads.
    """

    at: float
    by_pod: Mapping[PodKey, tuple[GpuSample, ...]]
    lost_by_pod: Mapping[PodKey, frozenset[str]]
    errors: tuple[EndpointError, ...]
    rejected: Mapping[str, int]

    def reading(self, pods: Pods) -> TelemetryReading:
        """What this scrape found for ``pods``."""
        samples = tuple(itertools.chain.from_iterable(
            map(self.by_pod.get, pods, itertools.repeat(()))))
        lost = frozenset(itertools.chain.from_iterable(
            map(self.lost_by_pod.get, pods, itertools.repeat(frozenset()))))
        if lost:
            lost -= {sample.uuid for sample in samples}
        return TelemetryReading(samples=samples, lost_gpus=lost, errors=self.errors,
                                rejected=self.rejected)


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
        return (await self.scrape(now)).reading(pods)

    async def scrape(self, now: float) -> Scrape:
        """Every endpoint's GPUs, for any number of readers (``now`` stamps the samples that
        carry no time of their own)."""
        try:
            async with asyncio.timeout(self.discovery_timeout):
                endpoints = await self._list_endpoints(self.namespace, self.match_labels, self.port)
        except TimeoutError:
            message = f"no endpoint list within {self.discovery_timeout:g}s"
            return self._discovery_failed(TimeoutError(message), now)
        except Exception as error:  # the operator's lookup failing must not stop the tick
            return self._discovery_failed(error, now)
        pages = await self._scraper.fetch_all(endpoints)
        # a synchronous burst with no await: nothing else runs while the collector is paused
        with collector_paused():
            return self._ingest_all(pages, now)

    def _ingest_all(self, pages: Mapping[str, bytes | ScrapeError], now: float) -> Scrape:
        self._readers = {e: self._readers.get(e) or PageReader(self.schema) for e in pages}
        self._served = {e: s for e, s in self._served.items() if e in pages}
        tables: list[Collected] = []
        lost: list[Served] = []
        errors: list[EndpointError] = []
        for endpoint, page in pages.items():
            outcome = self._ingest(endpoint, page)
            if isinstance(outcome, EndpointError):
                errors.append(outcome)
                if endpoint in self._served:
                    lost.append(self._served[endpoint])
            else:
                tables.append(outcome)
        table = Collected.merge(self.schema, tables)
        samples = table.samples(None, now)  # every GPU: each reader takes its pods' share
        return self._finish(now, samples, lost=lost, errors=errors, rejected=table.rejected)

    def _discovery_failed(self, error: Exception, now: float) -> Scrape:
        log.warning("listing %s endpoints failed: %s", self.schema.source, error)
        failure = EndpointError("discovery", "discovery", f"listing endpoints: {error}")
        return self._finish(now, [], lost=list(self._served.values()), errors=[failure],
                            rejected=Counter())

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

    def _finish(
        self,
        now: float,
        samples: list[GpuSample],
        *,
        lost: list[Served],
        errors: list[EndpointError],
        rejected: Counter[str],
    ) -> Scrape:
        by_pod: dict[PodKey, list[GpuSample]] = {}
        seen: set[str] = set()
        for sample in samples:
            if sample.uuid in seen:  # two endpoints claim one GPU: keep the first
                rejected["duplicate"] += 1
                continue
            seen.add(sample.uuid)
            if sample.namespace is not None and sample.pod is not None:
                by_pod.setdefault((sample.namespace, sample.pod), []).append(sample)
        lost_by_pod: dict[PodKey, set[str]] = {}
        for served in lost:
            for uuid, (namespace, pod) in served.pods().items():
                if uuid not in seen and namespace is not None and pod is not None:
                    lost_by_pod.setdefault((namespace, pod), set()).add(uuid)
        self._metrics.count(self.schema.source, errors, rejected)
        return Scrape(
            at=now,
            by_pod={pod: tuple(found) for pod, found in by_pod.items()},
            lost_by_pod={pod: frozenset(uuids) for pod, uuids in lost_by_pod.items()},
            errors=tuple(errors),
            rejected=dict(rejected),
        )

    async def close(self) -> None:
        await self._scraper.close()
