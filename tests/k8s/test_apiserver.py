"""The kmock harness itself: each gap of kmock 0.8 that the operator relies on, closed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import kmock
import pytest

from .harness import CONFIGMAPS, DEPLOYMENTS, POLICIES
from .kmock_apiserver import ApiServer, matches_selectors, merge_patch, selector_string

NS = "inference"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def deployment(name: str = "worker", replicas: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
            "status": {"replicas": replicas}}


def test_merge_patch_follows_rfc7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) \
        == {"a": {"c": 2, "e": 3}, "d": [2]}
    assert merge_patch({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=worker", True), ("app==worker", True), ("app!=worker", False), ("app=other", False),
    ("app in (worker, x),tier", True), ("app notin (worker)", False), ("!tier", False),
    ("missing", False), ("!missing", True), ("app=worker,tier=gpu", True), ("", True),
])
def test_label_selectors(selector: str, expected: bool) -> None:
    body = {"metadata": {"labels": {"app": "worker", "tier": "gpu"}}}
    assert matches_selectors(body, {"labelSelector": selector}) is expected


def test_field_selectors_on_dotted_paths() -> None:
    body = {"metadata": {"name": "p1"}, "status": {"phase": "Pending"}}
    assert matches_selectors(body, {"fieldSelector": "status.phase=Pending,metadata.name=p1"})
    assert not matches_selectors(body, {"fieldSelector": "status.phase!=Pending"})


def test_selector_string_renders_match_labels_and_expressions() -> None:
    selector = {"matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [{"key": "c", "operator": "In", "values": ["x", "y"]}]}
    assert selector_string(selector) == "a=1,b=2,c in (x,y)"


async def test_create_stamps_metadata_and_conflicts_on_duplicates(api: ApiServer) -> None:
    url = f"/apis/apps/v1/namespaces/{NS}/deployments"
    async with api.post(url, json=deployment()) as response:
        assert response.status == 200
        meta = (await response.json())["metadata"]
    assert meta["uid"] and meta["generation"] == 1 and int(meta["resourceVersion"]) > 0
    async with api.post(url, json=deployment()) as response:
        assert response.status == 409
        assert (await response.json())["reason"] == "AlreadyExists"


async def test_generate_name(api: ApiServer) -> None:
    body = {"metadata": {"generateName": "kopf-event-"}, "reason": "Test"}
    async with api.post(f"/api/v1/namespaces/{NS}/events", json=body) as response:
        name = (await response.json())["metadata"]["name"]
    assert name.startswith("kopf-event-") and len(name) > len("kopf-event-")


async def test_patches_bump_resource_version_and_generation_only_on_spec(api: ApiServer) -> None:
    created = api.create_object(DEPLOYMENTS, deployment())
    labelled = api.patch_object(DEPLOYMENTS, NS, "worker", {"metadata": {"labels": {"x": "y"}}})
    assert int(labelled["metadata"]["resourceVersion"]) \
        > int(created["metadata"]["resourceVersion"])
    assert labelled["metadata"]["generation"] == 1
    respec = api.patch_object(DEPLOYMENTS, NS, "worker", {"spec": {"paused": True}})
    assert respec["metadata"]["generation"] == 2
    assert respec["metadata"]["uid"] == created["metadata"]["uid"]


async def test_stale_resource_version_in_a_merge_patch_is_a_409(api: ApiServer) -> None:
    created = api.create_object(DEPLOYMENTS, deployment())
    api.patch_object(DEPLOYMENTS, NS, "worker", {"spec": {"paused": True}})
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
             "spec": {"replicas": 9}}
    async with api.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/worker",
                         json=stale, headers=MERGE) as response:
        assert response.status == 409
    assert api.stored(DEPLOYMENTS, NS, "worker")["spec"]["replicas"] == 2


async def test_failed_json_patch_test_op_is_a_422_and_changes_nothing(api: ApiServer) -> None:
    api.create_object(POLICIES, {"metadata": {"name": "p", "namespace": NS}, "spec": {}})
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": "999"},
           {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}]
    url = f"/apis/meltguard.io/v1alpha1/namespaces/{NS}/imagequotapolicies/p"
    async with api.patch(url, data=json.dumps(ops), headers=JSON_PATCH) as response:
        assert response.status == 422
    assert "finalizers" not in api.stored(POLICIES, NS, "p")["metadata"]
    current = api.stored(POLICIES, NS, "p")["metadata"]["resourceVersion"]
    ops[0]["value"] = current
    async with api.patch(url, data=json.dumps(ops), headers=JSON_PATCH) as response:
        assert response.status == 200
    assert api.stored(POLICIES, NS, "p")["metadata"]["finalizers"] == ["x"]


async def test_scale_subresource_reads_and_writes_a_scale(api: ApiServer) -> None:
    api.create_object(DEPLOYMENTS, deployment(replicas=3))
    url = f"/apis/apps/v1/namespaces/{NS}/deployments/worker/scale"
    async with api.get(url) as response:
        scale = await response.json()
    assert scale["kind"] == "Scale"
    assert scale["spec"] == {"replicas": 3}
    assert scale["status"] == {"replicas": 3, "selector": "app=worker"}
    async with api.patch(url, json={"spec": {"replicas": 7}}, headers=MERGE) as response:
        assert (await response.json())["spec"] == {"replicas": 7}
    stored = api.stored(DEPLOYMENTS, NS, "worker")
    assert stored["spec"]["replicas"] == 7 and stored["metadata"]["generation"] == 2


async def test_status_is_isolated_from_the_main_resource(api: ApiServer) -> None:
    api.create_object(POLICIES, {"metadata": {"name": "p", "namespace": NS}, "spec": {"a": 1}})
    base = f"/apis/meltguard.io/v1alpha1/namespaces/{NS}/imagequotapolicies/p"
    async with api.patch(base, json={"status": {"phase": "Hot"}}, headers=MERGE):
        pass
    assert "status" not in api.stored(POLICIES, NS, "p")
    async with api.patch(f"{base}/status", json={"status": {"phase": "Hot"}, "spec": {"a": 2}},
                         headers=MERGE):
        pass
    stored = api.stored(POLICIES, NS, "p")
    assert stored["status"] == {"phase": "Hot"} and stored["spec"] == {"a": 1}
    assert stored["metadata"]["generation"] == 1


async def test_status_is_not_isolated_without_the_subresource(api: ApiServer) -> None:
    api.create_object(CONFIGMAPS, {"metadata": {"name": "c", "namespace": NS}, "data": {}})
    api.patch_object(CONFIGMAPS, NS, "c", {"status": {"x": 1}})
    assert api.stored(CONFIGMAPS, NS, "c")["status"] == {"x": 1}


async def test_list_filters_by_label_selector_and_reports_resource_version(api: ApiServer) -> None:
    api.create_object(DEPLOYMENTS, deployment("a"))
    api.create_object(DEPLOYMENTS, deployment("b"))
    async with api.get(f"/apis/apps/v1/namespaces/{NS}/deployments",
                       params={"labelSelector": "app=b"}) as response:
        listing = await response.json()
    assert [item["metadata"]["name"] for item in listing["items"]] == ["b"]
    assert listing["metadata"]["resourceVersion"] == str(api.resource_version)


async def _watch(api: ApiServer, params: dict[str, str], count: int) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    async with api.get(f"/apis/apps/v1/namespaces/{NS}/deployments",
                       params={"watch": "true", **params}) as response:
        async for line in response.content:
            if line.strip():
                event = json.loads(line)
                seen.append((event["type"], event["object"]["metadata"]["name"]))
            if len(seen) == count:
                return seen
    return seen


async def test_watch_from_a_resource_version_does_not_replay(api: ApiServer) -> None:
    api.create_object(DEPLOYMENTS, deployment("old"))
    since = str(api.resource_version)
    watching = asyncio.create_task(_watch(api, {"resourceVersion": since}, 2))
    await asyncio.sleep(0.1)
    api.create_object(DEPLOYMENTS, deployment("new"))
    api.patch_object(DEPLOYMENTS, NS, "old", {"spec": {"replicas": 3}})
    assert await asyncio.wait_for(watching, 5) == [("ADDED", "new"), ("MODIFIED", "old")]


async def test_watch_without_a_resource_version_replays_then_loses_nothing(
        api: ApiServer) -> None:
    api.create_object(DEPLOYMENTS, deployment("old"))
    watching = asyncio.create_task(_watch(api, {}, 2))
    api.create_object(DEPLOYMENTS, deployment("new"))  # before the watch request is even served
    assert await asyncio.wait_for(watching, 5) == [("ADDED", "old"), ("ADDED", "new")]


async def test_watch_loses_nothing_created_while_it_replays(api: ApiServer) -> None:
    for index in range(20):
        api.create_object(DEPLOYMENTS, deployment(f"old-{index}"))
    watching = asyncio.create_task(_watch(api, {}, 40))
    for index in range(20):
        await asyncio.sleep(0.001)  # interleave with the replay being streamed
        api.create_object(DEPLOYMENTS, deployment(f"new-{index}"))
    seen = await asyncio.wait_for(watching, 5)
    names = [name for _, name in seen]
    assert sorted(names) == sorted([f"{age}-{i}" for age in ("old", "new") for i in range(20)])


async def test_watch_changes_made_before_the_watch_started_are_streamed(api: ApiServer) -> None:
    api.create_object(DEPLOYMENTS, deployment("a"))
    since = str(api.resource_version)
    api.patch_object(DEPLOYMENTS, NS, "a", {"spec": {"replicas": 5}})  # between list and watch
    assert await asyncio.wait_for(_watch(api, {"resourceVersion": since}, 1), 5) \
        == [("MODIFIED", "a")]


async def test_watch_honours_label_selectors_and_timeout(api: ApiServer) -> None:
    api.create_object(DEPLOYMENTS, deployment("a"))
    api.create_object(DEPLOYMENTS, deployment("b"))
    seen = await asyncio.wait_for(
        _watch(api, {"labelSelector": "app=b", "timeoutSeconds": "1"}, 99), 5)
    assert seen == [("ADDED", "b")]


async def test_deletion_waits_for_finalizers(api: ApiServer) -> None:
    api.create_object(POLICIES, {"metadata": {"name": "p", "namespace": NS, "finalizers": ["f"]}})
    api.delete_object(POLICIES, NS, "p")
    assert api.stored(POLICIES, NS, "p")["metadata"]["deletionTimestamp"]
    api.patch_object(POLICIES, NS, "p", {"metadata": {"finalizers": None}})
    assert api.stored(POLICIES, NS, "p") is None


async def test_a_kmock_reaction_refuses_a_write_and_leaves_the_object(api: ApiServer) -> None:
    api.create_object(DEPLOYMENTS, deployment())
    api["patch", kmock.subresource("scale")][:1] << 409
    url = f"/apis/apps/v1/namespaces/{NS}/deployments/worker/scale"
    async with api.patch(url, json={"spec": {"replicas": 9}}, headers=MERGE) as response:
        assert response.status == 409
    assert api.stored(DEPLOYMENTS, NS, "worker")["spec"]["replicas"] == 2
    async with api.patch(url, json={"spec": {"replicas": 9}}, headers=MERGE) as response:
        assert response.status == 200
    assert api.stored(DEPLOYMENTS, NS, "worker")["spec"]["replicas"] == 9


async def test_unknown_resources_and_objects_are_404(api: ApiServer) -> None:
    async with aiohttp.ClientSession() as session:
        base = str(api.url).rstrip("/")
        async with session.get(f"{base}/apis/apps/v1/namespaces/{NS}/deployments/nope") as resp:
            assert resp.status == 404
        async with session.get(f"{base}/apis/x.io/v1/namespaces/{NS}/things") as resp:
            assert resp.status == 404


async def test_namespaces_are_listed_as_a_cluster_resource(api: ApiServer) -> None:
    api.create_object("v1/namespaces", {"metadata": {"name": NS}})
    async with api.get("/api/v1/namespaces") as response:
        assert [item["metadata"]["name"] for item in (await response.json())["items"]] == [NS]
    async with api.get(f"/api/v1/namespaces/{NS}") as response:
        assert (await response.json())["metadata"]["name"] == NS
