"""--watch-configmaps: lightkube watching ConfigMaps on a kmock API server.

The API server is the operator tests' :class:`ApiServer` (kmock 0.8 with resourceVersions,
watch resume and label selectors made to behave like a real one), reused, not copied.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import lightkube
import pytest

from meltguard.quota.configmaps import ConfigMapLimitsSource
from meltguard.quota.limits import LimitsRegistry
from tests.k8s.harness import config_at
from tests.k8s.kmock_apiserver import ApiServer

from .conftest import POLICY, launch_quota_server, quotas_json

pytestmark = pytest.mark.slow

CONFIGMAPS = "v1/configmaps"
NAMESPACE = "inference"


def configmap(name: str, data: dict[str, str], labelled: bool = True) -> dict[str, Any]:
    labels = {"meltguard.io/quotas": "true"} if labelled else {"app": "other"}
    return {"metadata": {"name": name, "namespace": NAMESPACE, "labels": labels}, "data": data}


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def free_limit(registry: LimitsRegistry, policy: str = POLICY) -> int | None:
    document = registry.table.policies.get(policy)
    tiers = {tier.name: tier for tier in document.tiers} if document else {}
    return tiers["free"].limit if "free" in tiers else None


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    async with ApiServer() as server, kmock.Server(server):
        info = kmock.ResourceInfo(kind="ConfigMap", namespaced=True)
        info.verbs = {"get", "list", "watch", "create", "patch", "update", "delete"}
        server.resources[CONFIGMAPS] = info
        yield server


def watcher(
    host: str, registry: LimitsRegistry, results: list[str], watch_timeout: int = 300
) -> ConfigMapLimitsSource:
    """A source for NAMESPACE on the API server at ``host``, retrying fast."""
    return ConfigMapLimitsSource(
        NAMESPACE,
        registry,
        results.append,
        lightkube.AsyncClient(config_at(host)),
        watch_timeout_seconds=watch_timeout,
        retry_seconds=0.05,
    )


async def start_watching(
    api: ApiServer, registry: LimitsRegistry, results: list[str], watch_timeout: int = 300
) -> asyncio.Task[None]:
    source = watcher(str(api.url).rstrip("/"), registry, results, watch_timeout)
    return asyncio.create_task(source.run())


async def test_labelled_configmaps_are_loaded_followed_and_withdrawn(api: ApiServer) -> None:
    api.create_object(
        CONFIGMAPS, configmap("imagegen-quotas", {"quotas.json": quotas_json(free=3)})
    )
    api.create_object(
        CONFIGMAPS,
        configmap("unrelated", {"quotas.json": quotas_json(policy="x/y")}, labelled=False),
    )
    registry, results = LimitsRegistry(), list[str]()
    watching = await start_watching(api, registry, results)
    try:
        await eventually(lambda: free_limit(registry) == 3)
        assert registry.sources == {"configmap:inference/imagegen-quotas"}

        api.patch_object(
            CONFIGMAPS, NAMESPACE, "imagegen-quotas", {"data": {"quotas.json": quotas_json(free=1)}}
        )
        await eventually(lambda: free_limit(registry) == 1)

        api.patch_object(
            CONFIGMAPS,
            NAMESPACE,
            "imagegen-quotas",
            {"data": {"quotas.json": '{"policy": "inference/imagegen", "tiers": 5}'}},
        )
        await eventually(lambda: results.count("invalid") == 1)
        assert free_limit(registry) == 1  # the last good limits stay

        api.create_object(CONFIGMAPS, configmap("batch-quotas", {"other.txt": "no quotas"}))
        await eventually(lambda: results.count("invalid") == 2)

        api.patch_object(
            CONFIGMAPS, NAMESPACE, "imagegen-quotas", {"data": {"quotas.json": quotas_json(free=2)}}
        )
        await eventually(lambda: free_limit(registry) == 2)

        api.delete_object(CONFIGMAPS, NAMESPACE, "imagegen-quotas")
        await eventually(lambda: free_limit(registry) is None)
        assert registry.sources == frozenset()
    finally:
        watching.cancel()


async def test_a_configmap_that_loses_its_label_is_withdrawn_at_the_next_list(
    api: ApiServer,
) -> None:
    # A real API server sends DELETED when an object stops matching a watch's selector; this
    # kmock server does not, so the withdrawal comes from the relist after the 1 s watch ends.
    api.create_object(CONFIGMAPS, configmap("imagegen-quotas", {"quotas.json": quotas_json()}))
    registry, results = LimitsRegistry(), list[str]()
    watching = await start_watching(api, registry, results, watch_timeout=1)
    try:
        await eventually(lambda: free_limit(registry) == 3)
        api.patch_object(
            CONFIGMAPS,
            NAMESPACE,
            "imagegen-quotas",
            {"metadata": {"labels": {"meltguard.io/quotas": "false"}}},
        )
        await eventually(lambda: free_limit(registry) is None)
    finally:
        watching.cancel()


async def test_changes_while_the_watch_reconnects_are_not_lost(api: ApiServer) -> None:
    registry, results = LimitsRegistry(), list[str]()
    watching = await start_watching(api, registry, results, watch_timeout=1)
    try:
        for limit in range(1, 6):
            if limit == 1:
                api.create_object(
                    CONFIGMAPS, configmap("imagegen-quotas", {"quotas.json": quotas_json(free=1)})
                )
            else:
                api.patch_object(
                    CONFIGMAPS,
                    NAMESPACE,
                    "imagegen-quotas",
                    {"data": {"quotas.json": quotas_json(free=limit)}},
                )
            await eventually(lambda limit=limit: free_limit(registry) == limit)  # type: ignore[misc]
            await asyncio.sleep(0.6)  # let the 1 s watches expire between changes
    finally:
        watching.cancel()
    assert results.count("invalid") == 0


async def test_an_unreachable_api_server_is_retried_without_crashing() -> None:
    registry, results = LimitsRegistry(), list[str]()
    source = watcher("http://127.0.0.1:9", registry, results)  # discard port: refused
    watching = asyncio.create_task(source.run())
    await asyncio.sleep(0.5)
    assert not watching.done()
    watching.cancel()
    assert registry.sources == frozenset()


async def test_a_modified_configmap_without_the_label_is_withdrawn() -> None:
    registry, results = LimitsRegistry(), list[str]()
    source = watcher("http://127.0.0.1:9", registry, results)
    source._apply("ADDED", configmap("q", {"quotas.json": quotas_json()}))
    assert free_limit(registry) == 3
    source._apply("MODIFIED", configmap("q", {"quotas.json": quotas_json()}, labelled=False))
    assert registry.sources == frozenset()
    assert results == ["ok"]


async def test_the_quota_server_command_follows_configmaps_through_a_kubeconfig(
    api: ApiServer, tmp_path: Path
) -> None:
    api.create_object(CONFIGMAPS, configmap("imagegen-quotas", {"quotas.json": quotas_json()}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kmock",
                "clusters": [{"name": "kmock", "cluster": {"server": str(api.url).rstrip("/")}}],
                "users": [{"name": "tester", "user": {"token": "unused"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
            }
        )
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    process, url = await asyncio.to_thread(
        launch_quota_server, "--watch-configmaps", NAMESPACE, env=env
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def free_limit_served() -> object:
                async with http.get(
                    f"{url}/v1/quota", params={"policy": POLICY, "tier": "free", "subject": "u"}
                ) as response:
                    return (await response.json()).get("limit")

            await eventually_async(free_limit_served, 3)
            api.patch_object(
                CONFIGMAPS,
                NAMESPACE,
                "imagegen-quotas",
                {"data": {"quotas.json": quotas_json(free=1)}},
            )
            await eventually_async(free_limit_served, 1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 10) == 0


async def eventually_async(
    read: Callable[[], Awaitable[object]], expected: object, timeout: float = 15.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := await read()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"still {value!r}, not {expected!r}"
        await asyncio.sleep(0.1)


async def test_watchers_of_other_namespaces_leave_each_others_limits_alone() -> None:
    """--watch-configmaps inference,batch: one watcher per namespace, one registry."""
    registry, results = LimitsRegistry(), list[str]()
    inference = watcher("http://127.0.0.1:9", registry, results)
    batch = ConfigMapLimitsSource("batch", registry, results.append, inference.client)
    inference._replace_all([configmap("q", {"quotas.json": quotas_json()})])
    batch_configmap = configmap("q", {"quotas.json": quotas_json(policy="batch/imagegen")})
    batch_configmap["metadata"]["namespace"] = "batch"
    batch._replace_all([batch_configmap])
    assert registry.sources == {"configmap:inference/q", "configmap:batch/q"}
    batch._replace_all([])
    assert registry.sources == {"configmap:inference/q"}
