"""Watch caches: one kind in one namespace, listed once and then followed by a watch.

Every policy's tick reads its target and pods from here instead of asking the API server
(and checks its quota ConfigMap against the labelled ConfigMaps here), so a tick makes no read
request once the caches are synced, and one watch per namespace and kind serves every policy
in that namespace (and every policy whose exporter pods live there). A cache keeps a small
record per object (the caller's ``convert``), not the object.

The watch follows the list's ``resourceVersion``; when the server answers 410 Gone (the
version is older than the server keeps), the cache lists again and carries on from the new
list. Other failures are retried after a pause, the records served meanwhile being the last
ones seen, as an informer's would be.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from meltguard.k8s.client import ApiError, Kube
from meltguard.k8s.resources import Resource

log = logging.getLogger(__name__)

Record = TypeVar("Record")
Convert = Callable[[Mapping[str, Any]], Record]

#: Pauses after consecutive failed lists or watches (the last one repeats).
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
#: How long a first read waits for its cache's first list.
SYNC_TIMEOUT_SECONDS = 30.0
GONE = 410


class NamespaceWatch(Generic[Record]):
    """The records of every object of one kind in one namespace, kept up to date by a task.

    ``lists`` counts the lists made (1 while the watch never broke), for tests and metrics.
    """

    def __init__(self, client: Kube, kind: Resource, namespace: str,
                 convert: Convert[Record], labels: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.namespace = namespace
        self.labels = labels
        self.records: dict[str, Record] = {}
        self.lists = 0
        self._client = client
        self._convert = convert
        self._synced = asyncio.Event()
        self._task = asyncio.create_task(self._follow(),
                                         name=f"watch {kind.plural} in {namespace}")

    async def synced(self, timeout: float = SYNC_TIMEOUT_SECONDS) -> None:
        """Wait until the first list is in; :class:`ApiError` (status 0) after ``timeout``."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError as late:
            raise ApiError(0, "NotSynced", f"no list of {self.kind.plural} in "
                                           f"{self.namespace} within {timeout:g} s") from late

    async def close(self) -> None:
        """Stop following."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _follow(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                await self._watch(version)
            except ApiError as error:
                if error.status == GONE:
                    log.info("%s: %s; listing again", self._task.get_name(), error)
                    continue
                await self._pause(failures, error)
                failures += 1
            except Exception as error:  # a broken stream or a bug: never stop following
                await self._pause(failures, error)
                failures += 1

    async def _list(self) -> str:
        items, version = await self._client.list_all(self.kind, self.namespace, self.labels)
        self.records = {_name(item): self._convert(item) for item in items}
        self.lists += 1
        self._synced.set()
        return version

    async def _watch(self, version: str) -> None:
        async for change, item in self._client.watch_all(self.kind, self.namespace, version,
                                                         self.labels):
            if change == "DELETED":
                self.records.pop(_name(item), None)
            elif change in ("ADDED", "MODIFIED"):
                self.records[_name(item)] = self._convert(item)

    async def _pause(self, failures: int, error: Exception) -> None:
        delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
        log.warning("%s failed (%s); listing again in %g s", self._task.get_name(), error,
                    delay)
        await asyncio.sleep(delay)


def _name(item: Mapping[str, Any]) -> str:
    return str(item["metadata"]["name"])


class Watches:
    """The caches this operator follows, each started by its first reader."""

    def __init__(self, client: Kube) -> None:
        self._client = client
        self._watches: dict[tuple[Resource, str], NamespaceWatch[Any]] = {}

    async def of(self, kind: Resource, namespace: str, convert: Convert[Record],
                 labels: Mapping[str, str] | None = None) -> NamespaceWatch[Record]:
        """The synced cache of ``kind`` in ``namespace`` (started now if need be), of the
        objects with all of ``labels`` if given; one ``convert`` and one ``labels`` per kind."""
        key = (kind, namespace)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = NamespaceWatch(self._client, kind, namespace, convert,
                                                        labels)
        await watch.synced()
        return watch

    async def close(self) -> None:
        """Stop every watch."""
        watches, self._watches = list(self._watches.values()), {}
        for watch in watches:
            await watch.close()
