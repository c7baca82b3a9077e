"""With the real scheduler: one node of 2 GPUs, a policy that wants 3 replicas. The third pod
stays Pending (``Insufficient nvidia.com/gpu``), the policy reports it and, melting, sheds;
the Pending pod is given back after the grace period and, cool, the target scales down."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.core_v1 import ConfigMap

from meltguard.k8s.client import Policy
from tests.k8s.harness import policy

from .cluster import (
    Cluster,
    deployment_replicas,
    eventually,
    operator_process,
    remove_policies,
    start_gpu_fleet,
    stop_gpu_fleet,
)
from .conftest import RELEASE_NAMESPACE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NS = "scheduling"
DEADLOCK_NS = "pending-deadlock"


def status(cluster: Cluster, namespace: str = NS) -> dict[str, Any]:
    return dict(cluster.get(Policy, "imagegen", namespace).get("status") or {})


def condition(cluster: Cluster, kind: str, namespace: str = NS) -> dict[str, Any]:
    return next((c for c in status(cluster, namespace).get("conditions") or []
                 if c["type"] == kind), {})


def unschedulable(cluster: Cluster, namespace: str = NS) -> list[str]:
    """Messages of the worker pods the scheduler could not place."""
    return [c.get("message", "") for pod in cluster.pods(namespace, {"app": "worker"})
            for c in (pod.get("status") or {}).get("conditions") or []
            if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"]


def free_limit(cluster: Cluster) -> int:
    data = cluster.get(ConfigMap, "imagegen-quotas", NS)["data"]
    return int(next(tier["limit"] for tier in json.loads(data["quotas.json"])["tiers"]
                    if tier["name"] == "free"))


def test_pods_pending_for_gpus_limit_scaling_and_tighten_quotas(cluster: Cluster,
                                                                tmp_path: Path) -> None:
    exporter = start_gpu_fleet(cluster, NS, "worker", 2, pool="small")
    kubeconfig = cluster.service_account_kubeconfig(RELEASE_NAMESPACE, "meltguard-operator")
    wants_three = policy(NS, "imagegen", "worker", exporter.port, minReplicas=3, maxReplicas=4)
    wants_three["spec"]["quotas"]["tighten"]["graceSeconds"] = 3600  # only pending GPUs count
    try:
        with operator_process(kubeconfig, tmp_path / "operator.log", f"--namespace={NS}"):
            cluster.create(wants_three)
            messages = eventually(lambda: unschedulable(cluster), timeout=60,
                                  what="the third pod Unschedulable")
            print(f"scheduler: {messages[0]}")
            assert "Insufficient nvidia.com/gpu" in messages[0]
            eventually(lambda: status(cluster).get("pendingReplicas") == 1, timeout=30,
                       what="status.pendingReplicas 1")
            limited = eventually(lambda: condition(cluster, "ScalingLimited").get("status")
                                 == "True" and condition(cluster, "ScalingLimited"),
                                 what="ScalingLimited=True")
            print(f"ScalingLimited=True ({limited['reason']}): {limited['message']}")
            before = free_limit(cluster)
            asyncio.run(exporter.heat(throttled=True))
            eventually(lambda: free_limit(cluster) < before, timeout=30,
                       what="quotas tightened while pods wait for GPUs")
            print(f"free tier {before} -> {free_limit(cluster)} while 1 pod waits for a GPU")
    finally:
        stop_gpu_fleet(cluster, NS, "worker", exporter)
        remove_policies(cluster, NS)


def test_a_pod_pending_for_a_gpu_is_given_back_and_the_target_scales_down_once_cool(
        cluster: Cluster, tmp_path: Path) -> None:
    """The pending deadlock: melting wants 3 replicas of the node's 2 GPUs; the third pod once
    held every scale-down for good."""
    exporter = start_gpu_fleet(cluster, DEADLOCK_NS, "worker", 2, pool="small")
    kubeconfig = cluster.service_account_kubeconfig(RELEASE_NAMESPACE, "meltguard-operator")
    wants_three = policy(DEADLOCK_NS, "imagegen", "worker", exporter.port, minReplicas=1,
                         maxReplicas=3)
    wants_three["spec"]["scaling"]["pendingGraceSeconds"] = 5
    try:
        with operator_process(kubeconfig, tmp_path / "operator.log",
                              f"--namespace={DEADLOCK_NS}"):
            asyncio.run(exporter.heat(throttled=True))
            cluster.create(wants_three)
            eventually(lambda: unschedulable(cluster, DEADLOCK_NS), timeout=60,
                       what="the third pod Unschedulable")
            eventually(lambda: status(cluster, DEADLOCK_NS).get("pendingReplicas") == 1,
                       timeout=30, what="status.pendingReplicas 1")
            eventually(lambda: deployment_replicas(cluster, DEADLOCK_NS, "worker") == 2,
                       timeout=30, what="the Pending replica given back")
            learnt = status(cluster, DEADLOCK_NS)["controller"].get("placeableReplicas")
            print(f"Pending pod given back while melting; placeableReplicas {learnt}")
            assert learnt == 2
            asyncio.run(exporter.cool())
            eventually(lambda: deployment_replicas(cluster, DEADLOCK_NS, "worker") == 1,
                       timeout=60, what="the scale-down after cooling")
            assert not unschedulable(cluster, DEADLOCK_NS)
    finally:
        stop_gpu_fleet(cluster, DEADLOCK_NS, "worker", exporter)
        remove_policies(cluster, DEADLOCK_NS)
