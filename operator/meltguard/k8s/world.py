"""Reading the world for one tick: the policy, its scale target, the target's pods, telemetry.

Everything here only reads; :mod:`meltguard.k8s.act` writes. The pure parts (which pod waits
for a GPU, which resource serves a kind) are plain functions, tested on their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meltguard.api.models import PolicySpec, ScaleTargetRef
from meltguard.core.observation import Observation
from meltguard.ingest.source import ListEndpoints, TelemetryReading
from meltguard.k8s.client import Kube, NotFound
from meltguard.k8s.resources import NotScalable, Resource, scale_resource

GPU_RESOURCE = "nvidia.com/gpu"


NamespacedName = tuple[str, str]
"""An object (a pod, a policy) as ``(namespace, name)``; the telemetry sources take pods so."""


@dataclass(frozen=True, slots=True)
class Target:
    """The scale target as its scale subresource shows it, plus its pods."""

    resource: Resource
    replicas: int
    resource_version: str | None
    pods: frozenset[NamespacedName]
    pending_for_gpu: int


ReadTelemetry = Callable[[NamespacedName, PolicySpec, frozenset[NamespacedName], float],
                        Awaitable[TelemetryReading]]
"""``(policy, spec, target pods, now) -> reading``: the policy's telemetry source, read once."""



def waits_for_gpu(pod: Mapping[str, Any]) -> bool:
    """A Pending pod the scheduler could not place for lack of ``nvidia.com/gpu``."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending":
        return False
    for condition in status.get("conditions") or []:
        if (condition.get("type") == "PodScheduled" and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
                and GPU_RESOURCE in (condition.get("message") or "")):
            return True
    return False


def _pod(pod: Mapping[str, Any]) -> NamespacedName:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def is_live(pod: Mapping[str, Any]) -> bool:
    """Not being deleted and not finished."""
    meta = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    return not meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


async def read_policy(client: Kube, namespace: str, name: str) -> dict[str, Any]:
    """The policy as stored now (raises NotFound once it is gone)."""
    return await client.get_policy(namespace, name)


class ScaleTargets:
    """Scale targets resolved through API discovery, each remembered once found.

    A kind not found (yet) is looked up again at the next tick, so a CRD installed after
    the policy is picked up without a restart.
    """

    def __init__(self, client: Kube) -> None:
        self._client = client
        self._found: dict[tuple[str, str], Resource] = {}

    async def resource(self, ref: ScaleTargetRef) -> Resource:
        """The resource serving ``ref``'s kind; :class:`NotScalable` when there is none."""
        key = (ref.api_version, ref.kind)
        found = self._found.get(key)
        if found is None:
            try:
                discovered = await self._client.api_resources(ref.api_version)
            except NotFound as missing:
                raise NotScalable("TargetKindUnknown",
                                  f"the API server does not serve {ref.api_version} "
                                  f"(kind {ref.kind})") from missing
            found = self._found[key] = scale_resource(ref, discovered)
        return found


async def read_target(client: Kube, targets: ScaleTargets, *, namespace: str,
                      ref: ScaleTargetRef) -> Target:
    """Replicas and selector through the scale subresource, then the target's live pods."""
    resource = await targets.resource(ref)
    scale = await client.get_scale(resource, namespace, ref.name)
    selector = str((scale.get("status") or {}).get("selector") or "")
    pods = [pod for pod in await client.list_pods(namespace, selector) if is_live(pod)] \
        if selector else []
    return Target(
        resource=resource,
        replicas=int((scale.get("spec") or {}).get("replicas") or 0),
        resource_version=(scale.get("metadata") or {}).get("resourceVersion"),
        pods=frozenset(_pod(pod) for pod in pods),
        pending_for_gpu=sum(1 for pod in pods if waits_for_gpu(pod)),
    )


def label_selector(match_labels: Mapping[str, str]) -> str:
    """``{"a": "1"}`` -> ``a=1`` (a LabelSelector's matchLabels as a query string)."""
    return ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))


def pod_endpoint(pod: Mapping[str, Any], port: int) -> str | None:
    """``host:port`` of a running pod with an IP, or None."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP") or not is_live(pod):
        return None
    return f"{status['podIP']}:{port}"


def endpoint_lister(client: Kube) -> ListEndpoints:
    """The ``list_endpoints`` coroutine the telemetry sources use, backed by the pods API."""

    async def list_endpoints(namespace: str, match_labels: Mapping[str, str],
                             port: int) -> list[str]:
        pods = await client.list_pods(namespace, label_selector(match_labels))
        return [endpoint for pod in pods if (endpoint := pod_endpoint(pod, port)) is not None]

    return list_endpoints


@dataclass(frozen=True, slots=True)
class World:
    """Everything one tick read, ready for ``decide()``."""

    target: Target
    telemetry: TelemetryReading

    @property
    def observation(self) -> Observation:
        """The core's view: samples plus the target's replica counts."""
        return self.telemetry.observation(self.target.replicas, self.target.pending_for_gpu)


async def observe(client: Kube, targets: ScaleTargets, read_telemetry: ReadTelemetry, *,
                  namespace: str, name: str, spec: PolicySpec, now: float) -> World:
    """Read the target and its GPUs (raises NotFound when the target is missing,
    NotScalable when its kind cannot be scaled)."""
    target = await read_target(client, targets, namespace=namespace, ref=spec.scale_target_ref)
    telemetry = await read_telemetry((namespace, name), spec, target.pods, now)
    return World(target, telemetry)
