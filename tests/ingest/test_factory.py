"""``create_source`` builds the source a policy's ``spec.telemetry`` asks for."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from prometheus_client import CollectorRegistry

from meltguard.api.models import TelemetrySpec
from meltguard.ingest.factory import create_source
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.prometheus import PrometheusSource
from meltguard.ingest.scrape import ScrapeSource

EXPORTER = "meltguard-exporter"


async def no_endpoints(namespace: str, labels: Mapping[str, str], port: int) -> list[str]:
    return []


@pytest.mark.parametrize(
    ("telemetry", "expected"),
    [
        ({}, ("exporter", "meltguard-system", {"app.kubernetes.io/name": EXPORTER}, 9400)),
        ({"source": "dcgm"}, ("dcgm", "gpu-operator", {"app": "nvidia-dcgm-exporter"}, 9400)),
        (
            {"source": "dcgm", "dcgm": {"namespace": "n", "selector": {}, "port": 9500}},
            ("dcgm", "n", {}, 9500),
        ),
    ],
)
async def test_scrape_sources_follow_the_policy_spec(
    telemetry: dict[str, object], expected: tuple[object, ...]
) -> None:
    spec = TelemetrySpec.model_validate(telemetry)
    source = create_source(spec, no_endpoints, metrics=IngestMetrics(CollectorRegistry()))
    assert isinstance(source, ScrapeSource)
    assert (source.schema.source, source.namespace, source.match_labels, source.port) == expected
    await source.close()


async def test_prometheus_source_follows_the_policy_spec() -> None:
    spec = TelemetrySpec.model_validate(
        {"source": "prometheus", "prometheus": {"url": "http://prom:9090/"}}
    )
    source = create_source(spec, no_endpoints, metrics=IngestMetrics(CollectorRegistry()))
    assert isinstance(source, PrometheusSource)
    assert source.url == "http://prom:9090"
    await source.close()
