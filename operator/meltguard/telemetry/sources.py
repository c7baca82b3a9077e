"""The operator's telemetry sources: GPU samples for a set of pods, from wherever they live.

The interface (what the operator codes against)::

    class TelemetrySource(Protocol):
        async def read(self, pods: Collection[tuple[str, str]], now: float) -> TelemetryReading
        async def close(self) -> None

``pods`` are the target's ``(namespace, pod)`` pairs; ``now`` is the epoch time stamped on
samples that carry no time of their own. ``read`` never raises for telemetry trouble: an
endpoint that times out, refuses, or serves a malformed page adds an :class:`EndpointError`,
and the GPUs it served last time (for these pods) land in ``lost_gpus``, which the core
counts as stale. Implausible values are dropped per sample. Both are counted in
``meltguard_telemetry_endpoint_errors_total`` / ``meltguard_telemetry_rejected_samples_total``.
``TelemetryReading.observation(replicas, pending)`` gives the core's ``Observation``.

Build one source per policy with :func:`create_source` from ``spec.telemetry`` and keep it
across ticks (it remembers which GPUs each endpoint served, and reuses connections); close
it when the policy goes away or its telemetry spec changes. ``exporter`` and ``dcgm``
sources find their endpoints through an injected ``list_endpoints(namespace, match_labels,
port) -> ["host:port", ...]`` coroutine (the operator answers it from the Kubernetes API),
so this package needs no Kubernetes client.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from meltguard.collector import collector_paused
from meltguard.core.observation import GpuSample, Observation
from meltguard.telemetry.interpret import (
    DCGM_SCHEMA,
    EXPORTER_SCHEMA,
    Collected,
    PageReader,
    Schema,
    Served,
)
from meltguard.telemetry.metrics import ENDPOINT_ERRORS, REJECTED_SAMPLES
from meltguard.telemetry.scrape import ScrapeError, Scraper

if TYPE_CHECKING:
    from meltguard.api.models import TelemetrySpec

log = logging.getLogger(__name__)
_UUID = operator.attrgetter("uuid")

ListEndpoints = Callable[[str, Mapping[str, str], int], Awaitable[list[str]]]
Pods = Collection[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class EndpointError:
    """One endpoint (or the discovery / query step) that gave nothing usable this read."""

    endpoint: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class TelemetryReading:
    """What one read found for the wanted pods."""

    samples: tuple[GpuSample, ...]
    lost_gpus: frozenset[str] = frozenset()
    errors: tuple[EndpointError, ...] = ()
    rejected: Mapping[str, int] = field(default_factory=dict)

    def observation(self, current_replicas: int, pending_replicas: int = 0) -> Observation:
        """The core's observation for this reading and the target's replica counts."""
        return Observation(
            samples=self.samples,
            current_replicas=current_replicas,
            pending_replicas=pending_replicas,
            lost_gpus=self.lost_gpus,
            telemetry_errors=len(self.errors),
        )


class TelemetrySource(Protocol):
    """Reads the GPU samples of a set of pods; see the module docstring."""

    async def read(self, pods: Pods, now: float) -> TelemetryReading: ...

    async def close(self) -> None: ...


def count(source: str, errors: Collection[EndpointError], rejected: Mapping[str, int]) -> None:
    """Record a read's trouble in the source metrics."""
    for error in errors:
        ENDPOINT_ERRORS.labels(source, error.reason).inc()
    for reason, number in rejected.items():
        REJECTED_SAMPLES.labels(source, reason).inc(number)


class ScrapeSource:
    """Scrapes every endpoint of an exporter (meltguard's or dcgm-exporter) concurrently."""

    def __init__(
        self,
        schema: Schema,
        namespace: str,
        match_labels: Mapping[str, str],
        port: int,
        list_endpoints: ListEndpoints,
        scraper: Scraper | None = None,
        discovery_timeout: float = 10.0,
    ) -> None:
        self.schema = schema
        self.discovery_timeout = discovery_timeout
        self.namespace = namespace
        self.match_labels = dict(match_labels)
        self.port = port
        self._list_endpoints = list_endpoints
        self._scraper = scraper or Scraper()
        self._readers: dict[str, PageReader] = {}
        #: endpoint -> the GPUs (and their pods) on its last good page
        self._served: dict[str, Served] = {}

    async def read(self, pods: Pods, now: float) -> TelemetryReading:
        pods = frozenset(pods)
        try:
            async with asyncio.timeout(self.discovery_timeout):
                endpoints = await self._list_endpoints(self.namespace, self.match_labels, self.port)
        except TimeoutError:
            message = f"no endpoint list within {self.discovery_timeout:g}s"
            return self._discovery_failed(TimeoutError(message), pods)
        except Exception as error:  # the operator's lookup failing must not stop the tick
            return self._discovery_failed(error, pods)
        pages = await self._scraper.fetch_all(endpoints)
        # a synchronous burst with no await: nothing else runs while the collector is paused
        with collector_paused():
            return self._ingest_all(pages, pods, now)

    def _ingest_all(
        self, pages: Mapping[str, bytes | ScrapeError], pods: frozenset[tuple[str, str]], now: float
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
        return self._finish(samples, lost, errors, rejected)

    def _discovery_failed(
        self, error: Exception, pods: frozenset[tuple[str, str]]
    ) -> TelemetryReading:
        log.warning("listing %s endpoints failed: %s", self.schema.source, error)
        lost = set().union(*(self._lost(endpoint, pods) for endpoint in self._served))
        failure = EndpointError("discovery", "discovery", f"listing endpoints: {error}")
        return self._finish([], lost, [failure], Counter())

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

    def _lost(self, endpoint: str, pods: frozenset[tuple[str, str]]) -> set[str]:
        served = self._served.get(endpoint)
        if served is None:
            return set()
        return {uuid for uuid, pod in served.pods().items() if pod in pods}

    def _finish(
        self,
        samples: list[GpuSample],
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
        count(self.schema.source, errors, rejected)
        return TelemetryReading(
            samples=tuple(samples),
            lost_gpus=frozenset(lost - uuids),
            errors=tuple(errors),
            rejected=dict(rejected),
        )

    async def close(self) -> None:
        await self._scraper.close()


def create_source(
    telemetry: TelemetrySpec, list_endpoints: ListEndpoints, timeout: float = 2.0
) -> TelemetrySource:
    """The source ``spec.telemetry`` asks for; ``timeout`` bounds each HTTP request."""
    if telemetry.source == "prometheus":
        from meltguard.telemetry.prometheus import PrometheusSource

        if telemetry.prometheus is None:  # the model's validation already refuses this
            raise ValueError("telemetry.prometheus.url is required when source is prometheus")
        return PrometheusSource(telemetry.prometheus.url, timeout=timeout)
    schema, endpoints = (
        (DCGM_SCHEMA, telemetry.dcgm)
        if telemetry.source == "dcgm"
        else (EXPORTER_SCHEMA, telemetry.exporter)
    )
    return ScrapeSource(
        schema,
        endpoints.namespace,
        endpoints.selector.match_labels,
        endpoints.port,
        list_endpoints,
        Scraper(timeout=timeout),
    )
