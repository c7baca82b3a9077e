"""METRIC_NAMES says exactly what the telemetry area serves."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meltguard.telemetry.metrics import EXPORTER_METRIC_NAMES, METRIC_NAMES, SOURCE_METRICS
from meltguard.telemetry.sources import EndpointError, count

from .helpers import get


def served_family_names(text: str) -> set[str]:
    """Family names as they appear on the page (counters with their _total)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def test_operator_side_counters_are_served_by_the_default_registry() -> None:
    count("exporter", [EndpointError("10.0.0.1:9400", "timeout", "slow")], {"duplicate": 2})
    served = served_family_names(generate_latest(REGISTRY).decode())
    source_names = METRIC_NAMES - EXPORTER_METRIC_NAMES
    assert len(source_names) == len(SOURCE_METRICS)
    assert source_names <= served
    value = REGISTRY.get_sample_value(
        "meltguard_telemetry_rejected_samples_total", {"source": "exporter", "reason": "duplicate"}
    )
    assert value is not None and value >= 2


def test_exporter_serves_exactly_its_names(simulated_exporter) -> None:  # type: ignore[no-untyped-def]
    status, text = get(f"{simulated_exporter.url}/metrics")
    assert status == 200
    assert served_family_names(text) == EXPORTER_METRIC_NAMES
    assert EXPORTER_METRIC_NAMES <= METRIC_NAMES
