"""The whole control loop on a real kube-apiserver, as the chart's operator ServiceAccount
(a TokenRequest token) with only the RBAC the chart installed for all namespaces: heat ->
``/scale`` patched, quotas tightened, status and Events; cool -> relaxed; exporter gone ->
hold with ``TelemetryAvailable=False``. The audit log then shows no 403 and every rule used."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import ConfigMap, Event

from meltguard.k8s.client import Policy
from meltguard.k8s.rbac import API_CALLS
from tests.k8s.harness import policy

from .cluster import (
    Cluster,
    api_verb,
    audited,
    deployment_replicas,
    eventually,
    gpu_deployment,
    operator_process,
    refusals_logged,
    refused,
    remove_policies,
    service_account_user,
    start_gpu_fleet,
)
from .conftest import RELEASE_NAMESPACE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NS = "loop"
OPERATOR_SA = "meltguard-operator"


def status(cluster: Cluster, name: str = "imagegen") -> dict[str, Any]:
    return dict(cluster.get(Policy, name, NS).get("status") or {})


def condition(cluster: Cluster, kind: str) -> dict[str, Any]:
    return next((c for c in status(cluster).get("conditions") or [] if c["type"] == kind), {})


def free_limit(cluster: Cluster) -> int | None:
    data = cluster.get(ConfigMap, "imagegen-quotas", NS).get("data") or {}
    tiers = json.loads(data["quotas.json"])["tiers"]
    return next(tier.get("limit") for tier in tiers if tier["name"] == "free")


def event_reasons(cluster: Cluster) -> set[str]:
    return {event.reason for event in cluster.admin.list(Event, namespace=NS)
            if event.involvedObject.name == "imagegen"}


def statefulset_policy(port: int) -> dict[str, Any]:
    body = policy(NS, "sts", "sts-worker", port, minReplicas=2)
    body["spec"]["scaleTargetRef"]["kind"] = "StatefulSet"
    return body


def test_the_whole_loop_as_the_charts_service_account(cluster: Cluster, tmp_path: Path) -> None:
    exporter = start_gpu_fleet(cluster, NS, "worker", 2)
    cluster.create(gpu_deployment(NS, "sts-worker", 1, kind="StatefulSet"))
    kubeconfig = cluster.service_account_kubeconfig(RELEASE_NAMESPACE, OPERATOR_SA)
    user = service_account_user(RELEASE_NAMESPACE, OPERATOR_SA)
    audit_start = len(cluster.plane.audit_events())
    log = tmp_path / "operator.log"
    try:
        with operator_process(kubeconfig, log, "--all-namespaces", "--peering=meltguard",
                              "--priority=100"):
            cluster.create(policy(NS, "imagegen", "worker", exporter.port, maxReplicas=4,
                                  quotas={"tiers": [{"name": "free", "limit": 8,
                                                     "window": "24h", "floor": 1},
                                                    {"name": "pro", "unlimited": True}],
                                          "tighten": {"factor": 0.5, "intervalSeconds": 1,
                                                      "graceSeconds": 0},
                                          "relax": {"stepPercent": 100,
                                                    "intervalSeconds": 1}}))
            cluster.create(statefulset_policy(exporter.port))
            eventually(lambda: status(cluster).get("phase") == "Cool", timeout=60,
                       what="a first Cool tick")
            assert free_limit(cluster) == 8

            heated = time.monotonic()
            asyncio.run(exporter.heat())
            eventually(lambda: deployment_replicas(cluster, NS, "worker") > 2, timeout=30,
                       what="/scale patched after the heat drill", every=0.05)
            print(f"heat drill -> /scale patched: {time.monotonic() - heated:.2f} s")

            asyncio.run(exporter.heat(throttled=True))
            eventually(lambda: status(cluster).get("phase") == "Melting", timeout=30,
                       what="Melting")
            eventually(lambda: free_limit(cluster) == 1, timeout=30,
                       what="the free tier tightened to its floor")
            # status and Events follow the ConfigMap in the same tick
            eventually(lambda: condition(cluster, "QuotasTightened").get("status") == "True",
                       what="QuotasTightened=True")
            eventually(lambda: {"ScaledUp", "MeltingStarted", "QuotaTightened"}
                       <= event_reasons(cluster), what="the Events of the heat")

            asyncio.run(exporter.cool())
            eventually(lambda: free_limit(cluster) == 8, timeout=40, what="quotas relaxed")
            eventually(lambda: condition(cluster, "QuotasTightened").get("status") == "False",
                       what="QuotasTightened=False")
            eventually(lambda: {"MeltingEnded", "QuotaRelaxed"} <= event_reasons(cluster),
                       what="the Events of the cooling")
            eventually(lambda: cluster.get(StatefulSet, "sts-worker", NS)["spec"]["replicas"]
                       == 2, what="the StatefulSet scaled to minReplicas")

            replicas = deployment_replicas(cluster, NS, "worker")
            exporter.stop()
            telemetry = eventually(
                lambda: condition(cluster, "TelemetryAvailable").get("status") == "False"
                and condition(cluster, "TelemetryAvailable"), timeout=30,
                what="TelemetryAvailable=False once the exporter is gone")
            print(f"exporter killed: TelemetryAvailable=False ({telemetry['reason']}), "
                  f"replicas held at {replicas}")
            time.sleep(3)
            assert deployment_replicas(cluster, NS, "worker") == replicas
    finally:
        exporter.stop()
        remove_policies(cluster, NS)
    text = log.read_text()
    assert refusals_logged(text) == [], text[-3000:]

    events = audited(cluster, user, audit_start)
    assert refused(events) == []
    used = {api_verb(event) for event in events}
    granted = {(call.group, call.resource, verb) for call in API_CALLS
               if call.scope in ("watched", "clusterPeering") for verb in call.verbs}
    print(f"{len(events)} audited requests as {user}; permissions used: {len(used)}")
    assert used == granted, f"unused: {granted - used}; not granted: {used - granted}"
