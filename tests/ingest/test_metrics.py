"""The ingest's counters live in the registry they are given, under the names METRIC_NAMES says."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meltguard.ingest.metrics import METRIC_NAMES, IngestMetrics
from meltguard.ingest.source import EndpointError


def served_family_names(registry: CollectorRegistry) -> set[str]:
    """Family names as they appear on the page (counters with their _total), without the
    ``_created`` gauges prometheus-client adds next to counters."""
    text = generate_latest(registry).decode()
    return {
        family.name + "_total" if family.type == "counter" else family.name
        for family in text_string_to_metric_families(text)
        if not family.name.endswith("_created")
    }


def test_counts_land_in_the_given_registry_only() -> None:
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    slow = EndpointError("10.0.0.1:9400", "timeout", "slow")
    metrics.count("exporter", [slow, slow], {"duplicate": 2, "out_of_range": 1})
    metrics.count("dcgm", [], {"duplicate": 1})

    def value(name: str, source: str, reason: str) -> float | None:
        return registry.get_sample_value(name, {"source": source, "reason": reason})

    assert value("meltguard_telemetry_endpoint_errors_total", "exporter", "timeout") == 2
    assert value("meltguard_telemetry_rejected_samples_total", "exporter", "duplicate") == 2
    assert value("meltguard_telemetry_rejected_samples_total", "exporter", "out_of_range") == 1
    assert value("meltguard_telemetry_rejected_samples_total", "dcgm", "duplicate") == 1
    assert served_family_names(registry) == METRIC_NAMES
    assert not METRIC_NAMES & served_family_names(REGISTRY)


def test_two_instances_count_apart() -> None:
    first, second = IngestMetrics(CollectorRegistry()), IngestMetrics(CollectorRegistry())
    first.count("exporter", [EndpointError("a:1", "refused", "no")], {})
    labels = {"source": "exporter", "reason": "refused"}
    name = "meltguard_telemetry_endpoint_errors_total"
    assert first.registry.get_sample_value(name, labels) == 1
    assert second.registry.get_sample_value(name, labels) is None
