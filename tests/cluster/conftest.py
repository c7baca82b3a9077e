"""One real control plane for the whole test session (starting one costs seconds of CPU).

The chart is installed into it as a user would (``helm install``: the CRDs, the
ServiceAccounts, the RBAC, the ClusterKopfPeering), with nothing that would need a kubelet:
the operator's and quota server's Deployments at 0 replicas (the tests run those processes
themselves, logged in as the chart's ServiceAccounts), no exporter DaemonSet. Two fake GPU
nodes stand in the cluster: ``gpu-big`` (64 GPUs) and ``gpu-small`` (2 GPUs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.helm import find_tool

from .cluster import Cluster, FakeKubelet
from .envtest import ControlPlane, missing_assets

RELEASE = "meltguard"
RELEASE_NAMESPACE = "meltguard-system"
#: The chart installed as the tests run it: all namespaces, peering with a standby.
RELEASE_SETTINGS = ("operator.replicas=0", "operator.peering.enabled=true",
                    "exporter.enabled=false", "quotaServer.replicas=0",
                    "monitoring.dashboard.enabled=false")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The control plane with the chart installed, fake GPU nodes and the fake kubelet."""
    reason = missing_assets()
    if reason:
        pytest.skip(reason)
    if find_tool("helm") is None:
        pytest.skip("helm not found: scripts/fetch-tools.sh puts it in .tools/")
    plane = ControlPlane(tmp_path_factory.mktemp("envtest"),
                         Path(os.environ["KUBEBUILDER_ASSETS"]))
    try:
        plane.start()
        cluster = Cluster(plane)
        cluster.helm_install(RELEASE, RELEASE_NAMESPACE, *RELEASE_SETTINGS)
        cluster.gpu_node("gpu-big", 64, {"meltguard.test/pool": "big"})
        cluster.gpu_node("gpu-small", 2, {"meltguard.test/pool": "small"})
        kubelet = FakeKubelet(cluster).start()
        try:
            yield cluster
        finally:
            kubelet.stop()
    finally:
        plane.stop()
