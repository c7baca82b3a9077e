"""An HPA's ``behavior`` block pasted into a policy, on a real kube-apiserver and HPA controller.

The same block goes into a HorizontalPodAutoscaler and into an ImageQuotaPolicy: the server
accepts and defaults both the same way, rejects the same mistakes in both, naming the same
field, and meltguard then has the HPA's rules in force. The HPA controller of the real
kube-controller-manager then decides the syncs that need no metric (zero replicas, above
``maxReplicas``) as meltguard's arithmetic does.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler

from meltguard.api.models import ScalingSpec
from meltguard.api.validation import parse_policy
from meltguard.core.replicas import behavior_of, hpa_sync
from tests.k8s.harness import policy

from .cluster import Cluster, deployment_replicas, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NS = "hpa-behavior"

#: An HPA as a platform team writes one (autoscaling/v2), with a behavior block.
HPA_MANIFEST = f"""
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: imagegen, namespace: {NS}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: imagegen-worker}}
  minReplicas: 2
  maxReplicas: 64
  metrics:
    - type: Resource
      resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 70}}}}
  behavior:
    scaleUp:
      policies:
        - {{type: Percent, value: 100, periodSeconds: 15}}
        - {{type: Pods, value: 4, periodSeconds: 15}}
    scaleDown:
      stabilizationWindowSeconds: 600
      selectPolicy: Min
      policies:
        - {{type: Percent, value: 10, periodSeconds: 60}}
        - {{type: Pods, value: 2, periodSeconds: 60}}
"""


def dry_run(cluster: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    """What the API server would store (validated and defaulted), stored nowhere."""
    out = cluster.run_tool("kubectl", "create", "--dry-run=server", "-o", "json", "-f", "-",
                           stdin=json.dumps(body))
    stored: dict[str, Any] = json.loads(out)
    return stored


def pasted(behavior: dict[str, Any], name: str = "pasted") -> dict[str, Any]:
    """A policy whose scaling is the HPA's target and behavior block, pasted as is."""
    body = policy(NS, name, "imagegen-worker")
    body["spec"]["scaling"] = {"targetUtilizationPercent": 70, "behavior": behavior}
    return body


def test_the_server_defaults_a_pasted_block_as_it_defaults_the_hpa(cluster: Cluster) -> None:
    cluster.namespace(NS)
    hpa = yaml.safe_load(HPA_MANIFEST)
    hpa_behavior = dry_run(cluster, hpa)["spec"]["behavior"]
    stored = dry_run(cluster, pasted(copy.deepcopy(hpa["spec"]["behavior"])))
    policy_behavior = stored["spec"]["scaling"]["behavior"]
    # filled in by the server alike: the scale-up window and select policy
    assert policy_behavior["scaleUp"] == hpa_behavior["scaleUp"]
    assert policy_behavior["scaleDown"] == hpa_behavior["scaleDown"]
    in_force = behavior_of(parse_policy(stored).spec.scaling)
    assert in_force == behavior_of(ScalingSpec.model_validate({"behavior": hpa_behavior}))


def test_a_direction_left_out_gets_the_hpa_defaults(cluster: Cluster) -> None:
    cluster.namespace(NS)
    hpa = yaml.safe_load(HPA_MANIFEST)
    hpa["spec"]["behavior"] = {"scaleDown": {"selectPolicy": "Disabled"}}
    hpa_behavior = dry_run(cluster, hpa)["spec"]["behavior"]
    policy_behavior = dry_run(cluster, pasted(copy.deepcopy(hpa["spec"]["behavior"])))[
        "spec"]["scaling"]["behavior"]
    assert policy_behavior["scaleUp"] == hpa_behavior["scaleUp"]
    # the HPA leaves the scale-down window to the controller's flag (300 s by default);
    # meltguard writes that 300 s down
    assert "stabilizationWindowSeconds" not in hpa_behavior["scaleDown"]
    assert policy_behavior["scaleDown"] == {**hpa_behavior["scaleDown"],
                                            "stabilizationWindowSeconds": 300}


@pytest.mark.parametrize(("field", "value", "words"), [
    ("scaleUp.policies[0].periodSeconds", 1801, "1800"),
    ("scaleUp.policies[0].value", 0, "greater than"),
    ("scaleUp.policies[0].type", "Replicas", "Pods"),
    ("scaleDown.selectPolicy", "Maximum", "Disabled"),
    ("scaleDown.stabilizationWindowSeconds", 3601, "3600"),
])
def test_the_same_mistake_is_refused_in_both_naming_the_field(
    cluster: Cluster, field: str, value: Any, words: str,
) -> None:
    cluster.namespace(NS)
    hpa = yaml.safe_load(HPA_MANIFEST)
    set_field(hpa["spec"]["behavior"], field, value)
    with pytest.raises(AssertionError, match=rf"spec\.behavior\.{_escaped(field)}") as refused:
        dry_run(cluster, hpa)
    assert words in str(refused.value)
    body = pasted(copy.deepcopy(hpa["spec"]["behavior"]), "refused")
    with pytest.raises(AssertionError, match=rf"spec\.scaling\.behavior\.{_escaped(field)}"):
        dry_run(cluster, body)


def test_an_empty_policy_list_is_refused_in_both(cluster: Cluster) -> None:
    cluster.namespace(NS)
    hpa = yaml.safe_load(HPA_MANIFEST)
    hpa["spec"]["behavior"]["scaleUp"]["policies"] = []
    with pytest.raises(AssertionError, match=r"spec\.behavior\.scaleUp\.policies"):
        dry_run(cluster, hpa)
    with pytest.raises(AssertionError, match=r"spec\.scaling\.behavior\.scaleUp\.policies"):
        dry_run(cluster, pasted(hpa["spec"]["behavior"], "empty"))


def set_field(node: Any, path: str, value: Any) -> None:
    *parents, last = path.replace("[", ".[").split(".")
    for part in parents:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    node[last] = value


def _escaped(field: str) -> str:
    return field.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")


def hpa_condition(cluster: Cluster, name: str, kind: str) -> dict[str, Any]:
    status = cluster.get(HorizontalPodAutoscaler, name, NS).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def idle_deployment(name: str, replicas: int) -> dict[str, Any]:
    """A Deployment whose pods no node takes (they need no kubelet to stay Pending)."""
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "nodeSelector": {"meltguard.test/pool": "none"},
                         "containers": [{"name": "worker", "image": "worker:test"}]}}}}


def test_the_hpa_controller_and_meltguard_agree_without_a_metric(cluster: Cluster) -> None:
    """Zero replicas: autoscaling disabled; above maxReplicas: down to it."""
    cluster.namespace(NS)
    hpa = yaml.safe_load(HPA_MANIFEST)
    spec = ScalingSpec.model_validate({"behavior": hpa["spec"]["behavior"]})
    for target, replicas in (("idle-worker", 0), ("crowded-worker", 7)):
        cluster.create(idle_deployment(target, replicas))
        body = copy.deepcopy(hpa)
        body["metadata"]["name"] = target
        body["spec"] |= {"scaleTargetRef": {**body["spec"]["scaleTargetRef"], "name": target},
                         "maxReplicas": 5}
        cluster.create(body)
    eventually(lambda: hpa_condition(cluster, "idle-worker", "ScalingActive").get("reason")
               == "ScalingDisabled", timeout=90, what="the HPA to call scaling disabled")
    eventually(lambda: deployment_replicas(cluster, NS, "crowded-worker") == 5, timeout=90,
               what="the HPA to bring 7 replicas down to maxReplicas 5")
    assert deployment_replicas(cluster, NS, "idle-worker") == 0
    for current, expected, reason in ((0, 0, "ScalingDisabled"), (7, 5, "AtMaxReplicas")):
        sync = hpa_sync(current, utilization=0.7, scaling=spec, min_replicas=2, max_replicas=5,
                        history=[], events=[], now=0.0)
        assert (sync.limited.replicas, sync.limited.reason) == (expected, reason)
