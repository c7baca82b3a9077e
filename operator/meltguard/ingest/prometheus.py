"""The ``prometheus`` telemetry source: the exporter's series read back from a Prometheus server.

Two instant queries per read, run concurrently against ``/api/v1/query``: the GPU series
(restricted to the wanted pods' namespaces) and ``timestamp(meltguard_gpu_up)`` for when
each GPU was last scraped, so a GPU whose exporter stopped being scraped ages into
staleness instead of looking fresh. Prometheus must keep the exporter's own ``namespace`` /
``pod`` labels (``honor_labels: true`` on the scrape job, as the chart configures it).
A failed query marks the GPUs of the last good read lost and is counted; it never raises.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import aiohttp

from meltguard.core.observation import GpuSample
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.schema import EXPORTER_SCHEMA
from meltguard.ingest.source import EndpointError, Pods, TelemetryReading
from meltguard.ingest.table import collect_series
from meltguard.wire import GPU_UP, NAMESPACE_LABEL, UUID_LABEL

MAX_ANSWER_BYTES = 64 * 1024 * 1024

Vector = list[tuple[Mapping[str, str], float, float]]  # labels, value, sample time


class QueryError(Exception):
    """A query Prometheus did not answer usefully; ``reason`` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def series_selector(metric_names: str, pods: Pods) -> str:
    """PromQL selector: series named by the ``metric_names`` regex, in the pods' namespaces."""
    namespaces = "|".join(sorted({re.escape(namespace) for namespace, _ in pods}))
    return f'{{__name__=~"{metric_names}",{NAMESPACE_LABEL}=~"{namespaces}"}}'


def parse_vector(answer: Any) -> Vector:
    """The (labels, value, time) triples of an instant-vector answer; QueryError otherwise."""
    if not isinstance(answer, dict) or answer.get("status") != "success":
        detail = answer.get("error", "no error text") if isinstance(answer, dict) else answer
        raise QueryError("query_failed", f"Prometheus answered an error: {str(detail)[:200]}")
    data = answer.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise QueryError("malformed", "Prometheus answer is not an instant vector")
    vector = []
    for item in data.get("result", []):
        try:
            labels, (stamp, text) = item["metric"], item["value"]
            vector.append((labels, float(text), float(stamp)))
        except (KeyError, TypeError, ValueError):
            raise QueryError("malformed", f"malformed vector element {str(item)[:120]}") from None
    return vector


async def instant_query(
    session: aiohttp.ClientSession,
    url: str,
    query: str,
    *,
    timeout: float,
    at: float | None = None,
) -> Vector:
    """The instant vector ``query`` gives at the Prometheus server ``url`` (evaluated at
    epoch second ``at``, or now); QueryError when it cannot be had (``timeout`` is the
    session's, named in the message)."""
    params = {"query": query} if at is None else {"query": query, "time": f"{at:.3f}"}
    try:
        async with session.get(f"{url}/api/v1/query", params=params) as response:
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise QueryError("too_large", f"{url}: answer over {MAX_ANSWER_BYTES} bytes")
        answer = json.loads(body)
    except TimeoutError:
        raise QueryError("timeout", f"{url}: no answer within {timeout:g}s") from None
    except aiohttp.ClientError as error:
        raise QueryError("connection", f"{url}: {error}") from None
    except ValueError:
        reason = "malformed" if response.status == 200 else "http_status"
        message = f"{url}: HTTP {response.status}, answer is not Prometheus JSON"
        raise QueryError(reason, message) from None
    return parse_vector(answer)


class PrometheusSource:
    """Reads GPU samples through a Prometheus server's HTTP query API."""

    def __init__(self, url: str, *, metrics: IngestMetrics, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._last: dict[str, tuple[str | None, str | None]] = {}

    async def read(self, pods: Pods, now: float) -> TelemetryReading:
        pods = frozenset(pods)
        if not pods:
            return TelemetryReading(samples=())
        names = "|".join(sorted(EXPORTER_SCHEMA.metric_names))
        try:
            series, stamps = await asyncio.gather(
                self._query(series_selector(names, pods)),
                self._query(f"timestamp({series_selector(GPU_UP, pods)})"),
            )
        except QueryError as error:
            lost = frozenset(uuid for uuid, pod in self._last.items() if pod in pods)
            failure = EndpointError(self.url, error.reason, str(error))
            self._metrics.count("prometheus", [failure], {})
            return TelemetryReading(samples=(), lost_gpus=lost, errors=(failure,))
        collected = collect_series(
            EXPORTER_SCHEMA, ((labels["__name__"], labels, value) for labels, value, _ in series)
        )
        self._last = collected.served().pods()
        scraped_at = {labels.get(UUID_LABEL): value for labels, value, _ in stamps}
        samples = [
            _stamped(sample, scraped_at.get(sample.uuid), now)
            for sample in collected.samples(pods, now)
        ]
        self._metrics.count("prometheus", [], collected.rejected)
        return TelemetryReading(samples=tuple(samples), rejected=dict(collected.rejected))

    async def _query(self, query: str) -> Vector:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return await instant_query(self._session, self.url, query, timeout=self.timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _stamped(sample: GpuSample, scraped_at: float | None, now: float) -> GpuSample:
    """The sample with its GPU's last scrape time, where Prometheus knows it."""
    if scraped_at is None or not math.isfinite(scraped_at):
        return sample
    return sample._replace(sampled_at=min(scraped_at, now))
