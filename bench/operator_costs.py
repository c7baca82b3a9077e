"""The operator's per-unit costs, measured small: ``meltguard operator`` as a process of its
own, logged in to the kmock API server of tests/k8s (served from this process).

Three runs, each on a fresh API server: ``policies`` policies of one GPU each, four times as
many, and ``policies`` policies of ``gpus`` GPUs each. Every policy scales its own Deployment
and reads one simulated exporter process holding the run's GPUs, ticking every second. After a
warm-up (two ticks per policy, so that the first writes are behind), over a window each run
counts:

* ticks (``meltguard_reconcile_seconds_count`` on the operator's metrics port) and the API
  requests the server saw in that window (watches excluded): requests per policy per tick;
* the operator process's CPU (``/proc``) per tick: a policy's tick, its telemetry read of the
  run's small exporter included;
* the operator's resident memory at the end of the window. The slopes between runs give MiB
  per policy and per GPU; the first run less its policies' share gives the base.

bench/operator_scale.py (issue 18) measures the same on a real kube-apiserver, at 50 and 200
policies; ``bench/scale_model.py --operator-figures`` takes its figures instead.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import kmock
import yaml

from bench.procstat import cpu_seconds, rss_mib
from bench.quota_stores import free_port
from tests.cluster.cluster import MeltguardProcess, ticks_served
from tests.cluster.envtest import kubeconfig
from tests.k8s.harness import (
    DEPLOYMENTS,
    EXPORTER_LABELS,
    PODS,
    POLICIES,
    SimulatedExporter,
    add_namespaces,
    declare_resources,
    deployment,
    pod,
    policy,
    server_url,
)
from tests.k8s.kmock_apiserver import ApiServer

NAMESPACE = "bench"
WARM_UP_TICKS = 2
WARM_UP_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Run:
    """What one run measured."""

    policies: int
    gpus: int
    ticks: int
    requests: int
    cpu_seconds: float
    rss_mib: float

    @property
    def requests_per_tick(self) -> float:
        return self.requests / max(self.ticks, 1)

    @property
    def cpu_ms_per_tick(self) -> float:
        return self.cpu_seconds * 1e3 / max(self.ticks, 1)


@dataclass(frozen=True, slots=True)
class OperatorCosts:
    """The per-unit figures the scale model uses, and the runs they came from."""

    cpu_ms_per_tick: float
    api_calls_per_tick: float
    mib_per_policy: float
    mib_per_gpu: float
    base_mib: float
    runs: tuple[Run, ...]


def requests_so_far(server: ApiServer) -> int:
    return sum(1 for request in server.request_log if request.params.get("watch") != "true")


def stage_fleet(server: ApiServer, policies: int, gpus: int) -> SimulatedExporter:
    """``policies`` Deployments of ``gpus`` pods each, one exporter serving all their GPUs."""
    add_namespaces(server, NAMESPACE)
    attached = []
    for index in range(policies):
        name = f"worker-{index}"
        server.create_object(DEPLOYMENTS, deployment(NAMESPACE, name, gpus))
        for replica in range(gpus):
            server.create_object(PODS, pod(NAMESPACE, f"{name}-{replica}", {"app": name}))
            attached.append(f"{NAMESPACE}/{name}-{replica}")
    exporter = SimulatedExporter(len(attached), attached).start()
    server.create_object(PODS, pod(NAMESPACE, "exporter", EXPORTER_LABELS))
    for index in range(policies):
        server.create_object(POLICIES, policy(NAMESPACE, f"policy-{index}", f"worker-{index}",
                                              exporter.port, minReplicas=gpus,
                                              maxReplicas=gpus))
    return exporter


async def warmed_up(metrics_port: int, policies: int) -> int:
    """Wait until every policy has ticked twice on average (its first writes behind it);
    returns the tick count then."""
    deadline = time.monotonic() + WARM_UP_TIMEOUT_SECONDS
    while (ticks := await asyncio.to_thread(ticks_served, metrics_port)) < WARM_UP_TICKS * policies:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{policies} policies: {ticks} ticks after "
                               f"{WARM_UP_TIMEOUT_SECONDS:.0f} s of warm-up")
        await asyncio.sleep(0.2)
    return ticks


async def run_once(policies: int, gpus: int, *, window: float, scratch: Path) -> Run:
    """One run on a fresh API server: warm up, then count over ``window`` seconds."""
    async with ApiServer() as server, kmock.Server(server):
        declare_resources(server)
        exporter = stage_fleet(server, policies, gpus)
        config = scratch / f"kubeconfig-{policies}-{gpus}"
        config.write_text(yaml.safe_dump(kubeconfig(server_url(server), {}, {}, NAMESPACE)))
        port = free_port()
        operator = MeltguardProcess(config, ["operator", f"--namespace={NAMESPACE}",
                                             f"--metrics-port={port}", "--liveness="],
                                    scratch / f"operator-{policies}-{gpus}.log")
        pid = operator.process.pid
        try:
            ticks = await warmed_up(port, policies)
            requests, cpu = requests_so_far(server), cpu_seconds(pid)
            await asyncio.sleep(window)
            return Run(policies=policies, gpus=gpus,
                       ticks=await asyncio.to_thread(ticks_served, port) - ticks,
                       requests=requests_so_far(server) - requests,
                       cpu_seconds=cpu_seconds(pid) - cpu, rss_mib=rss_mib(pid))
        finally:
            await asyncio.to_thread(operator.stop)
            exporter.stop()


def measure(policies: int = 10, gpus: int = 32, window: float = 6.0) -> OperatorCosts:
    """The three runs and the figures drawn from them."""
    with tempfile.TemporaryDirectory() as scratch:
        runs = tuple(asyncio.run(run_once(count, per_policy, window=window, scratch=Path(scratch)))
                     for count, per_policy in ((policies, 1), (4 * policies, 1),
                                               (policies, gpus)))
    few, many, wide = runs
    per_policy = max(0.0, (many.rss_mib - few.rss_mib) / (many.policies - few.policies))
    per_gpu = max(0.0, (wide.rss_mib - few.rss_mib) / (policies * (gpus - 1)))
    return OperatorCosts(
        cpu_ms_per_tick=many.cpu_ms_per_tick,
        api_calls_per_tick=many.requests_per_tick,
        mib_per_policy=per_policy,
        mib_per_gpu=per_gpu,
        base_mib=max(0.0, few.rss_mib - few.policies * (per_policy + per_gpu)),
        runs=runs)
