"""Operator shards (operator.shards): one operator per group of namespaces, each with its own
Deployments, peering, ServiceAccount and Roles; the default is the single operator of before.
tests/cluster/test_shards.py runs two shards on a real control plane."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .helm import CHART_DIR, NAMESPACE, Helm, find, one
from .test_rbac import bound_to, rule_grants

SHARDED = CHART_DIR / "ci" / "sharded-values.yaml"
RBAC_RULES = yaml.safe_load((CHART_DIR / "files" / "rbac-rules.yaml").read_text())
#: What ci/sharded-values.yaml asks for: shard name -> its namespaces.
SHARDS = {"east": ["inference-east", "batch-east"], "west": ["inference-west"]}


def args_of(deployment: dict[str, Any]) -> list[str]:
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def grants_of(docs: list[dict[str, Any]], account: str) -> set[tuple[str, str, str, str]]:
    """(namespace or "", apiGroup, resource, verb) the ServiceAccount gets through any binding."""
    subject = ("ServiceAccount", account, NAMESPACE)
    roles = {("", d["metadata"]["name"]): d for d in find(docs, "ClusterRole")}
    roles |= {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in find(docs, "Role")}
    grants = set()
    for binding in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding"):
        if bound_to(binding, subject):
            namespace = binding["metadata"].get("namespace", "")
            kind_scope = "" if binding["roleRef"]["kind"] == "ClusterRole" else namespace
            role = roles[(kind_scope, binding["roleRef"]["name"])]
            grants |= rule_grants(namespace, role["rules"])
    return grants


@pytest.fixture(scope="module")
def sharded(helm: Helm) -> list[dict[str, Any]]:
    return helm.template([SHARDED])


def test_each_shard_runs_an_active_and_a_standby_on_its_own_namespaces_and_peering(
    sharded: list[dict[str, Any]],
) -> None:
    operators = [d for d in find(sharded, "Deployment")
                 if d["metadata"]["name"].startswith("meltguard-operator")]
    assert sorted(d["metadata"]["name"] for d in operators) == [
        "meltguard-operator-east", "meltguard-operator-east-standby",
        "meltguard-operator-west", "meltguard-operator-west-standby"]
    for shard, namespaces in SHARDS.items():
        active = one(sharded, "Deployment", f"meltguard-operator-{shard}")
        standby = one(sharded, "Deployment", f"meltguard-operator-{shard}-standby")
        for deployment, priority in ((active, 100), (standby, 50)):
            args = args_of(deployment)
            assert [a for a in args if a.startswith("--namespace=")] == [
                f"--namespace={namespace}" for namespace in namespaces]
            assert "--all-namespaces" not in args
            assert f"--peering=meltguard-{shard}" in args and f"--priority={priority}" in args
            pod = deployment["spec"]["template"]["spec"]
            assert pod["serviceAccountName"] == f"meltguard-operator-{shard}"
        peerings = {(d["metadata"]["namespace"], d["metadata"]["name"])
                    for d in find(sharded, "KopfPeering")
                    if d["metadata"]["name"] == f"meltguard-{shard}"}
        assert peerings == {(namespace, f"meltguard-{shard}") for namespace in namespaces}
    assert find(sharded, "ClusterKopfPeering") == []
    assert one(sharded, "ServiceAccount", "meltguard-operator-east")


def test_shard_selectors_are_disjoint_and_the_metrics_service_reaches_them_all(
    sharded: list[dict[str, Any]],
) -> None:
    operators = [d for d in find(sharded, "Deployment")
                 if d["metadata"]["name"].startswith("meltguard-operator")]
    selectors = [d["spec"]["selector"]["matchLabels"] for d in operators]
    for index, selector in enumerate(selectors):
        for other in operators[:index] + operators[index + 1:]:
            labels = other["spec"]["template"]["metadata"]["labels"]
            assert not selector.items() <= labels.items(), (selector, other["metadata"]["name"])
    service = one(sharded, "Service", "meltguard-operator")["spec"]["selector"]
    for deployment in operators:
        assert service.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_a_shard_may_touch_only_its_own_namespaces(sharded: list[dict[str, Any]]) -> None:
    for shard, namespaces in SHARDS.items():
        grants = grants_of(sharded, f"meltguard-operator-{shard}")
        assert {namespace for namespace, *_ in grants} == {*namespaces, NAMESPACE}
        for namespace in namespaces:
            assert (namespace, "kopf.dev", "kopfpeerings", "patch") in grants
            assert (namespace, "meltguard.io", "imagequotapolicies/status", "patch") in grants
        # In the release namespace, only what reading the exporter pods takes.
        assert {grant for grant in grants if grant[0] == NAMESPACE} == rule_grants(
            NAMESPACE, RBAC_RULES["exporters"])
    assert [d for d in find(sharded, "ClusterRole")
            if d["metadata"]["name"].startswith("meltguard-operator")] == []


def test_the_quota_server_follows_every_shards_namespaces(sharded: list[dict[str, Any]]) -> None:
    args = args_of(one(sharded, "Deployment", "meltguard-quota-server"))
    watched = next(a for a in args if a.startswith("--watch-configmaps=")).split("=", 1)[1]
    assert sorted(watched.split(",")) == sorted(n for ns in SHARDS.values() for n in ns)


def test_shard_replicas_default_to_the_operators_and_may_be_set(helm: Helm) -> None:
    docs = helm.template(settings=["operator.shards[0].name=a",
                                   "operator.shards[0].namespaces={x}",
                                   "operator.shards[1].name=b",
                                   "operator.shards[1].namespaces={y}",
                                   "operator.shards[1].replicas=0"])
    assert one(docs, "Deployment", "meltguard-operator-a")["spec"]["replicas"] == 1
    assert one(docs, "Deployment", "meltguard-operator-b")["spec"]["replicas"] == 0
    assert find(docs, "Deployment", "meltguard-operator-a-standby") == []  # no peering
    assert find(docs, "KopfPeering") == []


def test_without_shards_the_single_operator_is_unchanged(helm: Helm) -> None:
    docs = helm.template(settings=["operator.peering.enabled=true"])
    active = one(docs, "Deployment", "meltguard-operator")
    assert "meltguard.io/operator-shard" not in active["spec"]["selector"]["matchLabels"]
    assert "--peering=meltguard" in args_of(active)
    assert one(docs, "ClusterKopfPeering", "meltguard")
    assert one(docs, "ServiceAccount", "meltguard-operator")


SHARD_A = ["operator.shards[0].name=a", "operator.shards[0].namespaces={x,y}"]
#: Bad shards and what the error must name (test_render.py's bad-values test runs them).
BAD_SHARDS = [
    ([*SHARD_A, "operator.shards[1].name=b", "operator.shards[1].namespaces={y}"],
     'namespace "y" is in shards "a" and "b"'),
    ([*SHARD_A, "operator.shards[1].name=a", "operator.shards[1].namespaces={z}"],
     'two shards are named "a"'),
    ([*SHARD_A, "operator.watchNamespaces={z}"],
     "operator.watchNamespaces and operator.shards are both set"),
    (["operator.shards[0].name=a"], "/operator/shards/0"),
    (["operator.shards[0].name=A", "operator.shards[0].namespaces={x}"],
     "/operator/shards/0/name"),
    ([*SHARD_A, "operator.shards[0].replicas=2"], "/operator/shards/0/replicas"),
]
