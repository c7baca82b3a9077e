"""Driving the test control plane: objects, a stand-in kubelet, tokens, the operator process.

Everything here acts as the admin (client certificate, ``system:masters``) except the
operator and quota processes, which log in with whatever kubeconfig a test writes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import lightkube
from lightkube import codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Node, Pod, ServiceAccount, ServiceAccountToken
from lightkube.types import PatchType

from meltguard.k8s.client import Policy
from tests.chart.helm import CHART_DIR, find_tool
from tests.k8s.harness import SimulatedExporter

from .envtest import ControlPlane

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Pods carrying this label are "run" by :class:`FakeKubelet`.
KUBELET_LABEL = "meltguard.test/kubelet"
GPU = "nvidia.com/gpu"


def eventually(check: Callable[[], T], timeout: float = 20.0, what: str = "the condition",
               every: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what} did not happen within {timeout} s (last: {last!r})")


class Cluster:
    """The control plane plus an admin client and the commands tests need."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.admin = lightkube.Client(KubeConfig.from_file(plane.admin_kubeconfig),
                                      field_manager="meltguard-tests")

    # ---- objects -----------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> Any:
        """Create one object given as a dict."""
        return self.admin.create(codecs.from_dict(body))

    def namespace(self, name: str) -> str:
        """Create a namespace (if absent) and return its name."""
        try:
            self.admin.get(Namespace, name)
        except lightkube.ApiError:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def get(self, resource: type[T], name: str, namespace: str | None = None) -> dict[str, Any]:
        """One object as a dict."""
        return dict(self.admin.get(resource, name, namespace=namespace).to_dict())

    def patch(self, resource: type[Any], name: str, patch: dict[str, Any],
              namespace: str | None = None) -> None:
        """A JSON merge patch."""
        self.admin.patch(resource, name, patch, namespace=namespace, patch_type=PatchType.MERGE)

    def pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        """The pods matching ``selector``, as dicts."""
        return [pod.to_dict() for pod in self.admin.list(Pod, namespace=namespace,
                                                         labels=selector)]

    def gpu_node(self, name: str, gpus: int, labels: dict[str, str]) -> None:
        """A Node whose status offers ``gpus`` GPUs and says Ready (no kubelet keeps it)."""
        self.create({"apiVersion": "v1", "kind": "Node",
                     "metadata": {"name": name, "labels": {**labels,
                                                           "kubernetes.io/hostname": name}}})
        capacity = {GPU: str(gpus), "cpu": "64", "memory": "512Gi", "pods": "110"}
        self.admin.patch(Node.Status, name, {"status": {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "played by the tests"}]}}, patch_type=PatchType.MERGE)

    # ---- credentials -------------------------------------------------------------------

    def token(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A token for a ServiceAccount from the TokenRequest API (as ``kubectl create token``)."""
        request = ServiceAccountToken(
            metadata=ObjectMeta(name=service_account, namespace=namespace),
            spec=TokenRequestSpec(audiences=[], expirationSeconds=seconds))
        answer = self.admin.create(request, name=service_account, namespace=namespace)
        return str(answer.status.token)

    def service_account_kubeconfig(self, namespace: str, service_account: str) -> Path:
        """A kubeconfig logging in as the ServiceAccount with a fresh bearer token."""
        self.admin.get(ServiceAccount, service_account, namespace=namespace)  # must exist
        return self.plane.write_kubeconfig(f"{namespace}-{service_account}",
                                           {"token": self.token(namespace, service_account)})

    # ---- tools -------------------------------------------------------------------------

    def run_tool(self, tool: str, *args: str, stdin: str | None = None) -> str:
        """helm or kubectl from .tools/, as the admin; fails with the tool's own words."""
        binary = find_tool(tool)
        if binary is None:
            raise AssertionError(f"{tool} not found: scripts/fetch-tools.sh puts it in .tools/")
        done = subprocess.run([binary, *args], input=stdin, capture_output=True, text=True,
                              timeout=120, check=False,
                              env={**os.environ, "KUBECONFIG": str(self.plane.admin_kubeconfig)})
        if done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def helm_install(self, release: str, namespace: str, *settings: str) -> None:
        """``helm install`` of the chart (CRDs included) with ``--set`` settings."""
        args = ["install", release, str(CHART_DIR), "--namespace", namespace,
                "--create-namespace", "--wait=false"]
        for setting in settings:
            args += ["--set", setting]
        self.run_tool("helm", *args)


class FakeKubelet:
    """Plays the kubelet for labelled pods: a bound pod becomes Running on 127.0.0.1, a pod
    being deleted goes at once (grace period 0), as nothing else would end it."""

    def __init__(self, cluster: Cluster) -> None:
        self._client = lightkube.Client(KubeConfig.from_file(cluster.plane.admin_kubeconfig))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-kubelet", daemon=True)

    def start(self) -> FakeKubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                for _, pod in self._client.watch(Pod, namespace=lightkube.ALL_NS,
                                                 labels={KUBELET_LABEL: "fake"},
                                                 server_timeout=2):
                    self._play(pod)
                    if self._stopped.is_set():
                        return
            except Exception:  # the control plane is going away, or a pod vanished meanwhile
                time.sleep(0.2)

    def _play(self, pod: Pod) -> None:
        meta, spec, status = pod.metadata, pod.spec, pod.status
        if meta is None or spec is None:
            return
        if meta.deletionTimestamp is not None:
            self._client.delete(Pod, meta.name, namespace=meta.namespace, grace_period=0)
        elif spec.nodeName and (status is None or status.phase != "Running"):
            self._client.patch(Pod.Status, meta.name, {"status": {
                "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                "hostIP": "127.0.0.1",
                "conditions": [{"type": "PodScheduled", "status": "True"},
                               {"type": "Ready", "status": "True"}]}},
                namespace=meta.namespace, patch_type=PatchType.MERGE)


def gpu_deployment(namespace: str, name: str, replicas: int, *, pool: str = "big",
                   kind: str = "Deployment") -> dict[str, Any]:
    """A Deployment (or StatefulSet) of one-GPU pods on nodes of ``pool``, run by the fake
    kubelet."""
    labels = {"app": name, KUBELET_LABEL: "fake"}
    spec: dict[str, Any] = {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": labels}, "spec": {
            "nodeSelector": {"meltguard.test/pool": pool},
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "worker", "image": "worker:test",
                            "resources": {"limits": {GPU: "1"}}}]}}}
    if kind == "StatefulSet":
        spec |= {"serviceName": name, "podManagementPolicy": "Parallel"}
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def exporter_pod(namespace: str, name: str) -> dict[str, Any]:
    """A pod standing for an exporter: found by the default selector, run on 127.0.0.1."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "meltguard-exporter",
                                    KUBELET_LABEL: "fake"}},
            "spec": {"nodeName": "gpu-big", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "exporter", "image": "exporter:test"}]}}


def running_pods(cluster: Cluster, namespace: str, app: str) -> list[str]:
    """Names of the app's pods the fake kubelet has running."""
    return sorted(pod["metadata"]["name"] for pod in cluster.pods(namespace, {"app": app})
                  if (pod.get("status") or {}).get("phase") == "Running"
                  and not pod["metadata"].get("deletionTimestamp"))


class MeltguardProcess:
    """``meltguard <args>`` as a child process logged in through ``kubeconfig``, its output
    in a log file (no in-cluster credentials: the kubeconfig is all it has)."""

    def __init__(self, kubeconfig: Path, args: Sequence[str], log: Path) -> None:
        self.log = log
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("KUBERNETES_SERVICE")}
        env["KUBECONFIG"] = str(kubeconfig)
        self._output = log.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "meltguard.cli", *args],
                                        stdout=self._output, stderr=subprocess.STDOUT, env=env,
                                        cwd=REPO_ROOT)

    def text(self) -> str:
        """What it logged so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as Kubernetes stops a pod; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._output.close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the process dies without a word (a node lost, an OOM kill)."""
        self.process.kill()
        self.process.wait()
        self._output.close()

    def __enter__(self) -> MeltguardProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def operator_process(kubeconfig: Path, log: Path, *extra: str) -> MeltguardProcess:
    """``meltguard operator`` without its metrics and liveness servers (no port clashes)."""
    return MeltguardProcess(kubeconfig, ["operator", "--metrics-port=0", "--liveness=",
                                         *extra], log)


def ticks_served(metrics_port: int) -> int:
    """The policy ticks an operator has made (``meltguard_reconcile_seconds_count`` on its
    metrics port); 0 before it serves them."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=2) as answer:
            page = answer.read().decode()
    except OSError:
        return 0
    return sum(int(float(line.split()[-1])) for line in page.splitlines()
               if line.startswith("meltguard_reconcile_seconds_count"))


def deployment_replicas(cluster: Cluster, namespace: str, name: str) -> int:
    """The Deployment's spec.replicas."""
    return int(cluster.get(Deployment, name, namespace)["spec"]["replicas"])


def start_gpu_fleet(cluster: Cluster, namespace: str, name: str, replicas: int, *,
                    exporter_namespace: str | None = None, pool: str = "big",
                    gpus: int | None = None) -> SimulatedExporter:
    """A workload of ``replicas`` one-GPU pods, run by the fake kubelet, and the simulated
    exporter serving their GPUs (``gpus``, default one per pod) on 127.0.0.1 behind an
    exporter pod in ``exporter_namespace`` (default: the workload's)."""
    cluster.namespace(namespace)
    exporter_namespace = cluster.namespace(exporter_namespace or namespace)
    cluster.create(gpu_deployment(namespace, name, replicas, pool=pool))
    pods = eventually(lambda: len(running := running_pods(cluster, namespace, name)) == replicas
                      and running, timeout=60, what=f"{replicas} pods of {name} running")
    exporter = SimulatedExporter(gpus or replicas, [f"{namespace}/{pod}" for pod in pods]).start()
    cluster.create(exporter_pod(exporter_namespace, f"exporter-{name}"))
    eventually(lambda: any(pod["metadata"]["name"] == f"exporter-{name}" for pod in
                           cluster.pods(exporter_namespace, {KUBELET_LABEL: "fake"})
                           if (pod.get("status") or {}).get("phase") == "Running"),
               what="the exporter pod running")
    return exporter


def stop_gpu_fleet(cluster: Cluster, namespace: str, name: str, exporter: SimulatedExporter, *,
                   exporter_namespace: str | None = None) -> None:
    """Undo :func:`start_gpu_fleet`: the exporter stopped, the workload and the exporter pod
    deleted, and their pods gone (so that their node's GPUs are free for the next test)."""
    exporter.stop()
    cluster.admin.delete(Deployment, name, namespace=namespace)
    cluster.admin.delete(Pod, f"exporter-{name}", namespace=exporter_namespace or namespace)
    eventually(lambda: not cluster.pods(namespace, {"app": name}), timeout=60,
               what=f"the pods of {name} gone")



# ---- the audit log as RBAC sees it -------------------------------------------------------

ApiVerb = tuple[str, str, str]
"""``(group, resource[/subresource], verb)``, as an RBAC rule grants it."""


def service_account_user(namespace: str, name: str) -> str:
    """The user name a ServiceAccount's token authenticates as."""
    return f"system:serviceaccount:{namespace}:{name}"


def audited(cluster: Cluster, user: str, since: int = 0) -> list[dict[str, Any]]:
    """The user's finished resource requests in the audit log, from entry ``since`` on."""
    return [event for event in cluster.plane.audit_events()[since:]
            if event.get("user", {}).get("username") == user and "objectRef" in event
            and event.get("stage") == "ResponseComplete"]


def api_verb(event: dict[str, Any]) -> ApiVerb:
    """The permission an audited request needed."""
    ref = event["objectRef"]
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return ref.get("apiGroup", ""), resource, event["verb"]


def refused(events: list[dict[str, Any]]) -> list[str]:
    """The requests answered 403, as ``verb group/resource in namespace``."""
    return [f"{event['verb']} {'/'.join(api_verb(event)[:2])} "
            f"in {event['objectRef'].get('namespace', '(cluster)')}"
            for event in events if event.get("responseStatus", {}).get("code") == 403]


#: An API refusal as a log line shows it: an HTTP 403 status, or Kubernetes' "forbidden".
_REFUSAL = re.compile(r"HTTP/\S+ 403\b|\b403 Forbidden\b|\bforbidden\b", re.IGNORECASE)


def refusals_logged(text: str) -> list[str]:
    """The log lines that show an API call refused (never a timestamp's milliseconds)."""
    return [line for line in text.splitlines() if _REFUSAL.search(line)]


def remove_policies(cluster: Cluster, namespace: str) -> None:
    """Delete a test's policies, their finalizers first (no operator may be left to release
    them), so that an operator of a later test watching every namespace never sees them."""
    for item in cluster.admin.list(Policy, namespace=namespace):
        name = item.metadata.name
        cluster.patch(Policy, name, {"metadata": {"finalizers": None}}, namespace)
        cluster.admin.delete(Policy, name, namespace=namespace)
