"""The Kubernetes resources the operator touches, each one typed value.

A resource is named once here (group, version, kind, plural, whether it is namespaced). The
scale target is not known in advance: :func:`scale_resource` finds it in the discovery
document of its group version (kind -> plural, namespaced, serves ``/scale``), so any
workload with a scale subresource can be scaled (Deployment, StatefulSet, Argo Rollouts,
LeaderWorkerSet, ...), and one that cannot is named in the policy's status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meltguard.api.models import ScaleTargetRef
from meltguard.api.vocabulary import GROUP, KIND, PLURAL, VERSION


@dataclass(frozen=True, slots=True)
class Resource:
    """One API resource; ``group`` is "" for the core API (``/api/v1``)."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """``apps/v1``, or ``v1`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version


POLICIES = Resource(GROUP, VERSION, KIND, PLURAL)
PODS = Resource("", "v1", "Pod", "pods")
DEPLOYMENTS = Resource("apps", "v1", "Deployment", "deployments")
STATEFULSETS = Resource("apps", "v1", "StatefulSet", "statefulsets")
CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps")
EVENTS = Resource("", "v1", "Event", "events")


class NotScalable(Exception):
    """The scale target's kind is not served, or has no ``/scale`` (``reason`` says which)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def scale_resource(ref: ScaleTargetRef, discovered: Iterable[Mapping[str, Any]]) -> Resource:
    """The resource of ``ref``'s kind in its group version's discovery document
    (``APIResourceList.resources``); :class:`NotScalable` when absent, cluster-scoped or
    without a ``scale`` subresource."""
    group, _, version = ref.api_version.rpartition("/")
    served = [dict(item) for item in discovered]
    names = {str(item.get("name")) for item in served}
    for item in served:
        name = str(item.get("name", ""))
        if item.get("kind") != ref.kind or "/" in name:
            continue
        if not item.get("namespaced"):
            raise NotScalable("TargetNotScalable",
                              f"{ref.kind} ({ref.api_version}) is cluster-scoped; a scale "
                              f"target lives in the policy's namespace")
        if f"{name}/scale" not in names:
            raise NotScalable("TargetNotScalable",
                              f"{ref.kind} ({ref.api_version}) has no scale subresource")
        return Resource(group, version, ref.kind, name)
    raise NotScalable("TargetKindUnknown",
                      f"the API server serves no kind {ref.kind} in {ref.api_version}")
