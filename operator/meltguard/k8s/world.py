"""Reading the world for one tick: the scale target, the target's pods, telemetry.

Everything here only reads; :mod:`meltguard.k8s.act` writes. The policy itself comes from
kopf's watch (the daemon's live body); Deployments, StatefulSets, pods and the labelled quota
ConfigMaps come from the watch caches of :mod:`meltguard.k8s.cache`, which keep a small record
of each (:class:`CachedPod`, :class:`CachedWorkload`, a ConfigMap's ``data``), so that a tick
asks the API server nothing. The pure parts (which pod waits for a GPU, which resource serves
a kind) are plain functions, tested on their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meltguard.api.models import PolicySpec, ScaleTargetRef
from meltguard.api.quotas import QUOTAS_LABELS
from meltguard.core.observation import Observation
from meltguard.ingest.source import TelemetryReading
from meltguard.k8s.cache import Watches
from meltguard.k8s.client import Kube, NotFound
from meltguard.k8s.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    PODS,
    STATEFULSETS,
    NotScalable,
    Resource,
    scale_resource,
)
from meltguard.k8s.selectors import Selector, matches, parse_selector, selector_of

GPU_RESOURCE = "nvidia.com/gpu"


NamespacedName = tuple[str, str]
"""An object (a pod, a policy) as ``(namespace, name)``; the telemetry sources take pods so."""


@dataclass(frozen=True, slots=True)
class Target:
    """The scale target as its scale subresource shows it, plus its pods."""

    resource: Resource
    replicas: int
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


def is_live(pod: Mapping[str, Any]) -> bool:
    """Not being deleted and not finished."""
    meta = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    return not meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def running_ip(pod: Mapping[str, Any]) -> str | None:
    """The IP of a running pod that has one (an exporter to scrape), or None."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP") or not is_live(pod):
        return None
    return str(status["podIP"])


@dataclass(frozen=True, slots=True)
class CachedPod:
    """What the caches keep of a pod: what a tick and an exporter lookup ask of it."""

    key: NamespacedName
    labels: Mapping[str, str]
    live: bool
    waiting_for_gpu: bool
    ip: str | None


def pod_record(pod: Mapping[str, Any]) -> CachedPod:
    """A pod from the watch as the cache keeps it."""
    meta = pod.get("metadata") or {}
    return CachedPod(key=(str(meta.get("namespace", "")), str(meta.get("name", ""))),
                     labels=meta.get("labels") or {}, live=is_live(pod),
                     waiting_for_gpu=waits_for_gpu(pod), ip=running_ip(pod))


@dataclass(frozen=True, slots=True)
class CachedWorkload:
    """What the caches keep of a scale target: what its ``/scale`` would say."""

    replicas: int
    selector: Selector


def workload_record(workload: Mapping[str, Any]) -> CachedWorkload:
    """A Deployment or StatefulSet from the watch as the cache keeps it."""
    spec = workload.get("spec") or {}
    return CachedWorkload(replicas=int(spec.get("replicas") or 0),
                          selector=selector_of(spec.get("selector")))


def configmap_data(configmap: Mapping[str, Any]) -> Mapping[str, str]:
    """A quota ConfigMap from the watch as the cache keeps it: its ``data``. Only the
    labelled ones are followed (:data:`~meltguard.api.quotas.QUOTAS_LABELS`), so one that
    loses the label leaves the cache as if deleted."""
    return dict(configmap.get("data") or {})


#: Scale targets read from watch caches; any other kind is read through its ``/scale``.
WATCHED_KINDS: Mapping[tuple[str, str], Resource] = {
    (kind.api_version, kind.kind): kind for kind in (DEPLOYMENTS, STATEFULSETS)}


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


class ClusterView:
    """What the ticks read from the cluster: scale targets and pods, from watch caches
    shared by every policy (a kind without a cache through its ``/scale``)."""

    def __init__(self, client: Kube) -> None:
        self._client = client
        self.targets = ScaleTargets(client)
        self.watches = Watches(client)

    async def pods(self, namespace: str, selector: Selector) -> list[CachedPod]:
        """The live pods of ``namespace`` that ``selector`` picks."""
        watch = await self.watches.of(PODS, namespace, pod_record)
        return [pod for pod in watch.records.values()
                if pod.live and matches(selector, pod.labels)]

    async def target(self, namespace: str, ref: ScaleTargetRef) -> Target:
        """The scale target and its live pods (NotFound when missing, NotScalable when its
        kind cannot be scaled)."""
        resource = await self.targets.resource(ref)
        workload = await self._workload(resource, namespace, ref)
        pods = await self.pods(namespace, workload.selector) if workload.selector else []
        return Target(resource=resource, replicas=workload.replicas,
                      pods=frozenset(pod.key for pod in pods),
                      pending_for_gpu=sum(1 for pod in pods if pod.waiting_for_gpu))

    async def _workload(self, resource: Resource, namespace: str,
                        ref: ScaleTargetRef) -> CachedWorkload:
        kind = WATCHED_KINDS.get((ref.api_version, ref.kind))
        if kind is None:
            scale = await self._client.get_scale(resource, namespace, ref.name)
            return CachedWorkload(
                replicas=int((scale.get("spec") or {}).get("replicas") or 0),
                selector=parse_selector(str((scale.get("status") or {}).get("selector") or "")))
        watch = await self.watches.of(kind, namespace, workload_record)
        found = watch.records.get(ref.name)
        if found is None:
            raise NotFound(404, "NotFound", f"{ref.kind.lower()}s {ref.name!r} not found")
        return found

    async def quota_configmap(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The ``data`` of the labelled ConfigMap ``name``, None when there is none (deleted,
        or without the quota service's label)."""
        watch = await self.watches.of(CONFIGMAPS, namespace, configmap_data, QUOTAS_LABELS)
        return watch.records.get(name)

    async def list_endpoints(self, namespace: str, match_labels: Mapping[str, str],
                             port: int) -> list[str]:
        """``ip:port`` of every running pod ``match_labels`` picks (the exporters)."""
        pods = await self.pods(namespace, selector_of({"matchLabels": match_labels}))
        return [f"{pod.ip}:{port}" for pod in pods if pod.ip is not None]

    async def close(self) -> None:
        """Stop the watches."""
        await self.watches.close()


@dataclass(frozen=True, slots=True)
class World:
    """Everything one tick read, ready for ``decide()``."""

    target: Target
    telemetry: TelemetryReading

    @property
    def observation(self) -> Observation:
        """The core's view: samples plus the target's replica counts."""
        return self.telemetry.observation(self.target.replicas, self.target.pending_for_gpu)


async def observe(view: ClusterView, read_telemetry: ReadTelemetry, *, namespace: str,
                  name: str, spec: PolicySpec, now: float) -> World:
    """Read the target and its GPUs (raises NotFound when the target is missing,
    NotScalable when its kind cannot be scaled)."""
    target = await view.target(namespace, spec.scale_target_ref)
    telemetry = await read_telemetry((namespace, name), spec, target.pods, now)
    return World(target, telemetry)
