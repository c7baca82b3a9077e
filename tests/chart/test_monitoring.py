"""ServiceMonitor / PodMonitor / PrometheusRule: rendered when the cluster serves their API
(.Capabilities) or a value forces them, and pointed at the right Services, pods and ports."""

from __future__ import annotations

from typing import Any

import pytest

from .helm import MONITORING_APIS, NAMESPACE, Helm, find, one

MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")


def monitoring_kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs if d["kind"] in MONITORING_KINDS}


def test_auto_renders_nothing_on_a_cluster_without_the_prometheus_operator(helm: Helm) -> None:
    assert monitoring_kinds(helm.template()) == set()


def test_auto_renders_everything_where_the_apis_are_served(helm: Helm) -> None:
    assert monitoring_kinds(helm.template(api_versions=MONITORING_APIS)) == set(MONITORING_KINDS)


def test_auto_follows_each_api_separately(helm: Helm) -> None:
    docs = helm.template(api_versions=["monitoring.coreos.com/v1/PrometheusRule"])
    assert monitoring_kinds(docs) == {"PrometheusRule"}


@pytest.mark.parametrize(
    ("settings", "apis", "expected"),
    [
        (["monitoring.serviceMonitor.enabled=true"], (), {"ServiceMonitor"}),
        (
            [
                "monitoring.serviceMonitor.enabled=false",
                "monitoring.podMonitor.enabled=false",
                "monitoring.prometheusRule.enabled=false",
            ],
            MONITORING_APIS,
            set(),
        ),
    ],
    ids=["forced-on", "forced-off"],
)
def test_values_override_the_capability_check(
    helm: Helm, settings: list[str], apis: tuple[str, ...], expected: set[str]
) -> None:
    assert monitoring_kinds(helm.template(settings=settings, api_versions=apis)) == expected


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted: dict[str, str] = selector["matchLabels"]
    return wanted.items() <= labels.items()


def test_service_monitors_select_the_metrics_services_and_their_ports(helm: Helm) -> None:
    docs = helm.template(api_versions=MONITORING_APIS)
    monitors = find(docs, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {
        "meltguard-operator",
        "meltguard-quota-server",
    }
    for monitor in monitors:
        services = [
            s
            for s in find(docs, "Service")
            if selects(monitor["spec"]["selector"], s["metadata"]["labels"])
        ]
        assert len(services) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    honor = {m["metadata"]["name"]: m["spec"]["endpoints"][0]["honorLabels"] for m in monitors}
    assert honor == {"meltguard-operator": True, "meltguard-quota-server": False}, (
        "the operator's namespace label (the policy's) must survive the scrape"
    )


def test_pod_monitor_scrapes_the_exporter_pods_keeping_their_pod_labels(helm: Helm) -> None:
    docs = helm.template(api_versions=MONITORING_APIS)
    monitor = one(docs, "PodMonitor", "meltguard-exporter")
    pod = one(docs, "DaemonSet", "meltguard-exporter")["spec"]["template"]
    assert selects(monitor["spec"]["selector"], pod["metadata"]["labels"])
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert endpoint["honorLabels"] is True, "the GPU's namespace/pod labels must win"


def test_monitor_labels_for_the_prometheus_selector(helm: Helm) -> None:
    docs = helm.template(
        settings=["monitoring.serviceMonitor.labels.release=kps"], api_versions=MONITORING_APIS
    )
    for monitor in find(docs, "ServiceMonitor"):
        assert monitor["metadata"]["labels"]["release"] == "kps"
