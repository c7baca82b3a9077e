"""Typed resource references, and the scale target found in a discovery document."""

from __future__ import annotations

from typing import Any

import pytest

from meltguard.api.models import ScaleTargetRef
from meltguard.k8s.resources import CONFIGMAPS, PODS, POLICIES, NotScalable, scale_resource

#: The parts of GET /apis/apps/v1 and of a CRD's group version that matter here.
APPS_V1 = [
    {"name": "deployments", "kind": "Deployment", "namespaced": True},
    {"name": "deployments/scale", "kind": "Scale", "namespaced": True},
    {"name": "deployments/status", "kind": "Deployment", "namespaced": True},
    {"name": "statefulsets", "kind": "StatefulSet", "namespaced": True},
    {"name": "statefulsets/scale", "kind": "Scale", "namespaced": True},
    {"name": "daemonsets", "kind": "DaemonSet", "namespaced": True},
]
ROLLOUTS = [
    {"name": "rollouts", "kind": "Rollout", "namespaced": True},
    {"name": "rollouts/scale", "kind": "Scale", "namespaced": True},
    {"name": "clusterpools", "kind": "ClusterPool", "namespaced": False},
    {"name": "clusterpools/scale", "kind": "Scale", "namespaced": False},
]


def test_api_versions_of_the_core_and_named_groups() -> None:
    assert PODS.api_version == CONFIGMAPS.api_version == "v1"
    assert POLICIES.api_version == "meltguard.io/v1alpha1"
    assert (POLICIES.kind, POLICIES.plural) == ("ImageQuotaPolicy", "imagequotapolicies")


@pytest.mark.parametrize(("api_version", "kind", "served", "plural"), [
    ("apps/v1", "Deployment", APPS_V1, "deployments"),
    ("apps/v1", "StatefulSet", APPS_V1, "statefulsets"),
    ("argoproj.io/v1alpha1", "Rollout", ROLLOUTS, "rollouts"),
])
def test_the_plural_comes_from_discovery(api_version: str, kind: str,
                                         served: list[dict[str, Any]], plural: str) -> None:
    found = scale_resource(ScaleTargetRef(api_version=api_version, kind=kind, name="w"), served)
    assert (found.api_version, found.kind, found.plural) == (api_version, kind, plural)


@pytest.mark.parametrize(("api_version", "kind", "served", "reason", "words"), [
    ("apps/v1", "DaemonSet", APPS_V1, "TargetNotScalable", "DaemonSet (apps/v1) has no scale"),
    ("apps/v1", "Deploymnet", APPS_V1, "TargetKindUnknown", "no kind Deploymnet in apps/v1"),
    ("argoproj.io/v1alpha1", "ClusterPool", ROLLOUTS, "TargetNotScalable", "cluster-scoped"),
    ("apps/v1", "Scale", APPS_V1, "TargetKindUnknown", "no kind Scale"),
])
def test_kinds_that_cannot_be_scaled_are_named(api_version: str, kind: str,
                                               served: list[dict[str, Any]], reason: str,
                                               words: str) -> None:
    with pytest.raises(NotScalable) as caught:
        scale_resource(ScaleTargetRef(api_version=api_version, kind=kind, name="w"), served)
    assert caught.value.reason == reason
    assert words in caught.value.message
