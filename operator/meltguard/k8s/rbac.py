"""Every Kubernetes API call the operator makes, as RBAC sees it.

This list is the single source for the chart's ClusterRole/Role rules (rendered from it into
``files/rbac-rules.yaml``) and is checked against the requests the operator really made:
the kmock tests' request log, and the audit log of a real kube-apiserver (tests/cluster).
Keep it minimal: a call not listed here fails in a cluster installed from the chart, and a
call listed but never made is a permission granted for nothing.

Each call has a scope, which says where the chart grants it:

* ``watched``: in every watched namespace (a Role each), or cluster-wide when the operator
  watches all namespaces;
* ``exporters``: in the namespaces where exporter pods are looked up (the policies'
  ``spec.telemetry.exporter.namespace``, by default the release namespace), when they are not
  watched anyway;
* ``peering``: kopf's namespaced peering, only with peering on and a list of namespaces;
* ``clusterPeering``: kopf's cluster-wide peering, only with peering on and all namespaces.

kopf's scanning of namespaces and CustomResourceDefinitions is off (see
:func:`meltguard.k8s.handlers.watches_patterns`), so neither is in :data:`API_CALLS`: only
``--namespace`` globs need them (:data:`PATTERN_CALLS`, which the chart never grants). API
discovery is open to every authenticated user (``system:discovery``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meltguard.k8s.resources import CONFIGMAPS, EVENTS, PODS, POLICIES

Scope = Literal["watched", "exporters", "peering", "clusterPeering"]
SCOPES: tuple[Scope, ...] = ("watched", "exporters", "peering", "clusterPeering")


@dataclass(frozen=True, slots=True)
class ApiCall:
    """Verbs on one (group, resource[/subresource]); ``group`` is "" for the core API."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    scope: Scope = "watched"
    why: str = ""


API_CALLS: tuple[ApiCall, ...] = (
    ApiCall(POLICIES.group, POLICIES.plural, ("list", "watch", "patch"),
            why="kopf lists and watches policies (the ticks read them from its watch) and "
                "patches its finalizer and annotations"),
    ApiCall(POLICIES.group, f"{POLICIES.plural}/status", ("patch",),
            why="status subresource: phase, replicas, quotas, conditions"),
    ApiCall("apps", "deployments", ("list", "watch"),
            why="the watch cache the ticks read Deployment targets from"),
    ApiCall("apps", "statefulsets", ("list", "watch"),
            why="the watch cache the ticks read StatefulSet targets from"),
    ApiCall("apps", "deployments/scale", ("patch",),
            why="set the target's replicas (more kinds: operator.extraScaleTargets, read "
                "through their /scale)"),
    ApiCall("apps", "statefulsets/scale", ("patch",),
            why="scale targets may be StatefulSets"),
    ApiCall(PODS.group, PODS.plural, ("list", "watch"),
            why="the watch cache of pods: the target's (Pending for lack of GPUs)"),
    ApiCall(CONFIGMAPS.group, CONFIGMAPS.plural, ("get", "list", "watch", "create", "patch"),
            why="the quota ConfigMap read by the quota service and Envoy; the labelled ones "
                "are watched, so one changed by someone else is put back"),
    ApiCall(EVENTS.group, EVENTS.plural, ("create",),
            why="Events on transitions (MeltingStarted, ScaledUp, QuotaTightened, ...)"),
    ApiCall(PODS.group, PODS.plural, ("list", "watch"), scope="exporters",
            why="the watch cache of the exporter pods whose metrics are scraped"),
    ApiCall("kopf.dev", "kopfpeerings", ("list", "watch", "patch"), scope="peering",
            why="kopf peering: one active operator, a standby paused"),
    ApiCall("kopf.dev", "clusterkopfpeerings", ("list", "watch", "patch"),
            scope="clusterPeering",
            why="the same peering when the operator watches all namespaces"),
)

#: What kopf's scanning adds when ``--namespace`` is a glob (never rendered into the chart).
PATTERN_CALLS: tuple[ApiCall, ...] = (
    ApiCall("", "namespaces", ("list", "watch"), why="kopf follows namespaces matching a glob"),
    ApiCall("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"),
            why="kopf follows CRDs installed or removed while it runs"),
)
