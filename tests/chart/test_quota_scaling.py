"""The quota server past one replica: a Redis Cluster URL, an HPA and a PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

import pytest

from .helm import CHART_DIR, Helm, HelmFailed, find, one

CLUSTER_VALUES = CHART_DIR / "ci" / "quota-cluster-values.yaml"
NAME = "meltguard-quota-server"


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def test_without_autoscaling_the_deployment_keeps_its_replicas_and_no_hpa(helm: Helm) -> None:
    docs = helm.template(
        settings=[
            "quotaServer.store.type=redis",
            r"quotaServer.store.redis.url=redis-cluster://a:7000\,b:7000",  # --set: \, is a comma
            "quotaServer.replicas=4",
        ]
    )
    deployment = one(docs, "Deployment", NAME)
    assert deployment["spec"]["replicas"] == 4
    assert find(docs, "HorizontalPodAutoscaler") == []
    secret = one(docs, "Secret", NAME)
    assert secret["stringData"]["url"] == "redis-cluster://a:7000,b:7000"


def test_autoscaled_replicas_on_a_redis_cluster(helm: Helm) -> None:
    docs = helm.template([CLUSTER_VALUES])
    deployment = one(docs, "Deployment", NAME)
    assert "replicas" not in deployment["spec"]  # the HPA owns it: an upgrade must not reset it
    hpa = one(docs, "HorizontalPodAutoscaler", NAME)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    cpu, decisions = hpa["metrics"]
    assert cpu["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 60},
    }
    assert decisions["pods"]["metric"]["name"] == "quota_decisions_per_second"
    spec = deployment["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["requests"]["cpu"] == "500m"  # what % is of
    spread = spec["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels(deployment).items()
    pdb = one(docs, "PodDisruptionBudget", NAME)["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= pod_labels(deployment).items()
    url = one(docs, "Secret", NAME)["stringData"]["url"]
    assert url.startswith("redis-cluster://redis-cluster-0.redis:6379,")


def test_the_pdb_can_be_turned_off(helm: Helm) -> None:
    docs = helm.template(
        [CLUSTER_VALUES], settings=["quotaServer.podDisruptionBudget.enabled=false"]
    )
    assert find(docs, "PodDisruptionBudget", NAME) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ["quotaServer.autoscaling.enabled=true"],
            'store.type is "memory": each replica would count on its own; use store.type=redis '
            "to autoscale",
        ),
        (
            [
                "quotaServer.store.type=redis",
                "quotaServer.store.redis.url=redis://r:6379/0",
                "quotaServer.autoscaling.enabled=true",
                "quotaServer.autoscaling.minReplicas=5",
                "quotaServer.autoscaling.maxReplicas=2",
            ],
            "quotaServer.autoscaling.minReplicas (5) is above maxReplicas (2)",
        ),
        (["quotaServer.autoscaling.maxReplicas=0"], "/quotaServer/autoscaling/maxReplicas"),
        (["quotaServer.autoscaling.enable=true"], "'enable' not allowed"),
        (["quotaServer.store.redis.url=cluster://a:1"], "/quotaServer/store/redis/url"),
    ],
)
def test_bad_scaling_values_fail_naming_them(helm: Helm, settings: list[str], message: str) -> None:
    with pytest.raises(HelmFailed) as failure:
        helm.template(settings=settings)
    assert message in str(failure.value)
