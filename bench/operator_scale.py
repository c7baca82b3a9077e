"""One operator, many policies, on a real control plane: tick period, drill reaction, RSS, CPU
and API requests per policy tick.

The world (issue 18): a real kube-apiserver, etcd, controller-manager and scheduler
(``tests/cluster/envtest.py``, ``$KUBEBUILDER_ASSETS``), the chart installed, a fake GPU
node and the fake kubelet of the cluster tests; 5 namespaces of 10 GPU Deployments (2 pods
each); 5 ``meltguard exporter --simulate 200`` processes, one per namespace, attaching their
1,000 GPUs to the pods round robin; N policies at ``intervalSeconds: 1``, the first 50 one
per Deployment and the others dry runs of the same targets (so that no two policies fight);
the operator a subprocess logged in as the chart's ServiceAccount, from ``--tree`` (default:
this checkout), with the chart from that same tree.

Printed:

* tick period per policy (median, p95) over a steady window of ``--steady`` seconds: from
  ``meltguard_policy_ticks_total`` where the operator serves it, else from the audit log
  (an operator that reads its policy once per tick: the GETs of each policy);
* API requests per policy tick by verb, and the writes over the steady window, from the
  audit log (it records the operator's ServiceAccount only);
* operator RSS at the end of the window, operator CPU milliseconds per policy tick;
* with ``--drills D`` (0 to skip): D heat drills of namespace 0's exporter (every GPU busy),
  each timing the 10 Deployments there from the drill to ``spec.replicas`` changed, then
  cooling down until they are back at 2 (median, p95); and the operator's writes the API
  server refused meanwhile (a refused scale costs its tick a pause and a second try);
* with ``--standalone``: no peering (one replica); else kopf's peering keep-alive writes are
  counted apart from the control loop's writes;
* with ``--profile``: the operator runs under cProfile (its CPU figures are then inflated)
  and the top entries are printed.

    KUBEBUILDER_ASSETS=$PWD/.envtest PATH=$PWD/.tools:$PATH \\
        .venv/bin/python bench/operator_scale.py --policies 50 [--tree /tmp/before]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import lightkube
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.apps_v1 import Deployment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import procstat  # noqa: E402
from tests.cluster.cluster import (  # noqa: E402
    Cluster,
    FakeKubelet,
    eventually,
    exporter_pod,
    gpu_deployment,
    running_pods,
    service_account_user,
)
from tests.cluster.conftest import RELEASE, RELEASE_NAMESPACE, RELEASE_SETTINGS  # noqa: E402
from tests.cluster.envtest import ControlPlane, missing_assets  # noqa: E402
from tests.k8s.harness import SimulatedExporter, free_port, policy  # noqa: E402

NAMESPACES = tuple(f"scale-{index}" for index in range(5))
DEPLOYMENTS = tuple(f"worker-{index}" for index in range(10))
PODS_PER_DEPLOYMENT = 2
GPUS_PER_EXPORTER = 200
OPERATOR_SA = "meltguard-operator"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def build_world(cluster: Cluster) -> list[SimulatedExporter]:
    """The namespaces, Deployments, their running pods and one exporter per namespace."""
    cluster.gpu_node("gpu-big", 2000, {"meltguard.test/pool": "big"})
    for namespace in NAMESPACES:
        cluster.namespace(namespace)
        for name in DEPLOYMENTS:
            cluster.create(gpu_deployment(namespace, name, PODS_PER_DEPLOYMENT))
    exporters = []
    for namespace in NAMESPACES:
        pods = [pod for name in DEPLOYMENTS for pod in running(cluster, namespace, name)]
        exporters.append(SimulatedExporter(
            GPUS_PER_EXPORTER, [f"{namespace}/{pod}" for pod in pods]).start())
        cluster.create(exporter_pod(namespace, "exporter"))
    return exporters


def running(cluster: Cluster, namespace: str, name: str) -> list[str]:
    """The Deployment's pod names once all of them run."""
    def ready() -> list[str]:
        pods = running_pods(cluster, namespace, name)
        return pods if len(pods) == PODS_PER_DEPLOYMENT else []

    return eventually(ready, timeout=180, what=f"{namespace}/{name} running")


def policies(count: int, exporters: list[SimulatedExporter]) -> list[dict[str, Any]]:
    """``count`` policies at 1 s: the first one per Deployment acts, the others dry-run."""
    bodies = []
    for index in range(count):
        slot = index % (len(NAMESPACES) * len(DEPLOYMENTS))
        namespace_index, target = slot % len(NAMESPACES), DEPLOYMENTS[slot // len(NAMESPACES)]
        body = policy(NAMESPACES[namespace_index], f"policy-{index}", target,
                      exporters[namespace_index].port, minReplicas=PODS_PER_DEPLOYMENT,
                      maxReplicas=PODS_PER_DEPLOYMENT + 1,
                      dryRun=index >= len(NAMESPACES) * len(DEPLOYMENTS))
        body["spec"]["scaling"]["scaleDown"]["stabilizationSeconds"] = 0
        bodies.append(body)
    return bodies


class Operator:
    """The operator process from ``tree``, as the chart's ServiceAccount."""

    def __init__(self, tree: Path, kubeconfig: Path, folder: Path, *, profile: bool,
                 standalone: bool) -> None:
        self.metrics_port = free_port()
        self.profile_file = folder / "operator.prof"
        command = [sys.executable]
        if profile:
            command += ["-m", "cProfile", "-o", str(self.profile_file)]
        command += ["-m", "meltguard.cli", "operator", "--all-namespaces",
                    f"--metrics-port={self.metrics_port}", "--liveness="]
        if not standalone:
            command.append("--peering=meltguard")
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("KUBERNETES_SERVICE")}
        env |= {"KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(tree / "operator")}
        self.log = (folder / "operator.log").open("wb")
        self.process = subprocess.Popen(command, cwd=tree, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)

    def cpu_seconds(self) -> float:
        return procstat.cpu_seconds(self.process.pid)

    def rss_mib(self) -> float:
        return procstat.rss_mib(self.process.pid)

    def ticks(self) -> dict[str, float] | None:
        """Ticks per policy from /metrics, or None when the operator has no such family."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        found = {}
        for line in text.splitlines():
            if line.startswith("meltguard_policy_ticks_total{"):
                labels, _, value = line.rpartition(" ")
                found[labels] = float(value)
        return found or None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


class Audit:
    """The operator's requests in the audit log, read on from where the last read stopped."""

    def __init__(self, plane: ControlPlane, user: str) -> None:
        self.path, self.user, self.offset = plane.audit_log, user, 0

    def skip(self) -> None:
        self.offset = self.path.stat().st_size

    def read(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        events = (json.loads(line) for line in data[:end].splitlines() if line)
        return [event for event in events if event.get("stage") == "ResponseComplete"
                and event.get("user", {}).get("username") == self.user and "objectRef" in event]


def request_name(event: dict[str, Any]) -> str:
    ref = event["objectRef"]
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return f"{event['verb']} {resource}"


def steady_window(operator: Operator, audit: Audit, seconds: float,
                  count: int) -> dict[str, Any]:
    """Ticks, CPU and requests over ``seconds`` of nothing changing."""
    audit.skip()
    ticks_before, cpu_before, started = operator.ticks(), operator.cpu_seconds(), time.time()
    time.sleep(seconds)
    ticks_after, cpu_after, elapsed = operator.ticks(), operator.cpu_seconds(), \
        time.time() - started
    events = audit.read()
    if ticks_after is not None:
        per_policy = [ticks_after[key] - (ticks_before or {}).get(key, 0.0)
                      for key in ticks_after]
    else:  # one GET of its policy per tick
        gets = Counter(event["objectRef"]["name"] for event in events
                       if request_name(event) == "get imagequotapolicies")
        per_policy = [float(gets[f"policy-{index}"]) for index in range(count)]
    total_ticks = sum(per_policy)
    periods = [elapsed / ticks if ticks else float("inf") for ticks in per_policy]
    by_request = Counter(request_name(event) for event in events)
    return {"elapsed": elapsed, "periods": periods, "ticks": total_ticks,
            "cpu_ms_per_tick": 1000 * (cpu_after - cpu_before) / max(total_ticks, 1),
            "cpu_share": (cpu_after - cpu_before) / elapsed,
            "by_request": by_request,
            "writes": _writes(by_request, peering=False),
            "peering_writes": _writes(by_request, peering=True),
            "rss_mib": operator.rss_mib()}


def _writes(by_request: Counter[str], *, peering: bool) -> int:
    """Write requests of the control loop, or (``peering``) kopf's keep-alive of its peering
    object, which a standalone operator does not make."""
    return sum(number for name, number in by_request.items()
               if name.split()[0] in WRITE_VERBS and ("kopfpeerings" in name) == peering)


class ReplicaWatch:
    """Records when each Deployment of a namespace changes ``spec.replicas`` (a watch)."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self._client = lightkube.Client(KubeConfig.from_file(plane.admin_kubeconfig))
        self.replicas: dict[str, int] = {}
        self.changed: dict[str, float] = {}
        self._lock = threading.Lock()
        self._namespace = namespace
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                for _, item in self._client.watch(Deployment, namespace=self._namespace):
                    body = item.to_dict()
                    name, replicas = body["metadata"]["name"], int(body["spec"]["replicas"])
                    with self._lock:
                        if self.replicas.get(name) != replicas:
                            self.changed[name] = time.time()
                        self.replicas[name] = replicas
            except Exception:  # the watch ended; follow again
                time.sleep(0.2)

    def all_at(self, replicas: int) -> bool:
        with self._lock:
            return len(self.replicas) == len(DEPLOYMENTS) and \
                set(self.replicas.values()) == {replicas}


def refused_writes(events: list[dict[str, Any]]) -> Counter[str]:
    """Write requests the API server refused, by request and status code."""
    return Counter(f"{request_name(event)} {event['responseStatus']['code']}"
                   for event in events if event["verb"] in WRITE_VERBS
                   and (event.get("responseStatus") or {}).get("code", 0) >= 400)


def drills(plane: ControlPlane, exporter: SimulatedExporter, count: int) -> list[float]:
    """Heat every GPU of namespace 0, time each Deployment's scale-up, cool, repeat."""
    import asyncio

    watch = ReplicaWatch(plane, NAMESPACES[0])
    eventually(lambda: watch.all_at(PODS_PER_DEPLOYMENT), timeout=120, what="replicas at 2")
    latencies: list[float] = []
    for _ in range(count):
        time.sleep(1.0 + (time.time() % 0.37))  # land anywhere in the tick
        started = time.time()
        asyncio.run(exporter.drill(utilization=0.99, temperatureCelsius=60))
        eventually(lambda: watch.all_at(PODS_PER_DEPLOYMENT + 1), timeout=60,
                   what="every target scaled up")
        latencies += [watch.changed[name] - started for name in DEPLOYMENTS]
        asyncio.run(exporter.cool(utilization=0.2))
        eventually(lambda: watch.all_at(PODS_PER_DEPLOYMENT), timeout=60,
                   what="every target back at 2")
    return latencies


def report(args: argparse.Namespace, figures: dict[str, Any], latencies: list[float],
           refused: Counter[str]) -> None:
    periods = figures["periods"]
    ticks = max(figures["ticks"], 1)
    print(f"tree {args.tree}  policies {args.policies}  steady window "
          f"{figures['elapsed']:.0f} s  policy ticks {figures['ticks']:.0f}")
    print(f"tick period per policy: median {statistics.median(periods):.2f} s, "
          f"p95 {percentile(periods, 0.95):.2f} s")
    if latencies:
        print(f"heat drill -> spec.replicas changed ({len(latencies)}): median "
              f"{statistics.median(latencies):.2f} s, p95 {percentile(latencies, 0.95):.2f} s")
        print("writes refused during the drills: " + (", ".join(
            f"{name} x{number}" for name, number in sorted(refused.items())) or "none"))
    print(f"operator RSS {figures['rss_mib']:.0f} MiB; CPU {100 * figures['cpu_share']:.0f} % "
          f"of a core, {figures['cpu_ms_per_tick']:.2f} ms per policy tick")
    print(f"write requests over the steady window: {figures['writes']} by the control loop, "
          f"{figures['peering_writes']} by kopf's peering keep-alive")
    print("API requests per policy tick, by verb and resource:")
    for name, number in sorted(figures["by_request"].items()):
        print(f"  {name:45} {number / ticks:.3f}   ({number} in the window)")
    if not figures["by_request"]:
        print("  none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the checkout whose operator and chart run (default: this one)")
    parser.add_argument("--steady", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--drills", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--standalone", action="store_true",
                        help="run the operator without peering (one replica, no keep-alive)")
    args = parser.parse_args()
    reason = missing_assets()
    if reason:
        sys.exit(reason)
    tree = args.tree.resolve()
    with tempfile.TemporaryDirectory(prefix="operator-scale-") as folder:
        plane = ControlPlane(Path(folder), Path(os.environ["KUBEBUILDER_ASSETS"])).start()
        exporters: list[SimulatedExporter] = []
        operator: Operator | None = None
        kubelet: FakeKubelet | None = None
        try:
            cluster = Cluster(plane)
            settings = [part for setting in RELEASE_SETTINGS for part in ("--set", setting)]
            cluster.run_tool("helm", "install", RELEASE, str(tree / "charts" / "meltguard"),
                             "--namespace", RELEASE_NAMESPACE, "--create-namespace",
                             "--wait=false", *settings)
            kubelet = FakeKubelet(cluster).start()
            exporters = build_world(cluster)
            for body in policies(args.policies, exporters):
                cluster.create(body)
            kubeconfig = cluster.service_account_kubeconfig(RELEASE_NAMESPACE, OPERATOR_SA)
            operator = Operator(tree, kubeconfig, Path(folder), profile=args.profile,
                                standalone=args.standalone)
            audit = Audit(plane, service_account_user(RELEASE_NAMESPACE, OPERATOR_SA))
            time.sleep(args.warmup)
            figures = steady_window(operator, audit, args.steady, args.policies)
            latencies = drills(plane, exporters[0], args.drills) if args.drills else []
            report(args, figures, latencies, refused_writes(audit.read()))
        finally:
            if operator is not None:
                operator.stop()
                if args.profile and operator.profile_file.is_file():
                    stats = pstats.Stats(str(operator.profile_file))
                    stats.sort_stats("tottime").print_stats(20)
            for exporter in exporters:
                exporter.stop()
            if kubelet is not None:
                kubelet.stop()
            plane.stop()


if __name__ == "__main__":
    main()
