"""A resource metrics API (``metrics.k8s.io/v1beta1``) for the test control plane: the part of
metrics-server the HPA controller reads, served as an aggregated API.

Every pod is reported using a share of its memory request that the test sets per namespace
(:meth:`MetricsApi.set_utilization`), so that the HPA's ``Resource`` metric ``memory``
with ``target.type: Utilization`` sees exactly that whole percent. The pods are listed from the
API server at each request, as metrics-server lists what kubelets run.

How the API server reaches it: an ``APIService`` names a Service of type ``ExternalName``
pointing at ``localhost``. With ``--enable-aggregator-routing`` off (the default), the
aggregator dials a Service's cluster IP, and for an ``ExternalName`` Service the name it
points at, at the ``APIService``'s port; Endpoints, which refuse loopback addresses, are never
looked at. The server speaks TLS with a certificate of the test CA; the ``APIService`` skips
verifying it (the certificate names ``localhost``, not the Service's ``*.svc`` name).
"""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lightkube.utils.quantity import parse_quantity

from .certificates import KeyPair

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
API_SERVICE = f"{VERSION}.{GROUP}"
#: How long a sample is said to average over (metrics-server's default resolution).
WINDOW = "15s"
RESOURCES = [
    {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics",
     "verbs": ["get", "list"]},
    {"name": "nodes", "singularName": "", "namespaced": False, "kind": "NodeMetrics",
     "verbs": ["get", "list"]},
]

#: ``(namespace, label selector) -> pods`` as dicts (the API server's pod list).
ListPods = Callable[[str, dict[str, str]], list[dict[str, Any]]]


class BadRequest(ValueError):
    """A request this server cannot answer; the message names what is wrong."""


def parse_selector(selector: str) -> dict[str, str]:
    """``app=a,tier=b`` -> ``{"app": "a", "tier": "b"}``; only equality terms (what the HPA
    sends for a workload's ``matchLabels``)."""
    labels = {}
    for term in filter(None, selector.split(",")):
        key, equals, value = term.partition("=")
        if not equals or value.startswith("=") or key.endswith("!"):
            raise BadRequest(f"labelSelector term {term!r}: only key=value terms are served")
        labels[key.strip()] = value.strip()
    return labels


def memory_request(pod: dict[str, Any], container: dict[str, Any]) -> Decimal:
    """A container's memory request in bytes; the HPA needs one for a utilization target."""
    where = f"pod {pod['metadata']['name']}: container {container['name']}"
    requested = ((container.get("resources") or {}).get("requests") or {}).get("memory")
    try:
        quantity = parse_quantity(requested)
    except ValueError as error:
        raise BadRequest(f"{where} requests memory {requested!r}: {error}") from error
    if quantity is None:
        raise BadRequest(f"{where} requests no memory")
    return quantity


def pod_metrics(pod: dict[str, Any], *, utilization_percent: int,
                timestamp: str) -> dict[str, Any]:
    """One ``PodMetrics``: each container using ``utilization_percent`` of its memory request
    (whole bytes; exact when the request is a multiple of 100 bytes)."""
    meta = pod["metadata"]
    containers = [
        {"name": container["name"],
         "usage": {"cpu": "0", "memory": str(int(memory_request(pod, container)
                                                  * utilization_percent / 100))}}
        for container in pod["spec"]["containers"]]
    return {"metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": meta.get("labels") or {},
                         "creationTimestamp": timestamp},
            "timestamp": timestamp, "window": WINDOW, "containers": containers}


def discovery(path: str) -> dict[str, Any] | None:
    """The discovery documents of the group, or None for another path."""
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    group: dict[str, Any] = {"name": GROUP, "versions": [version], "preferredVersion": version}
    documents: dict[str, dict[str, Any]] = {
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]},
        f"/apis/{GROUP}": {"kind": "APIGroup", "apiVersion": "v1", **group},
        f"/apis/{GROUP_VERSION}": {"kind": "APIResourceList", "apiVersion": "v1",
                                   "groupVersion": GROUP_VERSION, "resources": RESOURCES},
    }
    return documents.get(path.rstrip("/"))


def _pods_path(path: str) -> tuple[str, str | None] | None:
    """``(namespace, pod name or None)`` of a ``.../namespaces/NS/pods[/NAME]`` path."""
    parts = path.strip("/").split("/")
    prefix = ["apis", GROUP, VERSION, "namespaces"]
    if parts[:4] != prefix or len(parts) not in (6, 7) or parts[5] != "pods":
        return None
    return parts[4], parts[6] if len(parts) == 7 else None


def status(code: HTTPStatus, message: str) -> dict[str, Any]:
    """A ``Status`` document, as Kubernetes APIs answer errors."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": code.phrase.replace(" ", ""), "code": int(code)}


class MetricsApi:
    """The answers, apart from HTTP: discovery, and pod metrics from the listed pods."""

    def __init__(self, list_pods: ListPods) -> None:
        self._list_pods = list_pods
        self._utilization: dict[str, int] = {}
        self._lock = threading.Lock()

    def set_utilization(self, namespace: str, percent: int) -> None:
        """From now on every pod of ``namespace`` uses ``percent`` of its memory request."""
        if not 0 <= percent <= 1000:
            raise ValueError(f"utilization {percent}%: must be a whole percent 0..1000")
        with self._lock:
            self._utilization[namespace] = percent

    def answer(self, target: str, *, now: datetime.datetime) -> tuple[HTTPStatus, dict[str, Any]]:
        """The status and JSON body for a GET of ``target`` (path and query)."""
        url = urllib.parse.urlsplit(target)
        document = discovery(url.path)
        if document is not None:
            return HTTPStatus.OK, document
        found = _pods_path(url.path)
        if found is None:
            return HTTPStatus.NOT_FOUND, status(HTTPStatus.NOT_FOUND, f"no route {url.path}")
        selector = urllib.parse.parse_qs(url.query).get("labelSelector", [""])[0]
        return self._pods(*found, selector=selector, now=now)

    def _pods(self, namespace: str, name: str | None, *, selector: str,
              now: datetime.datetime) -> tuple[HTTPStatus, dict[str, Any]]:
        """``PodMetricsList`` of the pods matching ``selector``, or the ``PodMetrics`` of
        the one named."""
        with self._lock:
            percent = self._utilization.get(namespace)
        if percent is None:
            return HTTPStatus.NOT_FOUND, status(HTTPStatus.NOT_FOUND,
                                                f"no utilization set for namespace {namespace}")
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            items = [pod_metrics(pod, utilization_percent=percent, timestamp=stamp)
                     for pod in self._list_pods(namespace, parse_selector(selector))
                     if name is None or pod["metadata"]["name"] == name]
        except BadRequest as error:
            return HTTPStatus.BAD_REQUEST, status(HTTPStatus.BAD_REQUEST, str(error))
        if name is None:
            return HTTPStatus.OK, {"kind": "PodMetricsList", "apiVersion": GROUP_VERSION,
                                   "metadata": {}, "items": items}
        if not items:
            return HTTPStatus.NOT_FOUND, status(HTTPStatus.NOT_FOUND, f"pod {name} not found")
        return HTTPStatus.OK, {"kind": "PodMetrics", "apiVersion": GROUP_VERSION, **items[0]}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def setup(self) -> None:
        """The TLS handshake, in this request's thread (a slow one blocks no other request)."""
        self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:
        code, body = self.server.api.answer(self.path, now=datetime.datetime.now(datetime.UTC))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the API server polls discovery every few seconds."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: MetricsApi, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api
        self._context = context

    def get_request(self) -> tuple[Any, Any]:
        """Accept and wrap in TLS; the handshake waits for the request's thread."""
        connection, address = super().get_request()
        return self._context.wrap_socket(connection, server_side=True,
                                         do_handshake_on_connect=False), address


class MetricsApiServer:
    """:class:`MetricsApi` over HTTPS on 127.0.0.1 (a free port), in a thread of its own."""

    def __init__(self, api: MetricsApi, serving: KeyPair) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(serving.cert_path), str(serving.key_path))
        self.api = api
        self._server = _Server(api, context)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="metrics-api", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def registration(port: int, *, namespace: str = "kube-system",
                 service: str = "metrics-api") -> list[dict[str, Any]]:
    """The Service (``ExternalName: localhost``) and the ``APIService`` that send the API
    server's ``metrics.k8s.io`` requests to the server on ``port``."""
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": service, "namespace": namespace},
         "spec": {"type": "ExternalName", "externalName": "localhost"}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": API_SERVICE},
         "spec": {"group": GROUP, "version": VERSION, "insecureSkipTLSVerify": True,
                  "groupPriorityMinimum": 100, "versionPriority": 100,
                  "service": {"namespace": namespace, "name": service, "port": port}}},
    ]


def available(api_service: dict[str, Any]) -> dict[str, Any]:
    """The ``Available`` condition of an ``APIService`` (empty while it has none)."""
    conditions = (api_service.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Available"), {})
