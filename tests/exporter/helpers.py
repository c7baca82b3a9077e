"""Reading the exporter's page back with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ..exporter_process import get


def scrape_samples(base_url: str) -> list[Sample]:
    """Every sample of the exporter's page, parsed by prometheus-client's own parser."""
    status, text = get(f"{base_url}/metrics")
    assert status == 200, text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def by_gpu(samples: list[Sample], name: str) -> dict[str, float]:
    """``gpu`` index label -> value, for one metric."""
    return {s.labels["gpu"]: s.value for s in samples if s.name == name}
