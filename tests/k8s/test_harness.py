"""kopf itself runs correctly against the harness: once per change, finalizers, status."""

from __future__ import annotations

import threading

import kopf

from .harness import POLICIES, KopfThread, add_namespaces, eventually, login_to
from .kmock_apiserver import ApiServer

NS = "inference"


def registry_counting_creations(api: ApiServer, seen: list[str]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login_to(api))
    lock = threading.Lock()

    @kopf.on.create("meltguard.io", "v1alpha1", "imagequotapolicies", registry=registry)
    def created(name: str, patch: kopf.Patch, **_: object) -> None:
        with lock:
            seen.append(name)
        patch.status["seen"] = True

    @kopf.daemon("meltguard.io", "v1alpha1", "imagequotapolicies", registry=registry)
    async def idle(stopped: kopf.DaemonStopped, **_: object) -> None:
        await stopped.wait()

    return registry


async def test_kopf_handles_each_object_once_and_finalizes(api: ApiServer) -> None:
    add_namespaces(api, NS)
    api.create_object(POLICIES, {"metadata": {"name": "before", "namespace": NS}, "spec": {}})
    seen: list[str] = []
    async with KopfThread(registry_counting_creations(api, seen), namespaces=[NS]):
        api.create_object(POLICIES, {"metadata": {"name": "after", "namespace": NS}, "spec": {}})
        await eventually(lambda: (api.stored(POLICIES, NS, "after") or {})
                         .get("status", {}).get("seen"), what="status of 'after' patched")
        await eventually(lambda: (api.stored(POLICIES, NS, "before") or {})
                         .get("status", {}).get("seen"), what="status of 'before' patched")
        finalizers = api.stored(POLICIES, NS, "after")["metadata"].get("finalizers")
        assert finalizers, "kopf's finalizer patch (a JSON patch with a test op) never landed"
        api.delete_object(POLICIES, NS, "after")
        await eventually(lambda: api.stored(POLICIES, NS, "after") is None,
                         what="deletion released by kopf")
    assert sorted(seen) == ["after", "before"]
