"""The rendered RBAC grants the operator exactly the API calls it makes (API_CALLS), no more."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import pytest

from meltguard.k8s.rbac import API_CALLS, ApiCall

from .helm import NAMESPACE, REPO_ROOT, Helm, find, one

#: (namespace or "" for cluster-wide, apiGroup, resource, verb)
Grant = tuple[str, str, str, str]
OPERATOR_SA = ("ServiceAccount", "meltguard-operator", NAMESPACE)


def load_sync() -> ModuleType:
    """charts/sync.py, the generator of files/rbac-rules.yaml and the chart's CRD copies."""
    spec = importlib.util.spec_from_file_location("chart_sync", REPO_ROOT / "charts" / "sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def rule_grants(namespace: str, rules: Iterable[dict[str, Any]]) -> set[Grant]:
    return {
        (namespace, group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def bound_to(binding: dict[str, Any], subject: tuple[str, str, str]) -> bool:
    return any(
        (s["kind"], s["name"], s.get("namespace")) == subject for s in binding.get("subjects", [])
    )


def operator_grants(docs: list[dict[str, Any]]) -> set[Grant]:
    """Everything the operator's ServiceAccount may do, through every binding rendered."""
    roles = {("", d["metadata"]["name"]): d for d in find(docs, "ClusterRole")}
    roles |= {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in find(docs, "Role")}
    grants: set[Grant] = set()
    for binding in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding"):
        if not bound_to(binding, OPERATOR_SA):
            continue
        namespace = binding["metadata"].get("namespace", "")
        ref = binding["roleRef"]
        role = roles[("" if ref["kind"] == "ClusterRole" else namespace, ref["name"])]
        grants |= rule_grants(namespace, role["rules"])
    return grants


def expected_grants(namespaces: Iterable[str], *scopes: str) -> set[Grant]:
    """API_CALLS of ``scopes`` granted in ``namespaces`` ("" = cluster-wide)."""
    return {(ns, call.group, call.resource, verb)
            for call in API_CALLS if call.scope in scopes
            for ns in namespaces for verb in call.verbs}


def test_all_namespaces_mode_grants_exactly_the_api_calls(helm: Helm) -> None:
    assert operator_grants(helm.template()) == expected_grants([""], "watched")


def test_all_namespaces_with_peering_adds_only_the_cluster_peering(helm: Helm) -> None:
    docs = helm.template(settings=["operator.peering.enabled=true"])
    assert operator_grants(docs) == expected_grants([""], "watched", "clusterPeering")


def test_listed_namespaces_get_roles_and_no_cluster_rights(helm: Helm) -> None:
    docs = helm.template(settings=["operator.watchNamespaces={inference,batch}"])
    assert operator_grants(docs) == (expected_grants(["inference", "batch"], "watched")
                                     | expected_grants([NAMESPACE], "exporters"))
    assert not find(docs, "ClusterRole", "meltguard-operator")
    assert not find(docs, "ClusterRoleBinding", "meltguard-operator")


def test_listed_namespaces_with_peering_add_the_namespaced_peering(helm: Helm) -> None:
    docs = helm.template(settings=["operator.watchNamespaces={inference}",
                                   "operator.peering.enabled=true",
                                   "operator.telemetryNamespaces={gpu-operator,inference}"])
    assert operator_grants(docs) == (expected_grants(["inference"], "watched", "peering")
                                     | expected_grants(["gpu-operator"], "exporters"))


def test_extra_scale_targets_get_their_scale_subresource(helm: Helm) -> None:
    docs = helm.template(settings=["operator.extraScaleTargets[0].apiGroup=argoproj.io",
                                   "operator.extraScaleTargets[0].resource=rollouts"])
    extra = operator_grants(docs) - expected_grants([""], "watched")
    assert extra == {("", "argoproj.io", "rollouts/scale", "get"),
                     ("", "argoproj.io", "rollouts/scale", "patch")}


@pytest.mark.parametrize("settings", [[], ["operator.watchNamespaces={inference}"]])
def test_no_wildcards_and_no_secrets_anywhere(helm: Helm, settings: list[str]) -> None:
    docs = helm.template(settings=settings)
    for role in find(docs, "ClusterRole") + find(docs, "Role"):
        for rule in role["rules"]:
            fields = rule["apiGroups"] + rule["resources"] + rule["verbs"]
            assert "*" not in fields, role["metadata"]["name"]
            assert "secrets" not in rule["resources"], role["metadata"]["name"]
            assert "nonResourceURLs" not in rule, role["metadata"]["name"]


def quota_grants(docs: list[dict[str, Any]]) -> set[Grant]:
    """Everything the quota server's ServiceAccount may do."""
    subject = ("ServiceAccount", "meltguard-quota-server", NAMESPACE)
    roles = {("", d["metadata"]["name"]): d for d in find(docs, "ClusterRole")}
    roles |= {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in find(docs, "Role")}
    grants: set[Grant] = set()
    for binding in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding"):
        if bound_to(binding, subject):
            namespace = binding["metadata"].get("namespace", "")
            ref = binding["roleRef"]
            role = roles[("" if ref["kind"] == "ClusterRole" else namespace, ref["name"])]
            grants |= rule_grants(namespace, role["rules"])
    return grants


def quota_args(docs: list[dict[str, Any]]) -> list[str]:
    deployment = one(docs, "Deployment", "meltguard-quota-server")
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def read_configmaps(*namespaces: str) -> set[Grant]:
    return {(ns, "", "configmaps", verb) for ns in namespaces for verb in ("list", "watch")}


@pytest.mark.parametrize(("settings", "flag", "namespaces"), [
    ([], "--watch-configmaps=*", [""]),
    (["operator.watchNamespaces={inference,batch}"], "--watch-configmaps=inference,batch",
     ["inference", "batch"]),
    (["quotaServer.limits.watchNamespace=tenants"], "--watch-configmaps=tenants", ["tenants"]),
])
def test_the_quota_server_reads_configmaps_where_the_operator_writes_them(
        helm: Helm, settings: list[str], flag: str, namespaces: list[str]) -> None:
    """By default the quota server follows the operator's namespaces, and may only read
    ConfigMaps there."""
    docs = helm.template(settings=settings)
    assert flag in quota_args(docs)
    assert quota_grants(docs) == read_configmaps(*namespaces)


def test_exporter_gets_no_api_access(helm: Helm) -> None:
    docs = helm.template()
    for binding in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding"):
        assert not any("exporter" in s["name"] for s in binding["subjects"])


def test_rules_file_is_generated_from_api_calls() -> None:
    sync = load_sync()
    assert sync.stale_files() == []


def test_rules_file_follows_a_change_of_api_calls() -> None:
    """The generator is not a fixed text: one more call shows up in its output."""
    sync = load_sync()
    extra = ApiCall("batch", "jobs", ("get",))
    rendered = sync.render_rbac_rules((*API_CALLS, extra))
    assert rendered != sync.render_rbac_rules()
    assert "- jobs" in rendered
