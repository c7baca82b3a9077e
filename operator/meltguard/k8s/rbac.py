"""Every Kubernetes API call the operator makes, as RBAC sees it.

This list is the single source for the chart's ClusterRole/Role rules (rendered from it)
and is checked against the requests the operator really made in the integration tests.
Keep it minimal: a call not listed here fails in a cluster installed from the chart.
"""

from __future__ import annotations

from dataclasses import dataclass

from meltguard.k8s.resources import POLICIES


@dataclass(frozen=True, slots=True)
class ApiCall:
    """Verbs on one (group, resource[/subresource]); ``group`` is "" for the core API."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    cluster_scoped: bool = False
    why: str = ""


API_CALLS: tuple[ApiCall, ...] = (
    ApiCall(POLICIES.group, POLICIES.plural, ("get", "list", "watch", "patch"),
            why="kopf lists and watches policies and patches its finalizer and annotations; "
                "each tick reads its policy afresh"),
    ApiCall(POLICIES.group, f"{POLICIES.plural}/status", ("patch",),
            why="status subresource: phase, replicas, quotas, conditions"),
    ApiCall("apps", "deployments/scale", ("get", "patch"),
            why="read and set the target's replicas"),
    ApiCall("apps", "statefulsets/scale", ("get", "patch"),
            why="scale targets may be StatefulSets"),
    ApiCall("", "pods", ("list",),
            why="the target's pods (Pending for lack of GPUs) and the exporter pods"),
    ApiCall("", "configmaps", ("get", "create", "patch"),
            why="the quota ConfigMap read by the quota service and Envoy"),
    ApiCall("", "events", ("create",),
            why="Events on transitions (MeltingStarted, ScaledUp, QuotaTightened, ...)"),
    ApiCall("kopf.dev", "kopfpeerings", ("list", "watch", "patch"),
            why="kopf peering: one active operator replica, a standby paused"),
    ApiCall("kopf.dev", "clusterkopfpeerings", ("list", "watch", "patch"), cluster_scoped=True,
            why="the same peering when the operator watches all namespaces"),
    ApiCall("", "namespaces", ("list", "watch"), cluster_scoped=True,
            why="kopf resolves the watched namespaces"),
)
