"""Background sampling of GPU readings for the exporter.

Why a sampler thread rather than reading NVML per scrape: NVML calls block, sometimes for
hundreds of milliseconds (a GPU falling off the bus, a busy driver), and an asyncio app must
never block its loop; a thread of its own also keeps a hung NVML call from piling up one
blocked worker per scrape. Several scrapers (Prometheus, the operator) then share one read
instead of multiplying NVML load, and ``/readyz`` can tell a stuck or failing reader by the
age of the last good snapshot. The cost is up to one ``interval`` of extra staleness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from meltguard.exporter.devices import BackendUnavailable, DeviceReading, GpuBackend, PodRef

log = logging.getLogger(__name__)


class Attribution(Protocol):
    """Tells which pod holds which GPU. May block (a gRPC call), runs in the sampler thread."""

    def pods_by_uuid(self, readings: Sequence[DeviceReading]) -> Mapping[str, PodRef]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The latest readings with their pods; ``error`` says why no GPU could be read."""

    readings: tuple[DeviceReading, ...] = ()
    pods: Mapping[str, PodRef] = field(default_factory=dict)
    sampled_at: float = 0.0
    error: str | None = "no sample taken yet"


class Sampler:
    """Reads the backend every ``interval`` seconds in a daemon thread and keeps the last result.

    :meth:`sample_once` may also be called directly (off the event loop) to refresh at once,
    e.g. right after a fire drill.
    """

    def __init__(
        self,
        backend: GpuBackend,
        attribution: Attribution,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.interval = interval
        self._attribution = attribution
        self._clock = clock
        self._snapshot = Snapshot()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def sample_once(self) -> Snapshot:
        """Take one reading now; never raises (failures land in ``Snapshot.error``)."""
        with self._lock:
            previous = self._snapshot
            snapshot = self._read(previous)
            if snapshot.error != previous.error:
                self._log_change(snapshot.error)
            self._snapshot = snapshot
            return snapshot

    def _read(self, previous: Snapshot) -> Snapshot:
        now = self._clock()
        try:
            readings = tuple(self.backend.read())
        except BackendUnavailable as error:
            return Snapshot(sampled_at=now, error=str(error))
        except Exception as error:  # a backend bug must not kill the sampler thread
            log.exception("reading GPUs through %s failed", self.backend.name)
            return Snapshot(sampled_at=now, error=f"{self.backend.name} read failed: {error}")
        try:
            pods = self._attribution.pods_by_uuid(readings)
        except Exception as error:
            log.warning("GPU-to-pod attribution failed, keeping the last known pods: %s", error)
            pods = previous.pods
        return Snapshot(readings=readings, pods=pods, sampled_at=now, error=None)

    def _log_change(self, error: str | None) -> None:
        if error is None:
            log.info("reading GPUs through %s", self.backend.name)
        else:
            log.error("cannot read GPUs: %s", error)

    def is_fresh(self, now: float) -> bool:
        """Whether the last sample succeeded recently enough to serve as current."""
        snapshot = self._snapshot
        return snapshot.error is None and now - snapshot.sampled_at <= max(3 * self.interval, 5.0)

    def start(self) -> None:
        """Sample once synchronously (so the first scrape has data), then keep sampling."""
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
