"""``--watch-configmaps NS``: limits from ConfigMaps labelled ``meltguard.io/quotas=true``.

The official ``kubernetes`` client is synchronous, so list-then-watch runs in a daemon
thread; every change is handed to the event loop (``call_soon_threadsafe``) which owns the
registry. On start and after any break (410 Gone, a dropped connection, an API error) the
thread lists again and replaces the whole set, so a missed event never leaves stale limits.
Each ConfigMap is one source (``configmap:NS/NAME``) whose ``quotas.json`` key is parsed; a
malformed one keeps that ConfigMap's last good limits. Labels are checked here too, so a
ConfigMap that loses the label is withdrawn even if the server's selector missed it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from meltguard.api.quotas import QUOTAS_JSON_KEY, QUOTAS_LABEL
from meltguard.quota.limits import LimitsRegistry
from meltguard.quota.sources import ReloadCounter, load_document

log = logging.getLogger(__name__)

LABEL_SELECTOR = f"{QUOTAS_LABEL}=true"


def default_api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the local kubeconfig."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def _source_id(configmap: dict[str, Any]) -> str:
    meta = configmap.get("metadata") or {}
    return f"configmap:{meta.get('namespace')}/{meta.get('name')}"


def _labelled(configmap: dict[str, Any]) -> bool:
    labels = (configmap.get("metadata") or {}).get("labels") or {}
    return labels.get(QUOTAS_LABEL) == "true"


class ConfigMapLimitsSource:
    """Keeps ``registry`` equal to the labelled ConfigMaps of ``namespace``."""

    def __init__(
        self,
        namespace: str,
        registry: LimitsRegistry,
        count: ReloadCounter,
        api_client: client.ApiClient,
        loop: asyncio.AbstractEventLoop,
        watch_timeout_seconds: int = 300,
        retry_seconds: float = 1.0,
    ) -> None:
        self.namespace = namespace
        self.registry = registry
        self.count = count
        self.api = client.CoreV1Api(api_client)
        self.loop = loop
        self.watch_timeout_seconds = watch_timeout_seconds
        self.retry_seconds = retry_seconds
        self._stopped = threading.Event()
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]

    async def run(self) -> None:
        """Watch in a daemon thread until cancelled."""
        thread = threading.Thread(target=self._watch_forever, name="quota-configmaps", daemon=True)
        thread.start()
        try:
            await asyncio.Event().wait()  # cancelled by the server on shutdown
        finally:
            self._stopped.set()
            self._watch.stop()  # type: ignore[no-untyped-call]

    # ---- on the event loop ----

    def _apply(self, event_type: str, configmap: dict[str, Any]) -> None:
        source = _source_id(configmap)
        if event_type == "DELETED" or not _labelled(configmap):
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
            if source.startswith("configmap:"):
                self.registry.remove(source)
        for configmap in configmaps:
            self._apply("ADDED", configmap)

    # ---- in the thread ----

    def _watch_forever(self) -> None:
        while not self._stopped.is_set():
            try:
                self._list_and_watch()
            except Exception as error:  # any break means: list again
                if isinstance(error, ApiException) and error.status == 410:
                    log.info("watch of ConfigMaps in %s expired; listing again", self.namespace)
                else:
                    log.warning("watching ConfigMaps in %s failed: %s", self.namespace, error)
                self._stopped.wait(self.retry_seconds)

    def _list_and_watch(self) -> None:
        listing = self.api.list_namespaced_config_map(
            self.namespace, label_selector=LABEL_SELECTOR, _preload_content=False
        )
        body = _json(listing)
        self.loop.call_soon_threadsafe(self._replace_all, body.get("items") or [])
        version = (body.get("metadata") or {}).get("resourceVersion")
        for event in self._watch.stream(  # type: ignore[no-untyped-call]
            self.api.list_namespaced_config_map,
            self.namespace,
            label_selector=LABEL_SELECTOR,
            resource_version=version,
            timeout_seconds=self.watch_timeout_seconds,
            _request_timeout=self.watch_timeout_seconds + 30,
        ):
            if self._stopped.is_set():
                return
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                self.loop.call_soon_threadsafe(self._apply, event["type"], event["raw_object"])


def _json(response: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(response.data)
    return decoded
