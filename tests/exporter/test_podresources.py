"""Pod attribution through a real gRPC server speaking the kubelet pod-resources v1 API."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from meltguard.exporter.devices import DeviceReading, PodRef
from meltguard.exporter.podresources import (
    ListPodResourcesRequest,
    ListPodResourcesResponse,
    PodResourcesAttribution,
)
from meltguard.exporter.sampler import Sampler
from meltguard.exporter.simulated import SimulatedBackend, simulated_uuid

from ..exporter_process import start_exporter, stop_exporter
from .helpers import scrape_samples

NODE = "gpu-node-7"


class FakeKubelet:
    """A real gRPC server on a unix socket answering ``v1.PodResourcesLister/List``."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.pods: list[dict[str, Any]] = []
        self.calls = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.unary_unary_rpc_method_handler(
            self._list,
            request_deserializer=ListPodResourcesRequest.FromString,
            response_serializer=ListPodResourcesResponse.SerializeToString,
        )
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("v1.PodResourcesLister", {"List": handler})]
        )
        self._server.add_insecure_port(f"unix://{socket}")

    def _list(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls += 1
        return ListPodResourcesResponse(pod_resources=self.pods)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait()


def pod(
    namespace: str, name: str, container: str, resource: str, *device_ids: str
) -> dict[str, Any]:
    devices = [{"resource_name": resource, "device_ids": list(device_ids)}]
    return {
        "namespace": namespace,
        "name": name,
        "containers": [{"name": container, "devices": devices}],
    }


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    server = FakeKubelet(tmp_path / "kubelet.sock")
    server.start()
    yield server
    server.stop()


def readings(count: int) -> list[DeviceReading]:
    return SimulatedBackend(count, NODE).read()


def test_gpus_are_attributed_by_uuid_or_index_and_other_devices_ignored(
    kubelet: FakeKubelet,
) -> None:
    gpus = readings(4)
    kubelet.pods = [
        pod("inference", "imagegen-a", "worker", "nvidia.com/gpu", gpus[0].uuid, gpus[2].uuid),
        pod("inference", "imagegen-b", "worker", "nvidia.com/gpu", "1"),  # index device IDs
        pod("batch", "trainer", "main", "example.com/fpga", gpus[3].uuid),
    ]
    attribution = PodResourcesAttribution(str(kubelet.socket))
    try:
        pods = attribution.pods_by_uuid(gpus)
    finally:
        attribution.close()
    assert pods == {
        gpus[0].uuid: PodRef("inference", "imagegen-a", "worker"),
        gpus[2].uuid: PodRef("inference", "imagegen-a", "worker"),
        gpus[1].uuid: PodRef("inference", "imagegen-b", "worker"),
    }


def test_unreachable_kubelet_keeps_the_last_known_pods(kubelet: FakeKubelet) -> None:
    gpus = readings(2)
    kubelet.pods = [pod("inference", "imagegen-a", "worker", "nvidia.com/gpu", gpus[0].uuid)]
    attribution = PodResourcesAttribution(str(kubelet.socket), timeout=0.5)
    sampler = Sampler(SimulatedBackend(2, NODE), attribution)
    try:
        assert sampler.sample_once().pods == {
            gpus[0].uuid: PodRef("inference", "imagegen-a", "worker")
        }
        kubelet.stop()
        with pytest.raises(ConnectionError, match="pod-resources List"):
            attribution.pods_by_uuid(gpus)
        snapshot = sampler.sample_once()
    finally:
        attribution.close()
    assert snapshot.error is None
    assert snapshot.pods == {gpus[0].uuid: PodRef("inference", "imagegen-a", "worker")}


@pytest.mark.slow
def test_daemonset_exporter_labels_gpus_with_their_pods(kubelet: FakeKubelet) -> None:
    kubelet.pods = [
        pod("inference", "imagegen-a", "worker", "nvidia.com/gpu", simulated_uuid(NODE, 1)),
        pod("inference", "imagegen-b", "sidecar-free", "nvidia.com/gpu", simulated_uuid(NODE, 3)),
    ]
    exporter = start_exporter(
        "--simulate", "4", "--pod-resources-socket", str(kubelet.socket), node=NODE
    )  # --attribution auto: the socket exists, so pod-resources
    try:
        samples = scrape_samples(exporter.url)
    finally:
        stop_exporter(exporter)
    owners = {
        s.labels["gpu"]: (s.labels.get("namespace"), s.labels.get("pod"), s.labels.get("container"))
        for s in samples
        if s.name == "meltguard_gpu_up"
    }
    assert owners == {
        "0": (None, None, None),
        "1": ("inference", "imagegen-a", "worker"),
        "2": (None, None, None),
        "3": ("inference", "imagegen-b", "sidecar-free"),
    }
    assert kubelet.calls >= 1
