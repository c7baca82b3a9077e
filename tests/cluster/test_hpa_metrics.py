"""The real HPA controller and meltguard, driven by the same utilization, scale alike.

Two identical StatefulSets: one scaled by a HorizontalPodAutoscaler (kube-controller-manager's
HPA controller, reading the resource metrics API of :mod:`.metrics_api`), one by an
ImageQuotaPolicy (the operator process, reading a simulated exporter's GPUs). The policy has the
HPA's target and its ``behavior`` block pasted as is. Both read the same whole percent at the
same moments: a step up, a dip shorter than the scale-down window, a step down. Their replica
counts must go through the same values.

Why these choices:

* The HPA reads ``Resource`` ``memory`` with a ``Utilization`` target: the same arithmetic as
  for ``cpu`` (usage summed over the pods, times 100, over the requests summed, truncated to a
  whole percent, then the tolerance and ``ceil(ratio x ready pods)``), without the CPU-only
  readiness rules (``cpu-initialization-period``, pod start times), which the stand-in
  kubelet does not play. meltguard takes the GPUs' mean utilization the same way.
* StatefulSets rather than Deployments: their pods' names are known before they exist, so the
  simulated exporter carries a GPU for each pod there can be, and a scale-down removes the
  highest ordinals, never the pods whose GPUs meltguard reads.
* Each direction's policies share one period, and the scale-down window (8 s) spans less than
  three periods, so the sequence of counts does not depend on how the two controllers' syncs
  fall (only when each step happens does); the steps are worked out by hand in
  :data:`EXPECTED`.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import lightkube
import pytest
import yaml
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.apiregistration_v1 import APIService
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Pod, Service

from meltguard.k8s.client import Policy
from tests.k8s.harness import SimulatedExporter, policy

from .cluster import (
    KUBELET_LABEL,
    Cluster,
    eventually,
    exporter_pod,
    gpu_deployment,
    operator_process,
    remove_policies,
    running_pods,
)
from .metrics_api import (
    API_SERVICE,
    GROUP_VERSION,
    MetricsApi,
    MetricsApiServer,
    available,
    registration,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NS = "hpa-metrics"
HPA_TARGET = "hpa-worker"
POLICY_TARGET = "mg-worker"
MAX_REPLICAS = 10
#: 100 MiB: a multiple of 100 bytes, so that every whole percent of it is a whole byte count.
MEMORY_REQUEST = "100Mi"

TARGET_PERCENT = 50
DOWN_WINDOW_SECONDS = 8
#: The HPA as a platform team would write it; its behavior block goes into the policy as is.
HPA_MANIFEST = f"""
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: {HPA_TARGET}, namespace: {NS}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: StatefulSet, name: {HPA_TARGET}}}
  minReplicas: 2
  maxReplicas: {MAX_REPLICAS}
  metrics:
    - type: Resource
      resource:
        name: memory
        target: {{type: Utilization, averageUtilization: {TARGET_PERCENT}}}
  behavior:
    scaleUp:
      stabilizationWindowSeconds: 0
      selectPolicy: Max
      policies:
        - {{type: Pods, value: 2, periodSeconds: 4}}
        - {{type: Percent, value: 50, periodSeconds: 4}}
    scaleDown:
      stabilizationWindowSeconds: {DOWN_WINDOW_SECONDS}
      selectPolicy: Min
      policies:
        - {{type: Pods, value: 2, periodSeconds: 3}}
        - {{type: Percent, value: 25, periodSeconds: 3}}
"""
#: Low utilization for less than the scale-down window: no scale-down at all.
DIP_SECONDS = 3
CALM, BUSY, QUIET = TARGET_PERCENT, 80, 20
#: The counts both must go through, worked out by hand from the behavior block.
#: Step up, 80 % of a 50 % target (wish ceil(1.6 n)), at most max(n + 2, ceil(1.5 n)) per 4 s:
#: 2 -> 4 (the wish); 4 -> 6 (wish 7, both policies allow 6); 6 -> 9 (wish 10, Pods allows 8,
#: Percent 9: Max takes 9); 9 -> 10 (wish 15, Percent allows 14, maxReplicas 10).
#: The dip: nothing (the window still holds the wishes for 10).
#: Step down, 20 % (wish ceil(0.4 n)), at least max(n - 2, floor(0.75 n)) per 3 s (Min: the
#: smaller change): 10 -> 8 (Pods 8, Percent 7) once the window no longer holds a wish for 10;
#: 8 -> 6; 6 -> 4 (wish 3); 4 -> 3 (Pods 2, Percent 3; held at 4 while the window still holds
#: a wish of 4); 3 -> 2 (the wish).
EXPECTED = [2, 4, 6, 9, 10, 8, 6, 4, 3, 2]


def statefulset(name: str) -> dict[str, Any]:
    """A StatefulSet of pods run by the stand-in kubelet, each requesting memory (the HPA's
    utilization is relative to requests) and no GPU (no capacity rule gets a say)."""
    body = gpu_deployment(NS, name, 2, kind="StatefulSet")
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"memory": MEMORY_REQUEST}}
    return body


def pasted_policy(hpa: dict[str, Any], exporter_port: int) -> dict[str, Any]:
    """An ImageQuotaPolicy with the HPA's bounds, target and behavior block (a copy), and the
    tolerance of kube-controller-manager's default ``--horizontal-pod-autoscaler-tolerance``."""
    spec = hpa["spec"]
    body = policy(NS, "mg", POLICY_TARGET, exporter_port, minReplicas=spec["minReplicas"],
                  maxReplicas=spec["maxReplicas"])
    body["spec"]["scaleTargetRef"]["kind"] = spec["scaleTargetRef"]["kind"]
    target = spec["metrics"][0]["resource"]["target"]["averageUtilization"]
    body["spec"]["scaling"] = {"targetUtilizationPercent": target, "tolerancePercent": 10,
                               "behavior": copy.deepcopy(spec["behavior"])}
    return body


class ReplicaRecorder:
    """Polls both StatefulSets' ``spec.replicas`` and keeps each change with its time."""

    def __init__(self, cluster: Cluster) -> None:
        self._client = lightkube.Client(KubeConfig.from_file(cluster.plane.admin_kubeconfig))
        self.changes: dict[str, list[tuple[float, int]]] = {HPA_TARGET: [], POLICY_TARGET: []}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-recorder", daemon=True)

    def _run(self) -> None:
        while not self._stopped.wait(0.1):
            for name, changes in self.changes.items():
                try:
                    replicas = self.replicas(name)
                except (lightkube.ApiError, httpx2.HTTPError):
                    continue  # read again on the next round
                if not changes or changes[-1][1] != replicas:
                    changes.append((time.monotonic(), replicas))

    def replicas(self, name: str) -> int:
        spec = self._client.get(StatefulSet.Scale, name, namespace=NS).spec
        return int(spec.replicas or 0) if spec else 0

    def values(self, name: str, *, since: float = 0.0) -> list[int]:
        """The counts ``name`` went through from ``since`` on (the one in force then first)."""
        changes = self.changes[name]
        before = [value for at, value in changes if at <= since][-1:]
        return before + [value for at, value in changes if at > since]

    def first_change(self, name: str, *, since: float) -> float | None:
        """Seconds from ``since`` to the first change after it."""
        return next((at - since for at, _ in self.changes[name] if at > since), None)

    def both_at(self, replicas: int) -> bool:
        return all(changes and changes[-1][1] == replicas for changes in self.changes.values())

    def __enter__(self) -> ReplicaRecorder:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def metrics_api(cluster: Cluster) -> Iterator[MetricsApi]:
    """The resource metrics API, registered with the API server for this module's tests and
    unregistered after them (a registered API that does not answer would stall discovery)."""
    api = MetricsApi(cluster.pods)
    server = MetricsApiServer(api, cluster.plane.ca.serving("metrics-api")).start()
    service, api_service = registration(server.port)
    try:
        cluster.create(service)
        cluster.create(api_service)
        eventually(lambda: available(cluster.get(APIService, API_SERVICE)).get("status")
                   == "True", timeout=60, what=f"the APIService {API_SERVICE} available")
        yield api
    finally:
        cluster.admin.delete(APIService, API_SERVICE)
        cluster.admin.delete(Service, service["metadata"]["name"],
                             namespace=service["metadata"]["namespace"])
        server.stop()


def set_utilization(api: MetricsApi, exporter: SimulatedExporter, percent: int) -> None:
    """The same whole percent to the HPA (pod memory) and to meltguard (GPU utilization)."""
    api.set_utilization(NS, percent)
    asyncio.run(exporter.drill(utilization=percent / 100, temperatureCelsius=50,
                               throttleReasons=[]))


def hpa_reads(cluster: Cluster, percent: int) -> bool:
    """The HPA has fetched the metric and sees ``percent``."""
    hpa_status = cluster.get(HorizontalPodAutoscaler, HPA_TARGET, NS).get("status") or {}
    metrics = hpa_status.get("currentMetrics") or []
    return any(((metric.get("resource") or {}).get("current") or {}).get("averageUtilization")
               == percent for metric in metrics)


def meltguard_reads(cluster: Cluster, percent: int) -> bool:
    """The operator has read the GPUs and sees ``percent`` on average."""
    gpus = (cluster.get(Policy, "mg", NS).get("status") or {}).get("gpus") or {}
    return gpus.get("meanUtilizationPercent") == percent


def start_workloads(cluster: Cluster) -> SimulatedExporter:
    """Both StatefulSets at 2 running pods, and an exporter with a GPU for each pod the
    policy's StatefulSet can have."""
    cluster.namespace(NS)
    for name in (HPA_TARGET, POLICY_TARGET):
        cluster.create(statefulset(name))
    eventually(lambda: all(len(running_pods(cluster, NS, name)) == 2
                           for name in (HPA_TARGET, POLICY_TARGET)),
               timeout=60, what="2 pods of each StatefulSet running")
    attach = [f"{NS}/{POLICY_TARGET}-{ordinal}" for ordinal in range(MAX_REPLICAS)]
    exporter = SimulatedExporter(MAX_REPLICAS, attach).start()
    cluster.create(exporter_pod(NS, "exporter"))
    eventually(lambda: any(pod["metadata"]["name"] == "exporter"
                           and (pod.get("status") or {}).get("phase") == "Running"
                           for pod in cluster.pods(NS, {KUBELET_LABEL: "fake"})),
               what="the exporter pod running")
    return exporter


def delete_if_there(cluster: Cluster, resource: type[Any], name: str) -> None:
    """Delete an object of the test's namespace; one never created (the test failed before)
    is no error."""
    try:
        cluster.admin.delete(resource, name, namespace=NS)
    except lightkube.ApiError as error:
        if error.status.code != 404:
            raise


def stop_workloads(cluster: Cluster, exporter: SimulatedExporter) -> None:
    """Undo :func:`start_workloads` and the test's autoscalers, and wait for the pods to go."""
    exporter.stop()
    remove_policies(cluster, NS)
    delete_if_there(cluster, HorizontalPodAutoscaler, HPA_TARGET)
    delete_if_there(cluster, Pod, "exporter")
    for name in (HPA_TARGET, POLICY_TARGET):
        delete_if_there(cluster, StatefulSet, name)
    eventually(lambda: not cluster.pods(NS, {KUBELET_LABEL: "fake"}), timeout=60,
               what=f"the pods of {NS} gone")


def test_the_metrics_api_names_what_it_cannot_serve(cluster: Cluster,
                                                   metrics_api: MetricsApi) -> None:
    """Through the API server as the HPA reads it: a pod requesting no memory, and a
    selector the server does not parse, are refused naming them."""
    cluster.namespace(NS)
    metrics_api.set_utilization(NS, CALM)
    cluster.create({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "bare", "namespace": NS, "labels": {"app": "bare"}},
                    "spec": {"nodeSelector": {"meltguard.test/pool": "none"},
                             "containers": [{"name": "main", "image": "worker:test"}]}})
    pods = f"/apis/{GROUP_VERSION}/namespaces/{NS}/pods"
    try:
        for selector, words in (("app%3Dbare", "pod bare: container main requests no memory"),
                                ("app+in+(bare)", "only key=value terms")):
            with pytest.raises(AssertionError, match="BadRequest") as refused:
                cluster.run_tool("kubectl", "get", "--raw", f"{pods}?labelSelector={selector}")
            assert words in str(refused.value)
    finally:
        delete_if_there(cluster, Pod, "bare")


def test_hpa_and_pasted_policy_scale_alike_on_the_same_utilization(
    cluster: Cluster, metrics_api: MetricsApi, tmp_path: Path,
) -> None:
    hpa = yaml.safe_load(HPA_MANIFEST)
    exporter = start_workloads(cluster)
    try:
        set_utilization(metrics_api, exporter, CALM)
        with operator_process(cluster.plane.admin_kubeconfig, tmp_path / "operator.log",
                              f"--namespace={NS}"), ReplicaRecorder(cluster) as recorder:
            cluster.create(hpa)
            cluster.create(pasted_policy(hpa, exporter.port))
            eventually(lambda: hpa_reads(cluster, CALM) and meltguard_reads(cluster, CALM),
                       timeout=60, what=f"both reading {CALM} %")
            scenario(metrics_api, exporter, recorder)
    finally:
        stop_workloads(cluster, exporter)


def scenario(api: MetricsApi, exporter: SimulatedExporter, recorder: ReplicaRecorder) -> None:
    """Step up, a dip shorter than the scale-down window, step down; the counts compared."""
    up = time.monotonic()
    set_utilization(api, exporter, BUSY)
    eventually(lambda: recorder.both_at(MAX_REPLICAS), timeout=60,
               what=f"both at {MAX_REPLICAS} (so far {recorder.changes})")
    time.sleep(2)

    dip = time.monotonic()
    set_utilization(api, exporter, QUIET)
    time.sleep(DIP_SECONDS)
    set_utilization(api, exporter, CALM)
    time.sleep(DOWN_WINDOW_SECONDS + 2)

    down = time.monotonic()
    set_utilization(api, exporter, QUIET)
    eventually(lambda: recorder.both_at(2), timeout=90,
               what=f"both back at 2 (so far {recorder.changes})")
    time.sleep(DOWN_WINDOW_SECONDS + 2)  # and nothing more happens

    report(recorder, up=up, dip=dip, down=down)
    hpa, meltguard = (recorder.values(name, since=up) for name in (HPA_TARGET, POLICY_TARGET))
    assert meltguard == hpa, f"the HPA went through {hpa}, meltguard through {meltguard}"
    assert hpa == EXPECTED, f"the HPA controller went through {hpa}, not {EXPECTED}"
    for name in (HPA_TARGET, POLICY_TARGET):
        held = recorder.first_change(name, since=down)
        assert held is not None and held >= DOWN_WINDOW_SECONDS - 2, \
            f"{name} scaled down {held} s after the step down, inside the window"


def report(recorder: ReplicaRecorder, *, up: float, dip: float, down: float) -> None:
    """Each controller's counts with the seconds since the step up (pytest -s shows them)."""
    print(f"step up at 0 s, dip at {dip - up:.1f} s, step down at {down - up:.1f} s")
    for name, changes in recorder.changes.items():
        steps = ", ".join(f"{value}@{at - up:.1f}s" for at, value in changes if at > up)
        print(f"{name}: {recorder.values(name, since=up)[0]} then {steps}")
