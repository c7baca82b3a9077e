"""``--watch-configmaps NS``: limits from ConfigMaps labelled ``meltguard.io/quotas=true``.

lightkube (the operator's client too) lists the labelled ConfigMaps, then watches from the
list's resourceVersion. The set is listed again and replaced whole on start, after any
break (410 Gone, a dropped connection, an API error) and every ``watch_timeout_seconds``,
so a missed event never leaves stale limits. ``NS`` may be ``*``: every namespace.
Each ConfigMap is one source (``configmap:NS/NAME``) whose ``quotas.json`` key is parsed; a
malformed one keeps that ConfigMap's last good limits. Labels are checked here too, so a
ConfigMap that loses the label is withdrawn even if the server's selector missed it.

Credentials are lightkube's: the in-cluster ServiceAccount (its token file read again after
a 401, as it rotates), else the kubeconfig (``KUBECONFIG``, else ``~/.kube/config``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx2
import lightkube
from lightkube.core.client import LabelSelector
from lightkube.resources.core_v1 import ConfigMap

from meltguard.api.quotas import QUOTAS_JSON_KEY, QUOTAS_LABELS, carries_quotas_label
from meltguard.quota.limits import LimitsRegistry
from meltguard.quota.sources import ReloadCounter, load_document

log = logging.getLogger(__name__)

SOURCE_PREFIX = "configmap:"
ALL_NAMESPACES = lightkube.ALL_NS


def default_client() -> lightkube.AsyncClient:
    """In-cluster credentials when running in a pod, else the local kubeconfig."""
    return lightkube.AsyncClient()


def _source_id(configmap: dict[str, Any]) -> str:
    meta = configmap.get("metadata") or {}
    return f"{SOURCE_PREFIX}{meta.get('namespace')}/{meta.get('name')}"


class ConfigMapLimitsSource:
    """Keeps ``registry`` equal to the labelled ConfigMaps of ``namespace`` (``*``: all)."""

    def __init__(
        self,
        namespace: str,
        registry: LimitsRegistry,
        count: ReloadCounter,
        client: lightkube.AsyncClient,
        *,
        watch_timeout_seconds: int = 300,
        retry_seconds: float = 1.0,
    ) -> None:
        self.namespace = namespace
        self.registry = registry
        self.count = count
        self.client = client
        self.watch_timeout_seconds = watch_timeout_seconds
        self.retry_seconds = retry_seconds

    @property
    def _owned_prefix(self) -> str:
        """The sources this watcher answers for (others may watch other namespaces)."""
        if self.namespace == ALL_NAMESPACES:
            return SOURCE_PREFIX
        return f"{SOURCE_PREFIX}{self.namespace}/"

    async def run(self) -> None:
        """List and watch until cancelled."""
        while True:
            try:
                await self._list_and_watch()
                continue  # the watch ran its time: list again at once
            except lightkube.ApiError as error:
                if error.status.code == 410:
                    log.info("watch of ConfigMaps in %s expired; listing again", self.namespace)
                else:
                    log.warning(
                        "watching ConfigMaps in %s failed: %s %s",
                        self.namespace,
                        error.status.code,
                        error.status.message,
                    )
            except httpx2.HTTPError as error:
                log.warning("watching ConfigMaps in %s failed: %s", self.namespace, error)
            await asyncio.sleep(self.retry_seconds)

    def _apply(self, event_type: str, configmap: dict[str, Any]) -> None:
        source = _source_id(configmap)
        if event_type == "DELETED" or not carries_quotas_label(configmap):
            self.registry.remove(source)
            return
        raw = (configmap.get("data") or {}).get(QUOTAS_JSON_KEY)
        if raw is None:
            log.error("ignoring %s: it has no %s key", source, QUOTAS_JSON_KEY)
            self.count("invalid")
            return
        load_document(source, raw, self.registry, self.count)

    def _replace_all(self, configmaps: list[dict[str, Any]]) -> None:
        listed = {_source_id(configmap) for configmap in configmaps}
        for source in self.registry.sources - listed:
            if source.startswith(self._owned_prefix):
                self.registry.remove(source)
        for configmap in configmaps:
            self._apply("ADDED", configmap)

    async def _list_and_watch(self) -> None:
        selector: LabelSelector = dict(QUOTAS_LABELS)
        listing = self.client.list(ConfigMap, namespace=self.namespace, labels=selector)
        self._replace_all([configmap.to_dict() async for configmap in listing])
        changes = self.client.watch(
            ConfigMap,
            namespace=self.namespace,
            labels=selector,
            resource_version=listing.resourceVersion,
            server_timeout=self.watch_timeout_seconds,
        )
        try:
            async with asyncio.timeout(self.watch_timeout_seconds):
                async for event_type, configmap in changes:
                    if event_type in ("ADDED", "MODIFIED", "DELETED"):
                        self._apply(event_type, configmap.to_dict())
        except TimeoutError:
            return
