"""The quota server's gRPC port (Envoy's rate limit API) in the rendered chart."""

from __future__ import annotations

from typing import Any

import pytest

from .helm import Helm, HelmFailed, one
from .test_render import quota_container


def port_named(ports: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [port for port in ports if port["name"] == name]
    return found


def test_grpc_port_is_served_and_exposed_by_default(helm: Helm) -> None:
    docs = helm.template()
    container = quota_container(docs)
    assert "--grpc-port=8081" in container["args"]
    assert port_named(container["ports"], "grpc")["containerPort"] == 8081
    service = one(docs, "Service", "meltguard-quota-server")
    grpc = port_named(service["spec"]["ports"], "grpc")
    # appProtocol grpc: meshes (Istio) then speak HTTP/2 to it, as the rate limit filter needs
    assert (grpc["port"], grpc["targetPort"], grpc["appProtocol"]) == (8081, "grpc", "grpc")


def test_grpc_ports_follow_the_values(helm: Helm) -> None:
    docs = helm.template(
        settings=["quotaServer.grpcPort=9091", "quotaServer.service.grpcPort=50051"]
    )
    container = quota_container(docs)
    assert "--grpc-port=9091" in container["args"]
    assert port_named(container["ports"], "grpc")["containerPort"] == 9091
    service = one(docs, "Service", "meltguard-quota-server")
    assert port_named(service["spec"]["ports"], "grpc")["port"] == 50051


def test_network_policy_admits_only_quota_clients_to_the_grpc_port(helm: Helm) -> None:
    """... and to the HTTP API, and only Prometheus and the operator (which reads the demand
    page there) to the metrics port."""
    clients = {"namespaceSelector": {"matchLabels": {"gateway": "edge"}}}
    prometheus = {"namespaceSelector": {"matchLabels": {"monitoring": "prom"}}}
    docs = helm.template(
        settings=[
            "networkPolicy.enabled=true",
            "networkPolicy.quotaClientsFrom[0].namespaceSelector.matchLabels.gateway=edge",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.monitoring=prom",
        ]
    )
    policy = one(docs, "NetworkPolicy", "meltguard-quota-server")
    rules = {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}
    operator = {"podSelector": {"matchLabels": {
        "app.kubernetes.io/component": "operator", "app.kubernetes.io/instance": "meltguard",
        "app.kubernetes.io/name": "meltguard-operator"}}}
    assert rules == {8080: [clients], 8081: [clients], 9090: [prometheus, operator]}


def test_a_grpc_port_out_of_range_is_refused(helm: Helm) -> None:
    with pytest.raises(HelmFailed, match="grpcPort"):
        helm.template(settings=["quotaServer.grpcPort=70000"])
