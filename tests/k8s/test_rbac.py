"""Every request the operator makes is one the chart's RBAC (rendered from API_CALLS) allows,
and every listed permission is really needed."""

from __future__ import annotations

import pytest

from .harness import (
    PODS,
    POLICIES,
    STATEFULSETS,
    MeltguardOperator,
    eventually,
    limit_steps,
    pod,
    policy,
    start_fleet,
    verbs_listed,
    verbs_used,
)
from .kmock_apiserver import ApiServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NS = "inference"


def statefulset(namespace: str, name: str, replicas: int) -> dict[str, object]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}},
            "status": {"replicas": replicas}}


async def test_every_listed_call_is_made_and_nothing_else(api: ApiServer) -> None:
    async with start_fleet(api, NS, "worker", 2) as exporter:
        api.create_object("kopf.dev/v1/kopfpeerings",
                          {"metadata": {"name": "meltguard", "namespace": NS}})
        api.create_object(STATEFULSETS, statefulset(NS, "sts-worker", 1))
        api.create_object(PODS, pod(NS, "sts-worker-0", {"app": "sts-worker"}))
        sts_policy = policy(NS, "sts", "sts-worker", exporter.port, minReplicas=2)
        sts_policy["spec"]["scaleTargetRef"]["kind"] = "StatefulSet"
        async with MeltguardOperator(api, namespaces=[NS], peering_name="meltguard"):
            api.create_object(POLICIES, policy(NS, "imagegen", "worker", exporter.port,
                                               maxReplicas=3))  # scales up once, then sheds
            api.create_object(POLICIES, sts_policy)
            await eventually(lambda: limit_steps(api, NS, "imagegen-quotas"), what="quotas")
            await exporter.heat(throttled=True)  # -> ConfigMap patched, Events posted
            await eventually(lambda: len(limit_steps(api, NS, "imagegen-quotas")) >= 2,
                             what="a tightening")
            await eventually(lambda: api.stored(STATEFULSETS, NS, "sts-worker")["spec"]
                             ["replicas"] == 2, what="the StatefulSet scaled to minReplicas")
        # watching every namespace, kopf's peering is cluster-scoped
        api.create_object("kopf.dev/v1/clusterkopfpeerings", {"metadata": {"name": "meltguard"}})
        async with MeltguardOperator(api, clusterwide=True, peering_name="meltguard"):
            await eventually(lambda: verbs_listed() <= verbs_used(api), timeout=15,
                             what="every listed permission used")
    assert verbs_used(api) == verbs_listed()
