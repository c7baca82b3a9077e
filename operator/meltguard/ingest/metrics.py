"""The ingest's own metrics: failed endpoint reads and dropped samples, by source and reason.

:class:`IngestMetrics` registers its counters in the registry it is given (the operator's,
which ``meltguard operator`` serves; a fresh one per test or bench). :data:`METRIC_NAMES` is
read off a fresh instance, so it always matches what a scrape shows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from prometheus_client import CollectorRegistry, Counter

from meltguard.ingest.source import EndpointError

SOURCE_LABELS = ("source", "reason")


class IngestMetrics:
    """The counters every telemetry source records its trouble in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.endpoint_errors = Counter(
            "meltguard_telemetry_endpoint_errors",
            "Telemetry endpoint reads that failed (their GPUs count as stale), by source and "
            "reason.",
            SOURCE_LABELS,
            registry=registry,
        )
        self.rejected_samples = Counter(
            "meltguard_telemetry_rejected_samples",
            "Series or GPU readings dropped as malformed or implausible, by source and reason.",
            SOURCE_LABELS,
            registry=registry,
        )

    def count(
        self, source: str, errors: Collection[EndpointError], rejected: Mapping[str, int]
    ) -> None:
        """Record one read's trouble."""
        for error in errors:
            self.endpoint_errors.labels(source, error.reason).inc()
        for reason, number in rejected.items():
            self.rejected_samples.labels(source, reason).inc(number)


def _served_names(registry: CollectorRegistry) -> frozenset[str]:
    """Family names as a scrape shows them (a counter's with its ``_total``)."""
    return frozenset(
        family.name + "_total" if family.type == "counter" else family.name
        for family in registry.collect()
    )


METRIC_NAMES: frozenset[str] = _served_names(IngestMetrics(CollectorRegistry()).registry)
