"""The watch caches: selectors matched as the server matches them; a cache lists once, then
follows changes, lists again after 410 Gone, and serves reads without requests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest
import pytest_asyncio

from meltguard.api.models import ScaleTargetRef
from meltguard.k8s.client import Kube, NotFound
from meltguard.k8s.selectors import SelectorInvalid, matches, parse_selector, selector_of
from meltguard.k8s.world import ClusterView

from .harness import (
    DEPLOYMENTS,
    EXPORTER_LABELS,
    PODS,
    add_namespaces,
    config_at,
    deployment,
    eventually,
    pod,
    server_url,
)
from .kmock_apiserver import ApiServer

NS = "inference"


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ("app=worker", {"app": "worker"}, True),
    ("app==worker,tier!=gold", {"app": "worker"}, True),
    ("app=worker,tier!=gold", {"app": "worker", "tier": "gold"}, False),
    ("tier in (a, b),app", {"tier": "b", "app": ""}, True),
    ("tier notin (a,b)", {}, True),
    ("tier notin (a,b)", {"tier": "a"}, False),
    ("!canary", {"canary": "1"}, False),
    ("", {"anything": "x"}, True),
])
def test_selector_strings_match_as_the_server_matches(text: str, labels: dict[str, str],
                                                      expected: bool) -> None:
    assert matches(parse_selector(text), labels) is expected


def test_a_label_selector_and_its_string_agree() -> None:
    selector = {"matchLabels": {"app": "worker"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                     {"key": "canary", "operator": "DoesNotExist"}]}
    assert set(selector_of(selector)) == set(parse_selector("app=worker,tier in (a,b),!canary"))


@pytest.mark.parametrize("text", ["app=(x", "a b c", "tier in a,b"])
def test_a_selector_that_does_not_parse_is_named(text: str) -> None:
    with pytest.raises(SelectorInvalid, match="does not parse"):
        parse_selector(text)


@pytest_asyncio.fixture()
async def view(api: ApiServer) -> AsyncIterator[ClusterView]:
    client = Kube(config_at(server_url(api)))
    view = ClusterView(client)
    try:
        yield view
    finally:
        await view.close()
        await client.close()


def _lists(api: ApiServer, plural: str) -> int:
    return sum(1 for request in api.request_log
               if request.method == "GET" and request.resource is not None
               and request.resource.plural == plural and request.name is None
               and request.params.get("watch") != "true")


async def test_reads_come_from_one_list_then_the_watch(api: ApiServer,
                                                       view: ClusterView) -> None:
    add_namespaces(api, NS)
    api.create_object(DEPLOYMENTS, deployment(NS, "worker", 2))
    api.create_object(PODS, pod(NS, "worker-0", {"app": "worker"}))
    ref = ScaleTargetRef(api_version="apps/v1", kind="Deployment", name="worker")
    target = await view.target(NS, ref)
    assert (target.replicas, target.pods) == (2, frozenset({(NS, "worker-0")}))
    api.create_object(PODS, pod(NS, "worker-1", {"app": "worker"}, waiting_for_gpu=True))
    api.create_object(PODS, pod(NS, "other", {"app": "other"}))
    api.patch_object(DEPLOYMENTS, NS, "worker", {"spec": {"replicas": 3}})

    async def followed() -> bool:
        target = await view.target(NS, ref)
        return target.replicas == 3 and target.pending_for_gpu == 1 and len(target.pods) == 2

    await eventually(followed, what="the changes followed")
    before = len(api.request_log)
    for _ in range(20):
        await view.target(NS, ref)
    assert api.request_log[before:] == []
    assert (_lists(api, "pods"), _lists(api, "deployments")) == (1, 1)
    with pytest.raises(NotFound):
        await view.target(NS, ref.model_copy(update={"name": "missing"}))


async def test_a_gone_watch_is_listed_again_and_loses_nothing(api: ApiServer,
                                                              view: ClusterView) -> None:
    add_namespaces(api, NS)
    api[kmock.action.WATCH, kmock.resource(PODS)][:1] << 410
    api.create_object(PODS, pod(NS, "exporter-0", EXPORTER_LABELS, ip="10.0.0.1"))
    assert await view.list_endpoints(NS, EXPORTER_LABELS, 9400) == ["10.0.0.1:9400"]
    api.create_object(PODS, pod(NS, "exporter-1", EXPORTER_LABELS, ip="10.0.0.2"))

    async def both() -> bool:
        return sorted(await view.list_endpoints(NS, EXPORTER_LABELS, 9400)) == [
            "10.0.0.1:9400", "10.0.0.2:9400"]

    await eventually(both, what="the pod created after the 410 seen")
    assert _lists(api, "pods") == 2
