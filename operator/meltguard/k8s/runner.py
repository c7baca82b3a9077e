"""Running the operator process: metrics server, kopf settings, peering, graceful shutdown."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import kopf
import prometheus_client

from meltguard.ingest.metrics import IngestMetrics
from meltguard.k8s.handlers import Runtime, build_registry, configure_settings
from meltguard.k8s.metrics import OperatorMetrics
from meltguard.k8s.telemetry import telemetry_sources


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    """What ``meltguard operator`` was asked to do."""

    namespaces: tuple[str, ...] = ()
    metrics_port: int = 8000
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    peering_name: str | None = None
    priority: int = 0
    verbose: bool = False


def serve(options: OperatorOptions) -> int:
    """Serve metrics and run kopf until it is told to stop (SIGTERM/SIGINT)."""
    logging.basicConfig(level=logging.DEBUG if options.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The default registry, which the metrics server serves; the telemetry sources count there too.
    metrics = OperatorMetrics(prometheus_client.REGISTRY)
    ingest_metrics = IngestMetrics(prometheus_client.REGISTRY)
    if options.metrics_port:
        prometheus_client.start_http_server(options.metrics_port)
    runtime = Runtime(telemetry=partial(telemetry_sources, metrics=ingest_metrics),
                      metrics=metrics)
    settings = kopf.OperatorSettings()
    configure_settings(settings, options.namespaces)
    # kopf maps these onto settings.peering: a named peering is mandatory (its KopfPeering, or
    # ClusterKopfPeering with --all-namespaces, must exist); the top priority replica is active.
    kopf.run(
        registry=build_registry(runtime),
        settings=settings,
        standalone=options.peering_name is None,
        peering_name=options.peering_name,
        priority=options.priority,
        namespaces=list(options.namespaces),
        clusterwide=not options.namespaces,
        liveness_endpoint=options.liveness_endpoint,
    )
    return 0
