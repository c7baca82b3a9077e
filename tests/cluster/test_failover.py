"""Peering on a real kube-apiserver: the active operator dies (SIGKILL) while GPUs melt and
quotas are being cut; the standby takes over from the state in the policy's status, and no
quota step is taken twice. The takeover time is printed (the chart README quotes it)."""

from __future__ import annotations

import asyncio
import json
import time
from itertools import pairwise
from pathlib import Path

import pytest
from lightkube.generic_resource import create_global_resource
from lightkube.resources.core_v1 import ConfigMap, Event

from tests.k8s.harness import policy

from .cluster import Cluster, eventually, operator_process, remove_policies, start_gpu_fleet
from .conftest import RELEASE_NAMESPACE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NS = "failover"
ClusterPeering = create_global_resource("kopf.dev", "v1", "ClusterKopfPeering",
                                        "clusterkopfpeerings")
QUOTAS = {"tiers": [{"name": "free", "limit": 4096, "window": "24h", "floor": 1},
                    {"name": "pro", "unlimited": True}],
          "tighten": {"factor": 0.5, "intervalSeconds": 2, "graceSeconds": 0},
          "relax": {"stepPercent": 10, "intervalSeconds": 600}}


def free_limit(cluster: Cluster) -> int | None:
    try:
        data = cluster.get(ConfigMap, "imagegen-quotas", NS)["data"]
    except Exception:
        return None
    return next(tier["limit"] for tier in json.loads(data["quotas.json"])["tiers"]
                if tier["name"] == "free")


def peer_priorities(cluster: Cluster) -> list[int]:
    """The priorities of the operators alive in the release's ClusterKopfPeering."""
    peers = cluster.get(ClusterPeering, "meltguard").get("status") or {}
    return sorted(int(peer.get("priority", 0)) for peer in peers.values()
                  if isinstance(peer, dict) and peer.get("lifetime", 0) > 0)


def test_the_standby_takes_over_without_repeating_a_quota_step(cluster: Cluster,
                                                               tmp_path: Path) -> None:
    exporter = start_gpu_fleet(cluster, NS, "worker", 2)
    kubeconfig = cluster.service_account_kubeconfig(RELEASE_NAMESPACE, "meltguard-operator")
    peering = ("--all-namespaces", "--peering=meltguard")
    active = operator_process(kubeconfig, tmp_path / "active.log", *peering, "--priority=100")
    standby = operator_process(kubeconfig, tmp_path / "standby.log", *peering, "--priority=50")
    steps: list[tuple[float, int | None]] = []  # (time, free limit) at each change seen
    try:
        eventually(lambda: peer_priorities(cluster) == [50, 100], timeout=60,
                   what="both operators in the peering")
        cluster.create(policy(NS, "imagegen", "worker", exporter.port, minReplicas=2,
                              maxReplicas=2, quotas=QUOTAS))
        eventually(lambda: free_limit(cluster) == 4096, timeout=60, what="quotas published")
        asyncio.run(exporter.heat(throttled=True))

        def record() -> int | None:
            limit = free_limit(cluster)
            if not steps or steps[-1][1] != limit:
                steps.append((time.monotonic(), limit))
            return limit

        eventually(lambda: (record() or 4096) <= 1024, timeout=60, every=0.05,
                   what="two quota steps by the active operator")
        active.kill()
        killed = time.monotonic()
        before = len(steps)
        eventually(lambda: record() is not None and len(steps) > before, timeout=60,
                   every=0.05, what="a quota step by the standby")
        print(f"active killed -> first quota step by the standby: "
              f"{steps[before][0] - killed:.1f} s")
        eventually(lambda: record() == 1, timeout=60, every=0.05, what="the floor reached")
        assert "Resuming operations after the pause" in standby.text()
    finally:
        exporter.stop()
        standby.stop()
        if active.process.poll() is None:
            active.stop()
        remove_policies(cluster, NS)
    limits = [limit for _, limit in steps]
    print("free tier limits published:", " -> ".join(str(limit) for limit in limits))
    assert limits == sorted(set(limits), reverse=True), "a quota step was taken twice"
    assert limits[-1] == 1 and all(a == 2 * b for a, b in pairwise(limits))
    # Each step is told once: kopf posts Events in the background, so the active operator
    # may die with its last one unsent, but none may come twice.
    told = [event.message for event in cluster.admin.list(Event, namespace=NS)
            if event.reason == "QuotaTightened" for _ in range(event.count or 1)]
    assert len(told) == len(set(told)) <= len(limits) - 1, told
