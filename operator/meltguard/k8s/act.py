"""Writing one tick's decision back: the target's replicas, the quota ConfigMap, the status.

The bodies are built by pure functions (:func:`quota_configmap`, :func:`owner_reference`);
the writes are thin calls through :class:`~meltguard.k8s.client.Kube`. A write that
loses a race (409, or a scale whose count changed since read) raises
:class:`~meltguard.k8s.client.Conflict` to the caller, which starts the tick again from a
fresh read, except for the ConfigMap, whose content does not depend on what was there: it is
re-read and re-written on the spot.

The operator owns its quota ConfigMap: :func:`publish_quotas` also puts back one that someone
deleted, edited or took the label off (:class:`Published` says which), and
:func:`restored_note` words the Event that reports it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from meltguard.api.models import PolicySpec
from meltguard.api.quotas import (
    QUOTAS_JSON_KEY,
    QUOTAS_LABEL,
    QUOTAS_LABELS,
    RATELIMIT_CONFIG_KEY,
    QuotaDocument,
    QuotaDocumentInvalid,
    carries_quotas_label,
    dump_quota_document,
    parse_quota_document,
    render_ratelimit_config,
)
from meltguard.api.vocabulary import API_VERSION, KIND
from meltguard.core.decide import Decision, EventNote
from meltguard.k8s.client import ApiError, Conflict, Kube, NotFound
from meltguard.k8s.resources import Resource

CONFIGMAP_WRITE_ATTEMPTS = 3
#: The Event reason of a quota ConfigMap put back after someone else changed it.
QUOTAS_RESTORED = "QuotasRestored"
#: The status of a JSON patch whose ``test`` failed (the API server gives no other detail).
UNPROCESSABLE = 422


def configmap_name(policy_name: str, spec: PolicySpec) -> str:
    """``spec.quotas.publish.configMap``, by default ``<policy>-quotas``."""
    return spec.quotas.publish.config_map or f"{policy_name}-quotas"


def envoy_domain(policy_name: str, spec: PolicySpec) -> str:
    """``spec.quotas.publish.envoyDomain``, by default the policy's name."""
    return spec.quotas.publish.envoy_domain or policy_name


def owner_reference(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The policy as the controlling owner (garbage collection removes the ConfigMap with it).

    ``blockOwnerDeletion`` is left out: setting it needs update rights on the policy's
    ``finalizers`` subresource, which the operator does not otherwise need.
    """
    meta = policy["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND,
            "name": meta["name"], "uid": meta["uid"], "controller": True}


def quota_document(policy: Mapping[str, Any], decision: Decision, now: float,
                   domain: str | None = None) -> QuotaDocument:
    """``quotas.json`` for the limits in force after ``decision``; ``domain`` is the policy's
    Envoy domain (:func:`envoy_domain`), which the quota service's gRPC API answers for."""
    meta = policy["metadata"]
    return QuotaDocument(policy=f"{meta['namespace']}/{meta['name']}",
                         observed_generation=int(meta.get("generation") or 0),
                         phase=decision.phase, updated=datetime.fromtimestamp(now, UTC),
                         tiers=list(decision.tiers), envoy_domain=domain)


def quota_configmap(policy: Mapping[str, Any], spec: PolicySpec,
                    document: QuotaDocument) -> dict[str, Any]:
    """The whole quota ConfigMap: both keys, the label and the owner reference."""
    name = policy["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": configmap_name(name, spec),
                     "namespace": policy["metadata"]["namespace"],
                     "labels": dict(QUOTAS_LABELS),
                     "ownerReferences": [owner_reference(policy)]},
        "data": {QUOTAS_JSON_KEY: dump_quota_document(document),
                 RATELIMIT_CONFIG_KEY: render_ratelimit_config(document,
                                                               envoy_domain(name, spec))},
    }


def says_the_same(stored: QuotaDocument, document: QuotaDocument) -> bool:
    """Whether two quota documents differ in nothing but their time."""
    return stored.model_copy(update={"updated": document.updated}) == document


def publishes_the_same(data: Mapping[str, Any] | None, configmap: Mapping[str, Any],
                       document: QuotaDocument) -> bool:
    """Whether a stored ConfigMap's ``data`` already says what ``configmap`` (built from
    ``document``) says: the same keys, ``quotas.json`` the same apart from its time, every
    other key the same text."""
    stored, wanted = dict(data or {}), configmap["data"]
    if stored.keys() != wanted.keys() or any(
            stored[key] != text for key, text in wanted.items() if key != QUOTAS_JSON_KEY):
        return False
    try:
        stored_document = parse_quota_document(stored[QUOTAS_JSON_KEY])
    except QuotaDocumentInvalid:
        return False
    return says_the_same(stored_document, document)


class Published(enum.Enum):
    """What :func:`publish_quotas` found and did."""

    SAME = "same"  # it already said the same, labelled: nothing written
    CREATED = "created"  # there was none
    UPDATED = "updated"  # its data differed
    RELABELLED = "relabelled"  # the same data, without the label


def data_patch(existing: Mapping[str, Any], configmap: Mapping[str, Any],
               resource_version: str | None) -> dict[str, Any]:
    """The merge patch that makes ``existing`` hold ``configmap``'s data, label and owner,
    dropping data keys someone else added; other labels and annotations stay."""
    added = {key: None for key in existing.get("data") or {} if key not in configmap["data"]}
    return {**configmap, "metadata": {**configmap["metadata"],
                                      "resourceVersion": resource_version},
            "data": {**added, **configmap["data"]}}


def label_patch(resource_version: str | None) -> dict[str, Any]:
    """The merge patch that puts the quota service's label back, and nothing else."""
    return {"metadata": {"labels": dict(QUOTAS_LABELS), "resourceVersion": resource_version}}


async def publish_quotas(client: Kube, configmap: Mapping[str, Any],
                         document: QuotaDocument) -> Published:
    """Create or update the quota ConfigMap so that it says ``document`` and carries the
    label; :attr:`Published.SAME` when it already did."""
    meta = configmap["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    for _ in range(CONFIGMAP_WRITE_ATTEMPTS):
        try:
            existing = await client.get_configmap(namespace, name)
        except NotFound:
            try:
                await client.create_configmap(namespace, configmap)
                return Published.CREATED
            except Conflict:
                continue  # created meanwhile: read it and patch
        version = existing["metadata"].get("resourceVersion")
        if not publishes_the_same(existing.get("data"), configmap, document):
            patch, outcome = data_patch(existing, configmap, version), Published.UPDATED
        elif not carries_quotas_label(existing):
            patch, outcome = label_patch(version), Published.RELABELLED
        else:
            return Published.SAME
        try:
            await client.patch_configmap(namespace, name, patch)
            return outcome
        except Conflict:
            continue
    raise Conflict(409, "Conflict", f"configmap {meta['name']} kept changing while written")


def restored_note(namespace: str, name: str, published: Published) -> EventNote:
    """The Warning Event of a quota ConfigMap that :func:`publish_quotas` put back after
    someone else changed it (``published`` says how it was found)."""
    what = {Published.CREATED: "was deleted by someone else; recreated with the operator's "
                                "limits",
            Published.UPDATED: "was edited by someone else; the operator's limits written back",
            Published.RELABELLED: f"lost its label {QUOTAS_LABEL}=true, so the quota service "
                                  f"ignored it; label put back"}
    if published not in what:
        raise ValueError(f"nothing was restored: the ConfigMap was found {published.value}")
    return EventNote("Warning", QUOTAS_RESTORED,
                     f"quota ConfigMap {namespace}/{name} {what[published]}")


def scale_patch(read_replicas: int, replicas: int) -> list[dict[str, Any]]:
    """The JSON patch of a ``/scale`` that sets ``replicas`` only while the count is still
    ``read_replicas``: a ``test`` of the Scale's spec as read, then the new count.

    The precondition is the count the decision rests on, not the object's resourceVersion:
    that one moves with every status update of the target, which its controller writes while
    pods come and go, so it refused scale-ups made while the pods of an earlier scale were
    still settling. A Scale's spec holds the count alone, and leaves out a count of zero.
    """
    spec_as_read = {"replicas": read_replicas} if read_replicas else {}
    return [{"op": "test", "path": "/spec", "value": spec_as_read},
            {"op": "add", "path": "/spec/replicas", "value": replicas}]


async def scale_target(client: Kube, target: Resource, *, namespace: str, name: str,
                       read_replicas: int, replicas: int) -> None:
    """Set the target's replicas through its scale subresource if the count is still
    ``read_replicas``; else :class:`Conflict` (the server answers a failed test with 422)."""
    try:
        await client.patch_scale(target, namespace, name, scale_patch(read_replicas, replicas))
    except ApiError as error:
        if error.status != UNPROCESSABLE:
            raise
        raise Conflict(409, "Conflict",
                       f"{target.plural}/scale {namespace}/{name}: the replica count is no "
                       f"longer {read_replicas} ({error.message})") from error


def merge_patch_between(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns ``old`` into exactly ``new``.

    A merge patch merges nested objects, so a key that ``new`` lacks must be sent as null
    or it survives: e.g. a GPU that left ``status.controller.hotSince``.
    """
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch_between(before, value)
            if nested:
                patch[key] = nested
        elif value != before:
            patch[key] = value
    return patch


async def patch_status(client: Kube, policy: Mapping[str, Any], status: Mapping[str, Any],
                       *, stored: Mapping[str, Any] | None = None) -> None:
    """Make the policy's status exactly ``status``, through the status subresource.

    ``stored`` is the status the server holds (by default the one in ``policy``): the
    operator's own last write when the policy comes from a cache that may lag behind it.
    """
    meta = policy["metadata"]
    if stored is None:
        found = policy.get("status")
        stored = found if isinstance(found, Mapping) else {}
    patch = merge_patch_between(stored, status)
    if patch:
        await client.patch_policy_status(meta["namespace"], meta["name"], {"status": patch})
