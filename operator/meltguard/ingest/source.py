"""The operator's telemetry source interface: GPU samples for a set of pods, wherever they live.

What the operator codes against::

    class TelemetrySource(Protocol):
        async def read(self, pods: Collection[tuple[str, str]], now: float) -> TelemetryReading
        async def close(self) -> None

``pods`` are the target's ``(namespace, pod)`` pairs; ``now`` is the epoch time stamped on
samples that carry no time of their own. ``read`` never raises for telemetry trouble: an
endpoint that times out, refuses, or serves a malformed page adds an :class:`EndpointError`,
and the GPUs it served last time (for these pods) land in ``lost_gpus``, which the core
counts as stale. Implausible values are dropped per sample. Both are counted in the
:class:`~.metrics.IngestMetrics` the source was given.
``TelemetryReading.observation(replicas, pending)`` gives the core's ``Observation``.

Build one source per policy with :func:`~.factory.create_source` from ``spec.telemetry`` and
keep it across ticks (it remembers which GPUs each endpoint served, and reuses connections);
close it when the policy goes away or its telemetry spec changes. ``exporter`` and ``dcgm``
sources find their endpoints through an injected :data:`ListEndpoints` coroutine (the
operator answers it from the Kubernetes API), so this package needs no Kubernetes client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from meltguard.core.observation import GpuSample, Observation

ListEndpoints = Callable[[str, Mapping[str, str], int], Awaitable[list[str]]]
"""``(namespace, match_labels, port) -> ["host:port", ...]``: the endpoints to scrape."""
Pods = Collection[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class EndpointError:
    """One endpoint (or the discovery / query step) that gave nothing usable this read."""

    endpoint: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryReading:
    """What one read found for the wanted pods."""

    samples: tuple[GpuSample, ...]
    lost_gpus: frozenset[str] = frozenset()
    errors: tuple[EndpointError, ...] = ()
    rejected: Mapping[str, int] = field(default_factory=dict)

    def observation(self, current_replicas: int, pending_replicas: int = 0) -> Observation:
        """The core's observation for this reading and the target's replica counts."""
        return Observation(
            samples=self.samples,
            current_replicas=current_replicas,
            pending_replicas=pending_replicas,
            lost_gpus=self.lost_gpus,
            telemetry_errors=len(self.errors),
        )


class TelemetrySource(Protocol):
    """Reads the GPU samples of a set of pods; see the module docstring."""

    async def read(self, pods: Pods, now: float) -> TelemetryReading: ...

    async def close(self) -> None: ...
