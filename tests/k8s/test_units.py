"""The operator's pure pieces: pods waiting for GPUs, endpoints, ConfigMap and status bodies,
holds, intervals, metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meltguard.api.quotas import carries_quotas_label
from meltguard.api.state import ControllerState
from meltguard.api.validation import parse_spec
from meltguard.core.decide import decide
from meltguard.core.observation import GpuSample, Observation
from meltguard.k8s.act import (
    Published,
    configmap_name,
    data_patch,
    envoy_domain,
    label_patch,
    merge_patch_between,
    publishes_the_same,
    quota_configmap,
    quota_document,
    restored_note,
)
from meltguard.k8s.handlers import interval_of, until_next_tick
from meltguard.k8s.metrics import METRIC_NAMES, OperatorMetrics
from meltguard.k8s.reconcile import Reconciler, held_decision, hold_reason
from meltguard.k8s.world import running_ip, waits_for_gpu

from .harness import pod, policy
from .kmock_apiserver import merge_patch

NOW = 1_800_000_000.0
POLICY = {**policy("inference", "imagegen", "worker"),
          "metadata": {"name": "imagegen", "namespace": "inference", "uid": "u-1",
                       "generation": 3}}
SPEC = parse_spec(POLICY["spec"])


def melting_decision(replicas: int = 2) -> Any:
    samples = tuple(GpuSample(uuid=f"GPU-{i}", utilization=0.99, temperature_celsius=91,
                              memory_used_bytes=1, memory_total_bytes=2, sampled_at=NOW,
                              namespace="inference", pod=f"worker-{i}",
                              throttle_reasons=frozenset({"hw_thermal"}))
                    for i in range(replicas))
    return decide(SPEC, ControllerState.initial(), Observation(samples, replicas), now=NOW)


@pytest.mark.parametrize(("message", "phase", "expected"), [
    ("0/8 nodes are available: 8 Insufficient nvidia.com/gpu.", "Pending", True),
    ("0/8 nodes are available: 8 Insufficient memory.", "Pending", False),
    ("0/8 nodes are available: 8 Insufficient nvidia.com/gpu.", "Running", False),
])
def test_pods_waiting_for_gpus(message: str, phase: str, expected: bool) -> None:
    body = pod("ns", "p", {}, waiting_for_gpu=True)
    body["status"]["phase"] = phase
    body["status"]["conditions"][0]["message"] = message
    assert waits_for_gpu(body) is expected


def test_endpoints_only_for_running_pods_with_an_ip() -> None:
    assert running_ip(pod("ns", "p", {}, ip="10.0.0.7")) == "10.0.0.7"
    assert running_ip(pod("ns", "p", {}, waiting_for_gpu=True)) is None
    assert running_ip(pod("ns", "p", {}, ip=None)) is None
    deleting = pod("ns", "p", {})
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert running_ip(deleting) is None


@pytest.mark.parametrize(("old", "new"), [
    ({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 2}}),
    ({"hotSince": {"GPU-1": 1.0}}, {"hotSince": {}}),
    ({}, {"x": [1, 2], "y": {"z": 1}}),
    ({"x": {"y": 1}}, {"x": 5}),
])
def test_merge_patch_between_turns_old_into_exactly_new(old: dict[str, Any],
                                                         new: dict[str, Any]) -> None:
    assert merge_patch(old, merge_patch_between(old, new)) == new


def test_merge_patch_between_is_empty_when_nothing_changed() -> None:
    assert merge_patch_between({"a": {"b": 1}}, {"a": {"b": 1}}) == {}


def test_quota_configmap_has_both_keys_label_and_owner() -> None:
    decision = melting_decision()
    document = quota_document(POLICY, decision, NOW, envoy_domain("imagegen", SPEC))
    body = quota_configmap(POLICY, SPEC, document)
    assert body["metadata"]["name"] == configmap_name("imagegen", SPEC) == "imagegen-quotas"
    assert body["metadata"]["labels"] == {"meltguard.io/quotas": "true"}
    owner = body["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ImageQuotaPolicy", "u-1", True)
    quotas = json.loads(body["data"]["quotas.json"])
    assert quotas["policy"] == "inference/imagegen" and quotas["observedGeneration"] == 3
    assert [tier["name"] for tier in quotas["tiers"]] == ["free", "plus", "pro"]
    assert quotas["tiers"][2] == {"name": "pro", "unlimited": True}
    envoy = yaml.safe_load(body["data"]["config.yaml"])
    assert envoy["domain"] == quotas["envoyDomain"] == "imagegen"
    assert [d["value"] for d in envoy["descriptors"]] == ["free", "plus", "pro"]


def test_a_configmap_saying_the_same_is_not_rewritten_and_a_corrupt_one_is() -> None:
    decision = melting_decision()
    body = quota_configmap(POLICY, SPEC, quota_document(POLICY, decision, NOW))
    later = quota_document(POLICY, decision, NOW + 60)
    wanted = quota_configmap(POLICY, SPEC, later)
    assert publishes_the_same(body["data"], wanted, later)
    assert not publishes_the_same({**body["data"], "quotas.json": "{not json"}, wanted, later)
    assert not publishes_the_same({}, wanted, later)
    assert not publishes_the_same(None, wanted, later)


def edited(data: dict[str, str], **changes: str) -> dict[str, str]:
    return {**data, **changes}


def test_a_configmap_edited_by_hand_in_any_key_is_not_the_same() -> None:
    document = quota_document(POLICY, melting_decision(), NOW, "imagegen")
    body = quota_configmap(POLICY, SPEC, document)
    quotas = json.loads(body["data"]["quotas.json"])
    quotas["tiers"][0]["limit"] = 500
    hand_edits = [
        edited(body["data"], **{"quotas.json": json.dumps(quotas)}),
        edited(body["data"], **{"config.yaml": body["data"]["config.yaml"] + "# edited\n"}),
        edited(body["data"], extra="added by hand"),
        {"quotas.json": body["data"]["quotas.json"]},
    ]
    assert [publishes_the_same(data, body, document) for data in hand_edits] == [False] * 4
    assert publishes_the_same(dict(body["data"]), body, document)


def test_the_data_patch_restores_the_data_and_label_and_keeps_what_others_added() -> None:
    document = quota_document(POLICY, melting_decision(), NOW, "imagegen")
    body = quota_configmap(POLICY, SPEC, document)
    existing = {"metadata": {**body["metadata"], "labels": {"team": "a"},
                             "annotations": {"note": "hand edit"}, "resourceVersion": "7"},
                "data": {"quotas.json": "{}", "extra": "x"}}
    restored = merge_patch(existing, data_patch(existing, body, "7"))
    assert restored["data"] == body["data"]
    assert restored["metadata"]["labels"] == {"team": "a", "meltguard.io/quotas": "true"}
    assert restored["metadata"]["annotations"] == {"note": "hand edit"}
    assert carries_quotas_label(restored) and not carries_quotas_label(existing)
    relabelled = merge_patch(existing, label_patch("7"))
    assert relabelled["data"] == existing["data"] and carries_quotas_label(relabelled)


@pytest.mark.parametrize(("published", "says"), [
    (Published.CREATED, "was deleted by someone else"),
    (Published.UPDATED, "was edited by someone else"),
    (Published.RELABELLED, "lost its label meltguard.io/quotas=true"),
])
def test_a_restored_configmap_is_reported_with_how_it_was_found(published: Published,
                                                               says: str) -> None:
    note = restored_note("inference", "imagegen-quotas", published)
    assert (note.type, note.reason) == ("Warning", "QuotasRestored")
    assert note.message.startswith(f"quota ConfigMap inference/imagegen-quotas {says}")


def test_nothing_restored_is_no_event() -> None:
    with pytest.raises(ValueError, match="nothing was restored"):
        restored_note("inference", "imagegen-quotas", Published.SAME)


def test_holds() -> None:
    assert hold_reason(POLICY, SPEC) is None
    assert hold_reason(POLICY, SPEC.model_copy(update={"dry_run": True})) == "DryRun"
    assert hold_reason(POLICY, SPEC.model_copy(update={"paused": True})) == "Paused"
    annotated = {**POLICY, "metadata": {**POLICY["metadata"],
                                        "annotations": {"meltguard.io/paused": "true"}}}
    assert hold_reason(annotated, SPEC) == "Paused"
    decision = melting_decision()
    held = held_decision(decision, "DryRun", reported_desired=None)
    ready = next(c for c in held.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "DryRun")
    assert all(event.message.startswith("not applied (DryRun)") for event in held.events)
    assert "ScaledUp" in [event.reason for event in held.events]
    again = held_decision(decision, "DryRun", reported_desired=decision.desired_replicas)
    assert "ScaledUp" not in [event.reason for event in again.events]
    assert "MeltingStarted" in [event.reason for event in again.events]


@pytest.mark.parametrize(("interval", "expected"), [
    (2, 2.0), (None, 5.0), ("x", 5.0), (0, 5.0), (2.5, 5.0), (3601, 5.0),
])
def test_interval_of(interval: Any, expected: float) -> None:
    spec = policy("ns", "p", "worker")["spec"]
    spec.pop("intervalSeconds")
    if interval is not None:
        spec["intervalSeconds"] = interval
    assert interval_of({"spec": spec}) == expected


@pytest.mark.parametrize(("interval", "now", "expected"), [
    (1.0, 100.25, 0.75), (5.0, 12.0, 3.0), (5.0, 15.0, 5.0), (60.0, 119.5, 0.5)])
def test_ticks_fall_on_the_multiples_of_the_interval(interval: float, now: float,
                                                     expected: float) -> None:
    assert until_next_tick(interval, now) == pytest.approx(expected)


def test_a_spec_is_parsed_once_per_generation() -> None:
    reconciler = Reconciler(None, None, None, None, None, OperatorMetrics())  # type: ignore[arg-type]
    body = {**POLICY, "spec": {**POLICY["spec"], "maxReplicas": 7}}
    first = reconciler.spec_of(body)
    assert reconciler.spec_of({**body, "spec": {}}) is first  # same generation: remembered
    changed = {**body, "metadata": {**body["metadata"], "generation": 4},
               "spec": {**body["spec"], "maxReplicas": 9}}
    assert reconciler.spec_of(changed).max_replicas == 9
    assert interval_of(changed, reconciler.spec_of) == 1.0


def test_interval_of_an_invalid_spec_is_the_default() -> None:
    spec = {**policy("ns", "p", "worker")["spec"], "intervalSeconds": 2, "minReplicas": -1}
    assert interval_of({"spec": spec}) == 5.0


def test_metrics_record_a_decision_and_forget_a_policy() -> None:
    metrics = OperatorMetrics()
    decision = melting_decision()
    metrics.observe("inference", "imagegen", decision, applied=True, bounds=(2, 4))
    families = {family.name: family for family in
                text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    phase = {s.labels["phase"]: s.value for s in families["meltguard_policy_phase"].samples}
    assert phase == {"Cool": 0, "Warm": 0, "Hot": 0, "Melting": 1, "Unknown": 0}
    replicas = {s.labels["kind"]: s.value for s in families["meltguard_policy_replicas"].samples}
    assert replicas == {"current": 2, "desired": decision.desired_replicas, "pending": 0,
                        "min": 2, "max": 4}
    assert decision.desired_replicas > 2
    limits = {s.labels["tier"]: s.value for s in families["meltguard_quota_limit"].samples}
    assert set(limits) == {"free", "plus"}  # unlimited tiers have no limit to show
    scale = [s for s in families["meltguard_scale_changes"].samples if s.name.endswith("_total")]
    assert [(s.labels["direction"], s.value) for s in scale] == [("up", 1.0)]
    metrics.forget("inference", "imagegen")
    text = generate_latest(metrics.registry).decode()
    assert 'policy="imagegen"' not in text


def test_metric_names_are_what_the_registry_serves() -> None:
    metrics = OperatorMetrics()
    metrics.observe("inference", "imagegen", melting_decision(), applied=True,
                    bounds=(2, 4))
    served = {family.name + "_total" if family.type == "counter" else family.name
              for family in text_string_to_metric_families(
                  generate_latest(metrics.registry).decode())
              if not family.name.endswith("_created")}
    assert served == METRIC_NAMES
