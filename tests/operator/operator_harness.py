"""Running kopf against the kmock API server, and building the objects tests need.

kopf cancels every task of its event loop when it exits, so it runs in a thread of its own
with its own loop (:class:`KopfThread`); the test's loop serves the API (:mod:`operator_apiserver`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Collection
from types import TracebackType
from typing import Any

import kmock
import kopf
from operator_apiserver import ApiServer

POLICIES = "meltguard.io/v1alpha1/imagequotapolicies"
DEPLOYMENTS = "apps/v1/deployments"
STATEFULSETS = "apps/v1/statefulsets"
PODS = "v1/pods"
CONFIGMAPS = "v1/configmaps"
EVENTS = "v1/events"
NAMESPACES = "v1/namespaces"

_ALL_VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def declare_resources(server: ApiServer) -> None:
    """Declare what a cluster with meltguard's CRD installed would serve through discovery."""
    declared: dict[str, kmock.ResourceInfo] = {
        POLICIES: kmock.ResourceInfo(kind="ImageQuotaPolicy", namespaced=True, shortnames={"iqp"},
                                     subresources={"status"}),
        DEPLOYMENTS: kmock.ResourceInfo(kind="Deployment", namespaced=True,
                                        subresources={"status", "scale"}),
        STATEFULSETS: kmock.ResourceInfo(kind="StatefulSet", namespaced=True,
                                         subresources={"status", "scale"}),
        PODS: kmock.ResourceInfo(kind="Pod", namespaced=True, subresources={"status"}),
        CONFIGMAPS: kmock.ResourceInfo(kind="ConfigMap", namespaced=True),
        EVENTS: kmock.ResourceInfo(kind="Event", namespaced=True),
        NAMESPACES: kmock.ResourceInfo(kind="Namespace", namespaced=False),
        "kopf.dev/v1/kopfpeerings": kmock.ResourceInfo(kind="KopfPeering", namespaced=True),
        "kopf.dev/v1/clusterkopfpeerings": kmock.ResourceInfo(kind="ClusterKopfPeering",
                                                              namespaced=False),
    }
    for name, info in declared.items():
        info.verbs = set(_ALL_VERBS)
        server.resources[name] = info


def add_namespaces(server: ApiServer, *names: str) -> None:
    """Create Namespace objects: kopf serves a namespace only once it sees it exist."""
    for name in names:
        if server.stored(NAMESPACES, None, name) is None:
            server.create_object(NAMESPACES, {"metadata": {"name": name}})


def server_url(server: ApiServer) -> str:
    """The API server's base URL, as a kubeconfig would hold it."""
    return str(server.url).rstrip("/")


def login_to(server: ApiServer) -> Callable[..., kopf.ConnectionInfo]:
    """A kopf login handler that points kopf at the kmock server."""
    url = server_url(server)

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, default_namespace="default")

    return login


class KopfThread:
    """kopf's ``operator()`` in its own thread and event loop, started and stopped by ``with``."""

    def __init__(self, registry: kopf.OperatorRegistry, *, namespaces: Collection[str] = (),
                 clusterwide: bool = False, settings: kopf.OperatorSettings | None = None,
                 memo: Any = None) -> None:
        self._kwargs: dict[str, Any] = dict(
            registry=registry, settings=settings or quick_settings(), standalone=True,
            namespaces=list(namespaces), clusterwide=clusterwide, memo=memo)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="kopf", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(kopf.operator(stop_flag=self._stop, ready_flag=self._ready,
                                      **self._kwargs))
        except BaseException as exc:  # reported to the test through .error
            self.error = exc
            self._ready.set()

    def __enter__(self) -> KopfThread:
        self._thread.start()
        if not self._ready.wait(timeout=20) or self.error is not None:
            self.stop()
            raise RuntimeError(f"kopf did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        """Ask kopf to stop, as SIGTERM would, and wait for it."""
        self._stop.set()
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            raise RuntimeError("kopf did not stop within 30 s")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def quick_settings() -> kopf.OperatorSettings:
    """kopf settings that keep tests fast: no batching delay, quick retries and posting."""
    settings = kopf.OperatorSettings()
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 1.0
    settings.watching.reconnect_backoff = 0.2
    settings.posting.level = 0  # post every event kopf logs, so tests can see them
    return settings


async def eventually(check: Callable[[], Any], timeout: float = 10.0,
                     what: str = "the condition") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        result = check()
        last = await result if isinstance(result, Awaitable) else result
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s (last: {last!r})")
