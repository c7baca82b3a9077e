"""Request paths built from typed resource references."""

from __future__ import annotations

import pytest

from meltguard.api.models import ScaleTargetRef
from meltguard.k8s.resources import CONFIGMAPS, PODS, POLICIES, Resource, scale_target_resource


def test_core_group_paths() -> None:
    assert PODS.path(namespace="ns") == "/api/v1/namespaces/ns/pods"
    assert PODS.path() == "/api/v1/pods"
    assert CONFIGMAPS.path(namespace="ns", name="q") == "/api/v1/namespaces/ns/configmaps/q"
    assert PODS.api_version == "v1"


def test_policy_paths_with_subresource() -> None:
    assert POLICIES.path() == "/apis/meltguard.io/v1alpha1/imagequotapolicies"
    assert POLICIES.path(namespace="inference", name="imagegen", subresource="status") == (
        "/apis/meltguard.io/v1alpha1/namespaces/inference/imagequotapolicies/imagegen/status")
    assert POLICIES.api_version == "meltguard.io/v1alpha1"


def test_names_are_quoted_and_cluster_scoped_resources_ignore_the_namespace() -> None:
    nodes = Resource("", "v1", "nodes", namespaced=False)
    assert nodes.path(namespace="ns", name="a/b") == "/api/v1/nodes/a%2Fb"


@pytest.mark.parametrize(("api_version", "kind", "path"), [
    ("apps/v1", "Deployment", "/apis/apps/v1/namespaces/ns/deployments/w/scale"),
    ("apps/v1", "StatefulSet", "/apis/apps/v1/namespaces/ns/statefulsets/w/scale"),
    ("v1", "ReplicationController", "/api/v1/namespaces/ns/replicationcontrollers/w/scale"),
])
def test_scale_target_paths(api_version: str, kind: str, path: str) -> None:
    ref = ScaleTargetRef(api_version=api_version, kind=kind, name="w")
    assert scale_target_resource(ref).path(namespace="ns", name="w", subresource="scale") == path
