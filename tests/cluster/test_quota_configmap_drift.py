"""The operator owns its quota ConfigMap, on a real kube-apiserver as the chart's operator
ServiceAccount: edited by hand, deleted, or stripped of the label the quota service selects
on, it is put back while the operator's limits stay the same (the ticks read the labelled
ConfigMaps from a watch), each time with a ``QuotasRestored`` Warning Event that says how it
was found; an annotation someone added is left alone."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import lightkube
import pytest
from lightkube.resources.core_v1 import ConfigMap, Event
from lightkube.types import PatchType

from meltguard.api.quotas import QUOTAS_LABEL, carries_quotas_label
from meltguard.k8s.client import Policy
from tests.k8s.harness import policy

from .cluster import (
    Cluster,
    eventually,
    operator_process,
    refusals_logged,
    remove_policies,
    start_gpu_fleet,
    stop_gpu_fleet,
)
from .conftest import RELEASE_NAMESPACE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NS = "drift"
QUOTAS = "imagegen-quotas"
#: The policy ticks every second (the harness's policy): a change is put back at the first
#: tick after the watch shows it; the rest is room for a loaded machine.
RESTORED_WITHIN_SECONDS = 15.0


def stored(cluster: Cluster) -> dict[str, Any] | None:
    """The quota ConfigMap as the API server holds it, None when there is none."""
    try:
        return cluster.get(ConfigMap, QUOTAS, NS)
    except lightkube.ApiError as error:
        if error.status.code == 404:
            return None
        raise


def limits(configmap: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``quotas.json`` says, its time aside (the operator stamps each write)."""
    if configmap is None:
        return None
    document = json.loads((configmap.get("data") or {}).get("quotas.json") or "{}")
    document.pop("updated", None)
    return dict(document)


def restore_messages(cluster: Cluster) -> list[str]:
    """The messages of the QuotasRestored Events on the policy."""
    events = [event for event in cluster.admin.list(Event, namespace=NS)
              if event.involvedObject.name == "imagegen" and event.reason == "QuotasRestored"]
    assert all(event.type == "Warning" for event in events)
    return [str(event.message) for event in events]


def hand_edited(document: dict[str, Any]) -> str:
    """``quotas.json`` with every limited tier's limit raised tenfold, as a person might."""
    tiers = [{**tier, "limit": tier["limit"] * 10} if "limit" in tier else tier
             for tier in document["tiers"]]
    return json.dumps({**document, "tiers": tiers, "updated": "2020-01-01T00:00:00Z"})


def patched(cluster: Cluster, patch: dict[str, Any]) -> dict[str, Any]:
    """The quota ConfigMap as the API server answered a merge ``patch`` of it (read back
    later, it may already be put back)."""
    answer = cluster.admin.patch(ConfigMap, QUOTAS, patch, namespace=NS,
                                 patch_type=PatchType.MERGE)
    return dict(answer.to_dict())


def restored(cluster: Cluster, published: dict[str, Any], message: str) -> float:
    """Seconds until the ConfigMap says ``published`` again, labelled, and the Event with
    ``message`` was posted."""
    started = time.monotonic()
    eventually(lambda: carries_quotas_label(now := stored(cluster) or {})
               and limits(now) == published,
               timeout=RESTORED_WITHIN_SECONDS, every=0.05, what=f"the ConfigMap {message}")
    took = time.monotonic() - started
    eventually(lambda: any(message in text for text in restore_messages(cluster)),
               what=f"a QuotasRestored Event: {message}")
    return took


def test_the_quota_configmap_is_put_back_after_an_edit_a_deletion_and_a_lost_label(
        cluster: Cluster, tmp_path: Path) -> None:
    exporter = start_gpu_fleet(cluster, NS, "worker", 2)
    asyncio.run(exporter.cool())
    kubeconfig = cluster.service_account_kubeconfig(RELEASE_NAMESPACE, "meltguard-operator")
    log = tmp_path / "operator.log"
    try:
        with operator_process(kubeconfig, log, "--all-namespaces", "--peering=meltguard",
                              "--priority=100"):
            cluster.create(policy(NS, "imagegen", "worker", exporter.port))
            eventually(lambda: (cluster.get(Policy, "imagegen", NS).get("status") or {})
                       .get("phase") == "Cool"
                       and (limits(stored(cluster)) or {}).get("phase") == "Cool",
                       timeout=60, what="the Cool limits published")
            published = limits(stored(cluster))
            assert published is not None

            edited = patched(cluster, {
                "metadata": {"annotations": {"example.com/note": "raised by hand"}},
                "data": {"quotas.json": hand_edited(published)}})
            assert limits(edited) != published
            took = restored(cluster, published, "was edited by someone else")
            print(f"hand edit undone after {took:.2f} s")
            annotations = (stored(cluster) or {})["metadata"].get("annotations") or {}
            assert annotations.get("example.com/note") == "raised by hand"

            cluster.admin.delete(ConfigMap, QUOTAS, namespace=NS)
            took = restored(cluster, published, "was deleted by someone else")
            print(f"deleted ConfigMap recreated after {took:.2f} s")

            unlabelled = patched(cluster, {"metadata": {"labels": {QUOTAS_LABEL: None}}})
            assert not carries_quotas_label(unlabelled)
            took = restored(cluster, published, f"lost its label {QUOTAS_LABEL}=true")
            print(f"removed label put back after {took:.2f} s")

            messages = restore_messages(cluster)
            time.sleep(3)  # steady again: no further write, no further Event
            assert restore_messages(cluster) == messages
            print("\n".join(messages))
    finally:
        remove_policies(cluster, NS)
        stop_gpu_fleet(cluster, NS, "worker", exporter)
    text = log.read_text()
    assert refusals_logged(text) == [], text[-3000:]
    logged = [line for line in text.splitlines() if f"quota ConfigMap {NS}/{QUOTAS}" in line]
    assert len(logged) == 3 and all("WARNING" in line for line in logged), logged
