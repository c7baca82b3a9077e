"""The chart installed for a list of namespaces (``operator.watchNamespaces={scoped}``), with
peering, on a real kube-apiserver: the loop runs under the release's ServiceAccounts with the
exporters in the release namespace, zero 403s and every rule used; then each rule of the
operator's Roles is taken away in turn, and what breaks is shown by the API server's own 403."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import ConfigMap
from lightkube.resources.rbac_authorization_v1 import Role

from meltguard.k8s.client import Policy
from meltguard.k8s.rbac import API_CALLS
from tests.k8s.harness import SimulatedExporter, free_port, policy

from .cluster import (
    Cluster,
    MeltguardProcess,
    api_verb,
    audited,
    deployment_replicas,
    eventually,
    gpu_deployment,
    operator_process,
    refusals_logged,
    refused,
    remove_policies,
    service_account_user,
    start_gpu_fleet,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

RELEASE, RELEASE_NS, NS = "scoped", "scoped-system", "scoped"
OPERATOR = f"{RELEASE}-meltguard-operator"
QUOTA_SERVER = f"{RELEASE}-meltguard-quota-server"


def scoped_policy(name: str, target: str, port: int, **spec: Any) -> dict[str, Any]:
    body = policy(NS, name, target, port, **spec)
    body["spec"]["telemetry"]["exporter"]["namespace"] = RELEASE_NS  # the exporters' home
    return body


def free_limit(cluster: Cluster) -> int:
    data = cluster.get(ConfigMap, "imagegen-quotas", NS)["data"]
    return int(next(tier["limit"] for tier in json.loads(data["quotas.json"])["tiers"]
                    if tier["name"] == "free"))


def served(cluster: Cluster) -> bool:
    """Whether the operator has published the quota ConfigMap of ``imagegen``."""
    return any(item.metadata.name == "imagegen-quotas"
               for item in cluster.admin.list(ConfigMap, namespace=NS))


def served_limit(url: str) -> Any:
    query = urllib.parse.urlencode({"policy": f"{NS}/imagegen", "tier": "free", "subject": "u"})
    try:
        with urllib.request.urlopen(f"{url}/v1/quota?{query}", timeout=2) as answer:
            return json.loads(answer.read()).get("limit")
    except OSError:
        return None


@pytest.fixture(scope="module")
def scoped(cluster: Cluster) -> Cluster:
    """The second release, for namespace ``scoped`` only, exporters in ``scoped-system``."""
    cluster.namespace(NS)
    cluster.helm_install(RELEASE, RELEASE_NS, "operator.watchNamespaces={scoped}",
                         "operator.peering.enabled=true", "operator.replicas=0",
                         "exporter.enabled=false", "quotaServer.replicas=0",
                         "monitoring.dashboard.enabled=false")
    return cluster


def test_the_loop_under_the_scoped_releases_service_accounts(scoped: Cluster,
                                                             tmp_path: Path) -> None:
    cluster = scoped
    exporter = start_gpu_fleet(cluster, NS, "worker", 2, exporter_namespace=RELEASE_NS)
    cluster.create(gpu_deployment(NS, "sts-worker", 1, kind="StatefulSet"))
    user = service_account_user(RELEASE_NS, OPERATOR)
    audit_start = len(cluster.plane.audit_events())
    operator_log, quota_log = tmp_path / "operator.log", tmp_path / "quota-server.log"
    port = free_port()
    quota_url = f"http://127.0.0.1:{port}"
    try:
        with operator_process(cluster.service_account_kubeconfig(RELEASE_NS, OPERATOR),
                              operator_log, f"--namespace={NS}", "--peering=meltguard",
                              "--priority=100"), \
                MeltguardProcess(cluster.service_account_kubeconfig(RELEASE_NS, QUOTA_SERVER),
                                 ["quota-server", "--host", "127.0.0.1", "--port", str(port),
                                  "--grpc-port", "0", f"--watch-configmaps={NS}"], quota_log):
            cluster.create(scoped_policy("imagegen", "worker", exporter.port, maxReplicas=3))
            sts = scoped_policy("sts", "sts-worker", exporter.port, minReplicas=2)
            sts["spec"]["scaleTargetRef"]["kind"] = "StatefulSet"
            cluster.create(sts)
            eventually(lambda: served_limit(quota_url) == 3, timeout=60,
                       what="the operator's quotas served by the quota server")
            asyncio.run(exporter.heat(throttled=True))
            eventually(lambda: deployment_replicas(cluster, NS, "worker") == 3, timeout=30,
                       what="a scale-up")
            eventually(lambda: free_limit(cluster) < 3, timeout=30, what="quotas tightened")
            eventually(lambda: served_limit(quota_url) == free_limit(cluster), timeout=10,
                       what="the tightened limit in force at the quota server")
            eventually(lambda: cluster.get(StatefulSet, "sts-worker", NS)["spec"]["replicas"]
                       == 2, what="the StatefulSet scaled")
    finally:
        exporter.stop()
        remove_policies(cluster, NS)
    for log in (operator_log, quota_log):
        assert refusals_logged(log.read_text()) == [], log
    events = audited(cluster, user, audit_start)
    assert refused(events) == []
    quota_events = audited(cluster, service_account_user(RELEASE_NS, QUOTA_SERVER), audit_start)
    assert refused(quota_events) == [] and quota_events
    granted = {(call.group, call.resource, verb) for call in API_CALLS
               if call.scope in ("watched", "peering", "exporters") for verb in call.verbs}
    assert {api_verb(event) for event in events} == granted
    exporter_lists = [event for event in events if event["objectRef"].get("namespace")
                      == RELEASE_NS and api_verb(event) == ("", "pods", "list")]
    assert exporter_lists, "the exporters were looked up in the release namespace"
    print(f"{len(events)} audited requests as {user}, {len(granted)} permissions, all used, "
          f"no 403; quota server: {len(quota_events)} requests, no 403")


# ---- least privilege -------------------------------------------------------------------


class Running:
    """What a rule's trigger acts on: the cluster, the exporter, the operator process."""

    def __init__(self, cluster: Cluster, exporter: SimulatedExporter, log: Path) -> None:
        self.cluster, self.exporter, self.log = cluster, exporter, log
        self.kubeconfig = cluster.service_account_kubeconfig(RELEASE_NS, OPERATOR)
        self.starts = 0
        self.operator = self._start()

    def _start(self) -> MeltguardProcess:
        self.starts += 1
        return operator_process(self.kubeconfig, self.log.with_suffix(f".{self.starts}.log"),
                                f"--namespace={NS}", "--peering=meltguard", "--priority=100")

    def restart(self) -> None:
        self.operator.stop()
        self.operator = self._start()

    def stop(self) -> None:
        self.operator.stop()


Trigger = Callable[[Running], None]


def no_trigger(_: Running) -> None:
    """The call is made at every keep-alive anyway."""


def restart(running: Running) -> None:
    """A watch cache lists when it starts: a restarted operator must list again."""
    running.restart()


def heat(running: Running) -> None:
    asyncio.run(running.exporter.heat(throttled=True))


def cool(running: Running) -> None:
    asyncio.run(running.exporter.cool())


def raise_statefulset_floor(running: Running) -> None:
    """The StatefulSet policy's floor goes up by one: its target must be scaled."""
    floor = running.cluster.get(Policy, "sts", NS)["spec"]["minReplicas"]
    running.cluster.patch(Policy, "sts", {"spec": {"minReplicas": floor + 1}}, NS)


def edit_spec(running: Running) -> None:
    """A spec change: kopf handles it and records it in its annotation (a patch)."""
    ceiling = running.cluster.get(Policy, "imagegen", NS)["spec"]["maxReplicas"]
    running.cluster.patch(Policy, "imagegen", {"spec": {"maxReplicas": ceiling + 1}}, NS)


#: (namespace of the Role, resource of the rule, what makes the operator call it now); the
#: writes happen only on change, so heat and cool take turns to change something each time.
RULES: list[tuple[str, str, Trigger]] = [
    (RELEASE_NS, "pods", restart),
    (NS, "pods", restart),
    (NS, "deployments", restart),
    (NS, "statefulsets", restart),
    (NS, "deployments/scale", heat),
    (NS, "statefulsets/scale", raise_statefulset_floor),
    (NS, "configmaps", cool),
    (NS, "imagequotapolicies/status", heat),
    (NS, "events", cool),
    (NS, "imagequotapolicies", edit_spec),
    (NS, "kopfpeerings", no_trigger),  # last: kopf may give up without its peering
]


def why(resource: str, namespace: str) -> str:
    scope = "exporters" if namespace == RELEASE_NS else None
    return next(call.why for call in API_CALLS if call.resource == resource
                and (scope is None or call.scope == scope))


def test_every_rule_of_the_operators_roles_is_needed(scoped: Cluster, tmp_path: Path) -> None:
    """Each rule taken away in turn (the others kept) while the operator runs: the API server
    refuses the calls that rule allowed, which is the behaviour that breaks."""
    cluster = scoped
    exporter = start_gpu_fleet(cluster, NS, "solo", 2, exporter_namespace=RELEASE_NS)
    cluster.create(gpu_deployment(NS, "sts-solo", 2, kind="StatefulSet"))
    user = service_account_user(RELEASE_NS, OPERATOR)
    roles = {namespace: cluster.get(Role, OPERATOR, namespace) for namespace in (NS, RELEASE_NS)}
    assert len(RULES) == sum(len(role["rules"]) for role in roles.values()), "a rule untried"
    running = Running(cluster, exporter, tmp_path / "operator")
    try:
        cluster.create(scoped_policy("imagegen", "solo", exporter.port, maxReplicas=3))
        sts = scoped_policy("sts", "sts-solo", exporter.port, minReplicas=2, maxReplicas=9)
        sts["spec"]["scaleTargetRef"]["kind"] = "StatefulSet"
        cluster.create(sts)
        eventually(lambda: served(cluster), timeout=60, what="a first tick")
        for namespace, resource, trigger in RULES:
            rules = roles[namespace]["rules"]
            kept = [rule for rule in rules if rule["resources"] != [resource]]
            assert len(kept) == len(rules) - 1, f"no rule for {resource} in {namespace}"
            since = len(cluster.plane.audit_events())
            cluster.patch(Role, OPERATOR, {"rules": kept}, namespace)
            started = time.monotonic()
            try:
                trigger(running)
                denied = eventually(
                    lambda resource=resource, since=since: [
                        event for event in audited(cluster, user, since)
                        if event.get("responseStatus", {}).get("code") == 403
                        and api_verb(event)[1] == resource],
                    timeout=30, what=f"a refused call without the {resource} rule")
            finally:
                cluster.patch(Role, OPERATOR, {"rules": rules}, namespace)
            print(f"without {resource} in {namespace}: {denied[0]['verb']} refused after "
                  f"{time.monotonic() - started:.1f} s -> {why(resource, namespace)}")
    finally:
        running.stop()
        exporter.stop()
        remove_policies(cluster, NS)
