"""The telemetry source a policy's ``spec.telemetry`` asks for."""

from __future__ import annotations

from meltguard.api.models import TelemetrySpec
from meltguard.ingest.http_client import Scraper
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.prometheus import PrometheusSource
from meltguard.ingest.schema import DCGM_SCHEMA, EXPORTER_SCHEMA
from meltguard.ingest.scrape import ScrapeSource
from meltguard.ingest.source import ListEndpoints, TelemetrySource


def create_source(
    telemetry: TelemetrySpec,
    list_endpoints: ListEndpoints,
    *,
    metrics: IngestMetrics,
    timeout: float = 2.0,
) -> TelemetrySource:
    """The source ``telemetry`` asks for, counting its trouble in ``metrics``; ``timeout``
    bounds each HTTP request."""
    if telemetry.source == "prometheus":
        if telemetry.prometheus is None:  # the model's validation already refuses this
            raise ValueError("telemetry.prometheus.url is required when source is prometheus")
        return PrometheusSource(telemetry.prometheus.url, metrics=metrics, timeout=timeout)
    schema, endpoints = (
        (DCGM_SCHEMA, telemetry.dcgm)
        if telemetry.source == "dcgm"
        else (EXPORTER_SCHEMA, telemetry.exporter)
    )
    return ScrapeSource(
        schema,
        namespace=endpoints.namespace,
        match_labels=endpoints.selector.match_labels,
        port=endpoints.port,
        list_endpoints=list_endpoints,
        metrics=metrics,
        scraper=Scraper(timeout=timeout),
    )
