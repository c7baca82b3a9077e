"""Two operator shards on a real kube-apiserver, installed by the chart (``operator.shards``):
each shard is an active operator and a standby under the shard's own KopfPeering, logged in as
the shard's ServiceAccount. Each reconciles only its own namespace's policy (the API server's
audit log shows who read and wrote what); SIGKILL of one shard's active operator: its standby
takes over, and the other shard goes on ticking through the takeover as if nothing happened."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from lightkube.generic_resource import create_namespaced_resource

from tests.k8s.harness import SimulatedExporter, free_port, policy

from .cluster import (
    Cluster,
    MeltguardProcess,
    audited,
    deployment_replicas,
    eventually,
    refused,
    remove_policies,
    service_account_user,
    start_gpu_fleet,
    stop_gpu_fleet,
    ticks_served,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]

RELEASE, RELEASE_NS = "shards", "shards-system"
SHARDS = ("a", "b")
KopfPeering = create_namespaced_resource("kopf.dev", "v1", "KopfPeering", "kopfpeerings")


def namespace_of(shard: str) -> str:
    return f"shard-{shard}"


def user_of(shard: str) -> str:
    """Who a shard's operators are, to the API server: the shard's own ServiceAccount."""
    return service_account_user(RELEASE_NS, f"{RELEASE}-meltguard-operator-{shard}")


@dataclass
class Operator:
    """``meltguard operator`` with its metrics served, where its ticks are counted."""

    process: MeltguardProcess
    metrics_port: int

    def ticks(self) -> int:
        return ticks_served(self.metrics_port)

    def paused(self) -> bool:
        """Whether kopf's last word on the peering was to pause (a standby's state)."""
        said = [line for line in self.process.text().splitlines()
                if "Pausing operations" in line or "Resuming operations" in line]
        return bool(said) and "Pausing operations" in said[-1]


@dataclass
class Shard:
    """One shard as the test runs it: its namespace, fleet, and its two operators."""

    name: str
    exporter: SimulatedExporter
    active: Operator
    standby: Operator

    @property
    def namespace(self) -> str:
        return namespace_of(self.name)


@pytest.fixture(scope="module")
def sharded(cluster: Cluster) -> Cluster:
    """The chart installed with two shards, one namespace each, peering with a standby."""
    settings = ["operator.peering.enabled=true", "operator.replicas=0",
                "exporter.enabled=false", "quotaServer.replicas=0",
                "monitoring.dashboard.enabled=false"]
    for index, shard in enumerate(SHARDS):
        cluster.namespace(namespace_of(shard))
        settings += [f"operator.shards[{index}].name={shard}",
                     f"operator.shards[{index}].namespaces={{{namespace_of(shard)}}}"]
    cluster.helm_install(RELEASE, RELEASE_NS, *settings)
    return cluster


def peers_alive(cluster: Cluster, shard: str) -> list[int]:
    """The priorities of the operators alive in the shard's KopfPeering."""
    peering = cluster.get(KopfPeering, f"meltguard-{shard}", namespace_of(shard))
    peers = peering.get("status") or {}
    return sorted(int(peer.get("priority", 0)) for peer in peers.values()
                  if isinstance(peer, dict) and peer.get("lifetime", 0) > 0)


def both_alive(cluster: Cluster, shard: Shard) -> bool:
    """Whether the shard's active and standby operators are both in its peering."""
    return peers_alive(cluster, shard.name) == [50, 100]


def scaled_to(cluster: Cluster, shard: Shard, replicas: int) -> bool:
    return deployment_replicas(cluster, shard.namespace, f"worker-{shard.name}") == replicas


def start_shard(cluster: Cluster, shard: str, logs: Path) -> Shard:
    """The shard's fleet, its active and standby operators (both in its peering), its policy."""
    namespace = namespace_of(shard)
    exporter = start_gpu_fleet(cluster, namespace, f"worker-{shard}", 2)
    kubeconfig = cluster.service_account_kubeconfig(RELEASE_NS,
                                                    f"{RELEASE}-meltguard-operator-{shard}")

    def operator(role: str, priority: int) -> Operator:
        port = free_port()
        args = ["operator", f"--metrics-port={port}", "--liveness=", f"--namespace={namespace}",
                f"--peering=meltguard-{shard}", f"--priority={priority}"]
        return Operator(MeltguardProcess(kubeconfig, args, logs / f"{shard}-{role}.log"), port)

    return Shard(shard, exporter, operator("active", 100), operator("standby", 50))


@pytest.fixture
def shards(sharded: Cluster, tmp_path: Path) -> Iterator[dict[str, Shard]]:
    started: dict[str, Shard] = {}
    try:
        for name in SHARDS:
            started[name] = start_shard(sharded, name, tmp_path)
        yield started
    finally:
        for shard in started.values():
            for operator in (shard.active.process, shard.standby.process):
                if operator.process.poll() is None:
                    operator.stop()
            remove_policies(sharded, shard.namespace)
            stop_gpu_fleet(sharded, shard.namespace, f"worker-{shard.name}", shard.exporter)


def through_takeover(failed: Shard, other: Shard) -> tuple[float, list[float]]:
    """Watch both shards from now until the failed shard's standby ticks: when it did, and
    each moment the other shard's tick count was seen to grow meanwhile."""
    grew, seen = [], other.active.ticks()
    deadline = time.monotonic() + 60
    while failed.standby.ticks() == 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"shard {failed.name}'s standby never ticked within 60 s")
        count = other.active.ticks()
        if count > seen:
            grew.append(time.monotonic())
            seen = count
        time.sleep(0.05)
    return time.monotonic(), grew


def namespaces_touched(events: list[dict[str, Any]]) -> set[str]:
    return {event["objectRef"].get("namespace", "(cluster)") for event in events}


def writers(cluster: Cluster, namespace: str, since: int) -> set[str]:
    """Every ServiceAccount that wrote anything in ``namespace`` (the audit log keeps only
    ServiceAccounts' requests: the tests' own admin writes are not there)."""
    return {event["user"]["username"] for event in cluster.plane.audit_events()[since:]
            if event.get("stage") == "ResponseComplete"
            and event.get("objectRef", {}).get("namespace") == namespace
            and event["verb"] in {"create", "update", "patch", "delete"}}


def test_each_shard_reconciles_its_own_and_survives_the_others_failover(
        sharded: Cluster, shards: dict[str, Shard]) -> None:
    cluster = sharded
    since = len(cluster.plane.audit_events())
    for shard in shards.values():
        eventually(partial(both_alive, cluster, shard), timeout=60,
                   what=f"both operators of shard {shard.name} in its peering")
        cluster.create(policy(shard.namespace, "imagegen", f"worker-{shard.name}",
                              shard.exporter.port, minReplicas=3, maxReplicas=3))
    for shard in shards.values():
        eventually(partial(scaled_to, cluster, shard, 3), timeout=60,
                   what=f"shard {shard.name}'s target scaled to minReplicas")

    a, b = shards["a"], shards["b"]
    eventually(lambda: a.active.ticks() > 1 and b.active.ticks() > 1, what="both shards ticking")
    assert [shard.standby.ticks() for shard in (a, b)] == [0, 0], "a standby acted"

    # SIGKILL of shard a's active operator, while both shards tick every second.
    a.active.process.kill()
    killed = time.monotonic()
    resumed, b_grew = through_takeover(a, b)
    b_longest = max(later - earlier for earlier, later in pairwise([killed, *b_grew, resumed]))
    print(f"shard a: no tick for {resumed - killed:.1f} s (active killed -> its standby's "
          f"first tick); shard b meanwhile: {len(b_grew)} times more ticks seen, longest "
          f"wait {b_longest:.1f} s")
    assert not a.standby.paused()
    assert b_longest < (resumed - killed) / 2, "shard b paused with shard a"
    # b's standby never acted (kopf's pause/resume log lines can flicker when the machine is
    # so loaded that a keep-alive comes late; ticks are what a standby must not make)
    assert b.standby.ticks() == 0 and b.active.process.process.poll() is None

    # Each shard read and wrote only in its own namespace, and nothing was refused to it.
    for shard in shards.values():
        events = audited(cluster, user_of(shard.name), since)
        assert refused(events) == []
        assert namespaces_touched(events) == {shard.namespace}, shard.name
        assert writers(cluster, shard.namespace, since) == {user_of(shard.name)}
