"""DaemonSet-mode attribution: ask the kubelet pod-resources API v1 which pod holds which GPU.

The kubelet serves gRPC on a unix socket (``/var/lib/kubelet/pod-resources/kubelet.sock``);
``List`` answers every pod's containers with their devices. With NVIDIA's device plugin the
``nvidia.com/gpu`` device IDs are GPU UUIDs (or, with ``DEVICE_ID_STRATEGY=index``, GPU
indexes); both are matched. Messages come from ``podresources.proto`` (a subset of the
upstream API with its field numbers). The method is called through a plain channel
``unary_unary`` rather than generated gRPC stubs, so no grpcio version is pinned by them.

Regenerate ``podresources_pb2.py`` after editing the ``.proto`` (run from ``operator/``)::

    python -m grpc_tools.protoc -I. --python_out=. meltguard/exporter/podresources.proto

The generated module builds its message classes at import time, invisible to mypy, so they
are re-exported below through an ``Any`` alias.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from meltguard.exporter import podresources_pb2
from meltguard.exporter.devices import DeviceReading, PodRef

LIST_METHOD = "/v1.PodResourcesLister/List"
GPU_RESOURCE = "nvidia.com/gpu"
#: A node with hundreds of pods answers more than gRPC's default 4 MiB.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

_generated: Any = podresources_pb2
ListPodResourcesRequest: Any = _generated.ListPodResourcesRequest
ListPodResourcesResponse: Any = _generated.ListPodResourcesResponse


def device_pods(response: Any, resource: str = GPU_RESOURCE) -> dict[str, PodRef]:
    """Device ID -> the pod and container holding it, for devices of ``resource``."""
    holders = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if devices.resource_name != resource:
                    continue
                holder = PodRef(
                    namespace=pod.namespace, pod=pod.name, container=container.name or None
                )
                holders.update(dict.fromkeys(devices.device_ids, holder))
    return holders


class PodResourcesAttribution:
    """Calls ``List`` on every sample (cheap over the local socket, and pods come and go)."""

    def __init__(self, socket_path: str, timeout: float = 2.0) -> None:
        self.socket_path = socket_path
        self._timeout = timeout
        self._channel = grpc.insecure_channel(
            f"unix://{socket_path}",
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
        )
        self._list = self._channel.unary_unary(
            LIST_METHOD,
            request_serializer=ListPodResourcesRequest.SerializeToString,
            response_deserializer=ListPodResourcesResponse.FromString,
        )

    def pods_by_uuid(self, readings: Sequence[DeviceReading]) -> Mapping[str, PodRef]:
        try:
            response = self._list(ListPodResourcesRequest(), timeout=self._timeout)
        except grpc.RpcError as error:
            reason = error.code().name if isinstance(error, grpc.Call) else str(error)
            raise ConnectionError(
                f"kubelet pod-resources List on {self.socket_path} failed: {reason}"
            ) from error
        holders = device_pods(response)
        pods = {}
        for reading in readings:
            holder = holders.get(reading.uuid) or holders.get(str(reading.index))
            if holder is not None:
                pods[reading.uuid] = holder
        return pods

    def close(self) -> None:
        self._channel.close()
