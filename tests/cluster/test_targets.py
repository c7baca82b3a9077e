"""Scale targets found through API discovery on a real kube-apiserver: a custom resource with
a scale subresource is scaled; a kind without ``/scale``, or one the server does not serve,
gets ``Ready=False`` naming it and nothing else happens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightkube
import pytest
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import ConfigMap, Event
from lightkube.types import PatchType

from meltguard.k8s.client import Policy
from tests.k8s.harness import free_port, policy

from .cluster import Cluster, eventually, operator_process, remove_policies

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NS = "kinds"
GROUP = "serving.test.meltguard.io"
Pool = create_namespaced_resource(GROUP, "v1", "InferencePool", "inferencepools")

POOL_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"inferencepools.{GROUP}"},
    "spec": {"group": GROUP, "scope": "Namespaced",
             "names": {"plural": "inferencepools", "singular": "inferencepool",
                       "kind": "InferencePool"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {
                               "type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                           "subresources": {"status": {}, "scale": {
                               "specReplicasPath": ".spec.replicas",
                               "statusReplicasPath": ".status.replicas",
                               "labelSelectorPath": ".status.selector"}}}]}}


def targeting(name: str, api_version: str, kind: str, target: str) -> dict[str, Any]:
    body = policy(NS, name, target, free_port(), minReplicas=2)  # no exporter: bounds only
    body["spec"]["scaleTargetRef"] = {"apiVersion": api_version, "kind": kind, "name": target}
    return body


def ready(cluster: Cluster, name: str) -> dict[str, Any]:
    conditions = (cluster.get(Policy, name, NS).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def test_custom_resources_are_scaled_and_unscalable_kinds_named(cluster: Cluster,
                                                                tmp_path: Path) -> None:
    cluster.namespace(NS)
    cluster.create(POOL_CRD)
    eventually(lambda: any(c.type == "Established" and c.status == "True" for c in
                           cluster.admin.get(CustomResourceDefinition,
                                             f"inferencepools.{GROUP}").status.conditions or []),
               what="the CRD established")
    cluster.admin.create(Pool(metadata={"name": "pool", "namespace": NS},
                              spec={"replicas": 1}))
    cluster.admin.patch(Pool.Status, "pool", {"status": {"replicas": 1, "selector": "app=pool"}},
                        namespace=NS, patch_type=PatchType.MERGE)
    unscalable = {"daemonset": ("apps/v1", "DaemonSet", "TargetNotScalable",
                                "DaemonSet (apps/v1) has no scale subresource"),
                  "typo": ("apps/v1", "Deploymnet", "TargetKindUnknown",
                           "no kind Deploymnet in apps/v1"),
                  "absent-group": ("rollouts.example.com/v1", "Rollout", "TargetKindUnknown",
                                   "does not serve rollouts.example.com/v1")}
    try:
        scale_and_name(cluster, tmp_path, unscalable)
    finally:
        remove_policies(cluster, NS)


def scale_and_name(cluster: Cluster, tmp_path: Path,
                   unscalable: dict[str, tuple[str, str, str, str]]) -> None:
    with operator_process(cluster.plane.admin_kubeconfig, tmp_path / "operator.log",
                          f"--namespace={NS}"):
        cluster.create(targeting("pool", f"{GROUP}/v1", "InferencePool", "pool"))
        for name, (api_version, kind, _, _) in unscalable.items():
            cluster.create(targeting(name, api_version, kind, "anything"))
        eventually(lambda: cluster.get(Pool, "pool", NS)["spec"]["replicas"] == 2,
                   what="the custom resource scaled to minReplicas through /scale")
        eventually(lambda: ready(cluster, "pool").get("status") == "True",
                   what="Ready=True for the custom resource's policy")
        for name, (_, kind, reason, words) in unscalable.items():
            condition = eventually(lambda name=name: ready(cluster, name).get("status") == "False"
                                   and ready(cluster, name), what=f"Ready=False for {kind}")
            print(f"{kind}: Ready=False {condition['reason']}: {condition['message']}")
            assert condition["reason"] == reason and words in condition["message"]
            warnings = [event for event in cluster.admin.list(Event, namespace=NS)
                        if event.involvedObject.name == name and event.reason == reason]
            assert len(warnings) == 1 and warnings[0].type == "Warning"
            with pytest.raises(lightkube.ApiError):  # nothing else happened: no quotas published
                cluster.admin.get(ConfigMap, f"{name}-quotas", namespace=NS)
