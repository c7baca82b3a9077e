"""Scaling through ``/scale``: the patch holds only while the target's count is the one the
decision was made from; a status update of the target (a new resourceVersion) does not
refuse it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import jsonpatch
import pytest
import pytest_asyncio

from meltguard.k8s.act import scale_patch, scale_target
from meltguard.k8s.client import Conflict, Kube
from meltguard.k8s.resources import DEPLOYMENTS as DEPLOYMENT_RESOURCE

from .harness import DEPLOYMENTS, add_namespaces, config_at, deployment, server_url
from .kmock_apiserver import ApiServer

NS = "inference"


@pytest.mark.parametrize(("spec", "read", "wanted", "expected"), [
    ({"replicas": 2}, 2, 3, {"replicas": 3}),
    ({}, 0, 1, {"replicas": 1}),  # a Scale leaves out a zero count
    ({"replicas": 4}, 4, 0, {"replicas": 0}),
])
def test_a_scale_patch_sets_the_count_read(spec: dict[str, int], read: int, wanted: int,
                                           expected: dict[str, int]) -> None:
    scale = {"kind": "Scale", "spec": spec, "status": {"replicas": read}}
    assert jsonpatch.apply_patch(scale, scale_patch(read, wanted))["spec"] == expected


@pytest.mark.parametrize(("spec", "read"), [({"replicas": 3}, 2), ({}, 2), ({"replicas": 1}, 0)])
def test_a_scale_patch_fails_on_another_count(spec: dict[str, int], read: int) -> None:
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch({"kind": "Scale", "spec": spec}, scale_patch(read, 5))


@pytest_asyncio.fixture()
async def client(api: ApiServer) -> AsyncIterator[Kube]:
    add_namespaces(api, NS)
    kube = Kube(config_at(server_url(api)))
    try:
        yield kube
    finally:
        await kube.close()


def _replicas(api: ApiServer, name: str) -> int:
    stored = api.stored(DEPLOYMENTS, NS, name)
    assert stored is not None
    return int(stored["spec"].get("replicas", 0))


async def test_a_status_update_does_not_refuse_a_scale(api: ApiServer, client: Kube) -> None:
    created = api.create_object(DEPLOYMENTS, deployment(NS, "worker", 2))
    updated = api.patch_object(DEPLOYMENTS, NS, "worker", {"status": {"readyReplicas": 1}},
                               subresource="status")
    assert updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    await scale_target(client, DEPLOYMENT_RESOURCE, namespace=NS, name="worker",
                       read_replicas=2, replicas=3)
    assert _replicas(api, "worker") == 3


async def test_a_count_changed_since_read_is_a_conflict_and_stays(api: ApiServer,
                                                                  client: Kube) -> None:
    api.create_object(DEPLOYMENTS, deployment(NS, "worker", 2))
    api.patch_object(DEPLOYMENTS, NS, "worker", {"spec": {"replicas": 5}})  # someone scaled
    with pytest.raises(Conflict, match="no longer 2"):
        await scale_target(client, DEPLOYMENT_RESOURCE, namespace=NS, name="worker",
                           read_replicas=2, replicas=3)
    assert _replicas(api, "worker") == 5


async def test_a_target_at_zero_is_scaled_from_zero(api: ApiServer, client: Kube) -> None:
    api.create_object(DEPLOYMENTS, deployment(NS, "idle", 0))
    await scale_target(client, DEPLOYMENT_RESOURCE, namespace=NS, name="idle",
                       read_replicas=0, replicas=1)
    assert _replicas(api, "idle") == 1
    with pytest.raises(Conflict):
        await scale_target(client, DEPLOYMENT_RESOURCE, namespace=NS, name="idle",
                           read_replicas=0, replicas=2)
    assert _replicas(api, "idle") == 1
