"""Running kopf against the kmock API server, and building the objects tests need.

kopf cancels every task of its event loop when it exits, so it runs in a thread of its own
with its own loop (:class:`KopfThread`); the test's loop serves the API (:mod:`.kmock_apiserver`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial
from types import TracebackType
from typing import Any

import aiohttp
import kmock
import kopf
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.config.models import Cluster, User

from meltguard.ingest.metrics import IngestMetrics
from meltguard.k8s.handlers import Runtime, build_registry, configure_settings, watches_patterns
from meltguard.k8s.metrics import OperatorMetrics
from meltguard.k8s.rbac import API_CALLS, PATTERN_CALLS
from meltguard.k8s.telemetry import telemetry_sources

from .kmock_apiserver import ApiServer

POLICIES = "meltguard.io/v1alpha1/imagequotapolicies"
DEPLOYMENTS = "apps/v1/deployments"
STATEFULSETS = "apps/v1/statefulsets"
PODS = "v1/pods"
CONFIGMAPS = "v1/configmaps"
EVENTS = "v1/events"
NAMESPACES = "v1/namespaces"

_ALL_VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def declare_resources(server: ApiServer) -> None:
    """Declare what a cluster with meltguard's CRD installed would serve through discovery."""
    declared: dict[str, kmock.ResourceInfo] = {
        POLICIES: kmock.ResourceInfo(kind="ImageQuotaPolicy", namespaced=True, shortnames={"iqp"},
                                     subresources={"status"}),
        DEPLOYMENTS: kmock.ResourceInfo(kind="Deployment", namespaced=True,
                                        subresources={"status", "scale"}),
        STATEFULSETS: kmock.ResourceInfo(kind="StatefulSet", namespaced=True,
                                         subresources={"status", "scale"}),
        PODS: kmock.ResourceInfo(kind="Pod", namespaced=True, subresources={"status"}),
        CONFIGMAPS: kmock.ResourceInfo(kind="ConfigMap", namespaced=True),
        EVENTS: kmock.ResourceInfo(kind="Event", namespaced=True),
        NAMESPACES: kmock.ResourceInfo(kind="Namespace", namespaced=False),
        "kopf.dev/v1/kopfpeerings": kmock.ResourceInfo(kind="KopfPeering", namespaced=True),
        "kopf.dev/v1/clusterkopfpeerings": kmock.ResourceInfo(kind="ClusterKopfPeering",
                                                              namespaced=False),
    }
    for name, info in declared.items():
        info.verbs = set(_ALL_VERBS)
        server.resources[name] = info


def add_namespaces(server: ApiServer, *names: str) -> None:
    """Create Namespace objects: kopf serves a namespace only once it sees it exist."""
    for name in names:
        if server.stored(NAMESPACES, None, name) is None:
            server.create_object(NAMESPACES, {"metadata": {"name": name}})


def server_url(server: ApiServer) -> str:
    """The API server's base URL, as a kubeconfig would hold it."""
    return str(server.url).rstrip("/")


def config_at(url: str) -> SingleConfig:
    """lightkube's configuration for a server that wants no credentials."""
    config = KubeConfig.from_one(cluster=Cluster(server=url), user=User()).get()
    assert config is not None
    return config


def credentials_for(server: ApiServer) -> Callable[[], SingleConfig]:
    """The operator's credentials source, pointing at the kmock server."""
    url = server_url(server)
    return lambda: config_at(url)


def login_to(server: ApiServer) -> Callable[..., kopf.ConnectionInfo]:
    """A kopf login handler that points kopf at the kmock server."""
    url = server_url(server)

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, default_namespace="default")

    return login


class KopfThread:
    """kopf's ``operator()`` in its own thread and event loop, started and stopped by ``with``.

    Standalone unless ``peering_name`` is given (then the KopfPeering object must exist).
    """

    def __init__(self, registry: kopf.OperatorRegistry, *, namespaces: Collection[str] = (),
                 clusterwide: bool = False, settings: kopf.OperatorSettings | None = None,
                 peering_name: str | None = None) -> None:
        self._kwargs: dict[str, Any] = dict(
            registry=registry, settings=settings or quick_settings(),
            standalone=peering_name is None, peering_name=peering_name,
            namespaces=list(namespaces), clusterwide=clusterwide)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="kopf", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(kopf.operator(stop_flag=self._stop, ready_flag=self._ready,
                                      **self._kwargs))
        except BaseException as exc:  # reported to the test through .error
            self.error = exc
            self._ready.set()

    # Waiting happens in a worker thread: the test's loop must keep serving the API meanwhile
    # (kopf talks to it while starting and stopping, e.g. to leave its peering).

    async def __aenter__(self) -> KopfThread:
        self._thread.start()
        ready = await asyncio.to_thread(self._ready.wait, 20)
        if not ready or self.error is not None:
            await self.stop()
            raise RuntimeError(f"kopf did not start: {self.error!r}")
        return self

    async def stop(self) -> None:
        """Ask kopf to stop, as SIGTERM would, and wait for it."""
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 30)
        if self._thread.is_alive():
            raise RuntimeError("kopf did not stop within 30 s")

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def quick_settings() -> kopf.OperatorSettings:
    """kopf settings that keep tests fast: no batching delay, quick retries and posting."""
    settings = kopf.OperatorSettings()
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 1.0
    settings.watching.reconnect_backoff = 0.2
    settings.posting.level = 0  # post every event kopf logs, so tests can see them
    return settings


async def eventually(check: Callable[[], Any], timeout: float = 10.0,
                     what: str = "the condition") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        result = check()
        last = await result if isinstance(result, Awaitable) else result
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s (last: {last!r})")


# --------------------------------------------------------------------------------------------
# The objects a test cluster holds.
# --------------------------------------------------------------------------------------------

WORKER_LABELS = {"app": "imagegen-worker"}
EXPORTER_LABELS = {"app.kubernetes.io/name": "meltguard-exporter"}


def deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """A Deployment whose pods carry ``app: <name>``."""
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}}},
            "status": {"replicas": replicas}}


def pod(namespace: str, name: str, labels: dict[str, str], *, ip: str | None = "127.0.0.1",
        waiting_for_gpu: bool = False) -> dict[str, Any]:
    """A Running pod with an IP, or a Pending one the scheduler found no GPU for."""
    if waiting_for_gpu:
        status = {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/8 nodes are available: 8 Insufficient nvidia.com/gpu."}]}
    else:
        status = {"phase": "Running", "podIP": ip,
                  "conditions": [{"type": "PodScheduled", "status": "True"}]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"containers": [{"name": "main", "image": "worker"}]}, "status": status}


def policy(namespace: str, name: str, target: str, exporter_port: int = 9400,
           **spec: Any) -> dict[str, Any]:
    """An ImageQuotaPolicy with quick timings for tests; ``spec`` overrides top-level fields."""
    body: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
        "minReplicas": 2, "maxReplicas": 4, "intervalSeconds": 1,
        "telemetry": {"source": "exporter",
                      "exporter": {"namespace": namespace,
                                   "selector": {"matchLabels": EXPORTER_LABELS},
                                   "port": exporter_port},
                      "staleAfterSeconds": 3},
        "scaling": {"targetUtilizationPercent": 70, "tolerancePercent": 10,
                    "scaleUp": {"stabilizationSeconds": 0, "maxStepReplicas": 8,
                                "periodSeconds": 1},
                    "scaleDown": {"stabilizationSeconds": 3, "maxStepPercent": 100,
                                  "periodSeconds": 1}},
        "melt": {"temperatureCelsius": 85, "utilizationPercent": 97, "memoryPercent": 95,
                 "sustainSeconds": 2, "fleetFraction": 0.25,
                 "cool": {"temperatureCelsius": 78, "utilizationPercent": 85,
                          "sustainSeconds": 1}},
        "quotas": {"tiers": [{"name": "free", "limit": 3, "window": "24h", "floor": 0},
                             {"name": "plus", "limit": 200, "window": "3h", "floor": 50},
                             {"name": "pro", "unlimited": True}],
                   "tighten": {"factor": 0.5, "intervalSeconds": 1, "graceSeconds": 0},
                   "relax": {"stepPercent": 50, "intervalSeconds": 1}},
    }
    body.update(spec)
    return {"apiVersion": "meltguard.io/v1alpha1", "kind": "ImageQuotaPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


# --------------------------------------------------------------------------------------------
# Simulated exporters: the real ``meltguard exporter --simulate`` process on 127.x.
# --------------------------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports nothing listens on right now."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((host, 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


class SimulatedExporter:
    """``meltguard exporter --simulate N --attach NS/POD,...`` as a child process."""

    def __init__(self, gpus: int, attach: Sequence[str], *, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.gpus = gpus
        self._command = [sys.executable, "-m", "meltguard.cli", "exporter",
                         "--simulate", str(gpus), "--attach", ",".join(attach),
                         "--host", host, "--port", str(self.port), "--interval", "0.2",
                         "--node", f"node-{host}", "--log-level", "WARNING"]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SimulatedExporter:
        """Start the process and wait until it answers /healthz."""
        self._process = subprocess.Popen(self._command)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"exporter exited with {self._process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("exporter did not answer /healthz within 30 s")

    def stop(self) -> None:
        """Stop the process (as a crashed or deleted exporter pod would)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def __enter__(self) -> SimulatedExporter:
        running = self._process is not None and self._process.poll() is None
        return self if running else self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatedExporter:
        return self.__enter__()

    async def __aexit__(self, *_: object) -> None:
        self.stop()

    async def drill(self, **state: Any) -> None:
        """POST /simulate: e.g. ``drill(utilization=0.99, temperatureCelsius=91)``."""
        body = {"gpus": "all", **state}
        async with aiohttp.ClientSession() as session, \
                session.post(f"{self.url}/simulate", json=body) as response:
            if response.status != 200:
                raise AssertionError(f"POST /simulate {body}: {response.status} "
                                     f"{await response.text()}")

    async def heat(self, throttled: bool = False) -> None:
        """Every GPU busy and hot; with ``throttled``, thermal slowdown too (melting now)."""
        await self.drill(utilization=0.99, temperatureCelsius=91,
                         throttleReasons=["hw_thermal"] if throttled else [])

    async def cool(self, utilization: float = 0.2) -> None:
        """Every GPU cool and quiet."""
        await self.drill(utilization=utilization, temperatureCelsius=50, throttleReasons=[])


# --------------------------------------------------------------------------------------------
# The meltguard operator itself, against the harness.
# --------------------------------------------------------------------------------------------

class MeltguardOperator(KopfThread):
    """meltguard's registry and settings in a :class:`KopfThread`, logged in to ``server``.

    On a clean exit it checks the request log: every request needed a permission that
    :data:`~meltguard.k8s.rbac.API_CALLS` (hence the chart's RBAC) grants.
    """

    def __init__(self, server: ApiServer, *, namespaces: Collection[str] = (),
                 clusterwide: bool = False, peering_name: str | None = None) -> None:
        self.metrics = OperatorMetrics()
        ingest_metrics = IngestMetrics(self.metrics.registry)
        self.runtime = Runtime(telemetry=partial(telemetry_sources, metrics=ingest_metrics),
                               metrics=self.metrics, credentials=credentials_for(server))
        settings = quick_settings()
        configure_settings(settings, namespaces)
        self.patterns = watches_patterns(namespaces)
        super().__init__(build_registry(self.runtime), namespaces=namespaces,
                         clusterwide=clusterwide, settings=settings, peering_name=peering_name)
        self.server = server

    def ticks(self) -> int:
        """How many ticks (of every policy) have ended so far."""
        family = self.metrics.reconcile_seconds.collect()[0]
        return int(next(sample.value for sample in family.samples
                        if sample.name.endswith("_count")))

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await super().__aexit__(exc_type, exc, tb)
        unlisted = verbs_used(self.server) - verbs_listed(patterns=self.patterns)
        if exc_type is None and unlisted:
            raise AssertionError(f"requests RBAC would refuse (add them to API_CALLS): "
                                 f"{sorted(unlisted)}")


def start_fleet(server: ApiServer, namespace: str, name: str, replicas: int, *,
                pending: int = 0, host: str = "127.0.0.1",
                exporter_namespace: str | None = None) -> SimulatedExporter:
    """A Deployment with running pods (one simulated GPU each), ``pending`` pods waiting for a
    GPU, and an exporter pod whose IP is the simulated exporter's: in the same namespace
    (sidecar-like) or in ``exporter_namespace`` (a DaemonSet in meltguard-system)."""
    exporter_namespace = exporter_namespace or namespace
    add_namespaces(server, namespace, exporter_namespace)
    server.create_object(DEPLOYMENTS, deployment(namespace, name, replicas))
    workers = [f"{name}-{index}" for index in range(replicas)]
    for worker in workers:
        server.create_object(PODS, pod(namespace, worker, {"app": name}))
    for index in range(pending):
        server.create_object(PODS, pod(namespace, f"{name}-pending-{index}", {"app": name},
                                       waiting_for_gpu=True))
    exporter = SimulatedExporter(replicas, [f"{namespace}/{worker}" for worker in workers],
                                 host=host).start()
    server.create_object(PODS, pod(exporter_namespace, f"exporter-{name}", EXPORTER_LABELS,
                                   ip=host))
    return exporter


# --------------------------------------------------------------------------------------------
# Reading what the operator did, from the objects' histories.
# --------------------------------------------------------------------------------------------

def versions(server: ApiServer, resource: str, namespace: str, name: str) -> list[dict[str, Any]]:
    """Every stored version of an object, oldest first (deletions skipped)."""
    key = (kmock.resource(resource), namespace, name)
    if key not in server.objects:
        return []
    return [version.raw for version in server.objects[key].history if version is not None]


def changes(values: Sequence[Any]) -> list[Any]:
    """``values`` with consecutive repeats dropped."""
    return [value for index, value in enumerate(values) if index == 0 or value != values[index - 1]]


def status_of(server: ApiServer, namespace: str, name: str) -> dict[str, Any]:
    """The policy's status now (empty when none yet)."""
    return dict((server.stored(POLICIES, namespace, name) or {}).get("status") or {})


def condition_of(server: ApiServer, namespace: str, name: str, kind: str) -> dict[str, Any]:
    """One status condition of the policy (empty when absent)."""
    for item in status_of(server, namespace, name).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


def phases(server: ApiServer, namespace: str, name: str) -> list[str]:
    """The phases the policy's status went through, in order."""
    return changes([version["status"]["phase"]
                    for version in versions(server, POLICIES, namespace, name)
                    if (version.get("status") or {}).get("phase")])


def replicas_now(server: ApiServer, namespace: str, name: str) -> int:
    """The Deployment's spec.replicas."""
    return int((server.stored(DEPLOYMENTS, namespace, name) or {})["spec"]["replicas"])


def quota_versions(server: ApiServer, namespace: str, name: str) -> list[dict[str, Any]]:
    """Every ``quotas.json`` the ConfigMap held, parsed, oldest first."""
    return [json.loads(version["data"]["quotas.json"])
            for version in versions(server, CONFIGMAPS, namespace, name)]


def limit_steps(server: ApiServer, namespace: str, name: str) -> list[tuple[int | None, ...]]:
    """The sequence of published limits (None for unlimited tiers), repeats dropped."""
    return changes([tuple(tier.get("limit") for tier in document["tiers"])
                    for document in quota_versions(server, namespace, name)])


def events_with(server: ApiServer, reason: str,
                namespace: str | None = None) -> list[dict[str, Any]]:
    """The Events posted with ``reason`` (optionally in one namespace)."""
    return [obj.raw for (resource, ns, _), obj in server.objects.items()
            if resource == kmock.resource(EVENTS) and not obj.deleted
            and obj.raw.get("reason") == reason and namespace in (None, ns)]


# --------------------------------------------------------------------------------------------
# The request log as RBAC sees it.
# --------------------------------------------------------------------------------------------

ApiVerb = tuple[str, str, str]
"""``(group, resource[/subresource], verb)``, as an RBAC rule grants it."""


def rbac_verb(request: Any) -> ApiVerb | None:
    """The RBAC permission a request needed; None for discovery (non-resource URLs)."""
    resource = request.resource
    if resource is None or resource.plural is None:
        return None
    plural = resource.plural + (f"/{request.subresource}" if request.subresource else "")
    if request.method == "GET":
        verb = "watch" if request.params.get("watch") == "true" else \
            "get" if request.name else "list"
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update",
                "DELETE": "delete"}[request.method.value]
    return resource.group or "", plural, verb


def verbs_used(server: ApiServer) -> set[ApiVerb]:
    """Every permission the requests served so far needed."""
    return {verb for request in server.request_log if (verb := rbac_verb(request)) is not None}


def verbs_listed(*, patterns: bool = False) -> set[ApiVerb]:
    """Every permission :data:`meltguard.k8s.rbac.API_CALLS` grants (and, for namespace
    ``patterns``, what kopf's scanning needs besides)."""
    calls = API_CALLS + PATTERN_CALLS if patterns else API_CALLS
    return {(call.group, call.resource, verb) for call in calls for verb in call.verbs}
