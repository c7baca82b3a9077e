"""The operator's way to the API server: lightkube, logged in once, shared with kopf.

Credentials come from lightkube's configuration (:func:`load_config`): the in-cluster
ServiceAccount first (its projected token file is read again whenever the server answers
401, so a rotated token is picked up), else the kubeconfig named by ``KUBECONFIG`` or
``~/.kube/config`` in any of its forms: certificate and key data or files, a bearer token
or token file, an exec plugin, basic auth. kopf is logged in with the same credentials
(:func:`kopf_connection`), and logs in again through it after a 401.

:class:`Kube` is the handful of calls the control loop makes (kopf watches the policies;
:mod:`meltguard.k8s.cache` the pods, workloads and quota ConfigMaps, through
:meth:`Kube.list_all` and :meth:`Kube.watch_all`), each answering plain dicts (or lightkube's
models, for the caches) and raising :class:`ApiError` (:class:`NotFound`, :class:`Conflict`)
on failure. Every one of them is listed in :mod:`meltguard.k8s.rbac`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any, cast

import httpx2
import kopf
import lightkube
from lightkube import operators
from lightkube.config.client_adapter import AsyncClient as ConnectedHttpClient
from lightkube.config.client_adapter import ConnectionParams, user_auth
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core import resource as lightkube_resource
from lightkube.core.client import LabelSelector
from lightkube.generic_resource import (
    GenericNamespacedResource,
    create_api_info,
    create_namespaced_resource,
)
from lightkube.models.autoscaling_v1 import Scale
from lightkube.resources.core_v1 import ConfigMap, Pod
from lightkube.types import PatchType

from meltguard.k8s.resources import POLICIES, Resource

REQUEST_TIMEOUT_SECONDS = 10.0
FIELD_MANAGER = "meltguard-operator"

Policy = create_namespaced_resource(POLICIES.group, POLICIES.version, POLICIES.kind,
                                    POLICIES.plural)


class ApiError(Exception):
    """The API server refused a request, or could not be reached (status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    """404: the object (or its resource) does not exist."""


class Conflict(ApiError):
    """409: a stale resourceVersion, or a name already taken."""


def _failure(status: int, reason: str, message: str) -> ApiError:
    kind = NotFound if status == 404 else Conflict if status == 409 else ApiError
    return kind(status, reason, message)


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Turn lightkube's and the transport's failures into :class:`ApiError` and kin."""
    try:
        yield
    except lightkube.ApiError as error:  # the server's Status, with its reason and message
        status = error.status
        raise _failure(int(status.code or 0), status.reason or "",
                       status.message or what) from error
    except httpx2.HTTPStatusError as error:  # an answer that is not a Kubernetes Status
        response = error.response
        raise _failure(response.status_code, response.reason_phrase, what) from error
    except httpx2.HTTPError as error:
        raise ApiError(0, type(error).__name__, f"{what}: {error}") from error


def load_config() -> SingleConfig:
    """In-cluster ServiceAccount credentials when running in a pod, else the kubeconfig's
    current context (``KUBECONFIG``, else ``~/.kube/config``)."""
    try:
        config = KubeConfig.from_env().get()
    except (lightkube.ConfigError, OSError) as error:
        raise kopf.LoginError(f"no Kubernetes credentials: {error}") from error
    if config is None:
        raise kopf.LoginError("the kubeconfig names no current context")
    return config


async def authorization_header(config: SingleConfig) -> str | None:
    """The ``Authorization`` header lightkube would send now: a token read from its file, an
    exec plugin run, basic auth; None for client certificates alone."""
    if config.user is None:
        return None
    auth = user_auth(config.user)
    if auth is None:
        return None
    request = httpx2.Request("GET", config.cluster.server)
    flow = auth.async_auth_flow(request)
    prepared = await anext(flow)
    await flow.aclose()
    return prepared.headers.get("Authorization")


def _file(config: SingleConfig, path: str | None) -> str | None:
    return str(config.abs_file(path)) if path else None


async def kopf_connection(config: SingleConfig) -> kopf.ConnectionInfo:
    """kopf's credentials, taken from the same configuration as the operator's own client."""
    scheme, _, token = (await authorization_header(config) or "").partition(" ")
    cluster, user = config.cluster, config.user
    return kopf.ConnectionInfo(
        server=cluster.server,
        ca_path=_file(config, cluster.certificate_auth),
        ca_data=cluster.certificate_auth_data,
        insecure=cluster.insecure,
        scheme=scheme or None,
        token=token or None,
        certificate_path=_file(config, user.client_cert) if user else None,
        certificate_data=user.client_cert_data if user else None,
        private_key_path=_file(config, user.client_key) if user else None,
        private_key_data=user.client_key_data if user else None,
        default_namespace=config.namespace,
    )


#: How long the server keeps one watch request open; lightkube then opens the next one from
#: the last resourceVersion seen.
WATCH_SERVER_TIMEOUT_SECONDS = 300



class _ScaleSubresource(lightkube_resource.NamespacedSubResource, Scale):
    """The ``/scale`` of a namespaced resource found by discovery (see :func:`scale_of`)."""


@cache
def scale_of(resource: Resource) -> type[_ScaleSubresource]:
    """lightkube's handle on ``resource``'s scale subresource (``autoscaling/v1`` Scale)."""
    info = lightkube_resource.ApiInfo(
        resource=lightkube_resource.ResourceDef("autoscaling", "v1", "Scale"),
        parent=lightkube_resource.ResourceDef(resource.group, resource.version, resource.kind),
        plural=resource.plural, verbs=["get", "patch"], action="scale")
    return cast(type[_ScaleSubresource],
                type(f"{resource.kind}Scale", (_ScaleSubresource,), {"_api_info": info}))


@cache
def raw_resource(resource: Resource) -> type[GenericNamespacedResource]:
    """lightkube's handle on ``resource`` that keeps its objects as the server's JSON (plain
    dicts): cheaper than typed models to decode and to keep, and nothing is refused."""
    info = create_api_info(resource.group, resource.version, resource.kind, resource.plural,
                           verbs=["list", "watch"])
    return cast(type[GenericNamespacedResource],
                type(f"Raw{resource.kind}", (GenericNamespacedResource,), {"_api_info": info}))


def selector_as_is(selector: str) -> LabelSelector:
    """A label selector string (as the scale subresource gives it) for lightkube's ``labels``.

    lightkube assembles a selector from (key, operator) pairs and writes an ``exists`` pair
    as its bare key, so the whole string passes through unchanged as one such pair.
    """
    return {selector: operators.exists()}


def _plain(obj: Any) -> dict[str, Any]:
    return cast(dict[str, Any], obj.to_dict())


class Kube:
    """The control loop's reads and writes, through one lightkube client."""

    def __init__(self, config: SingleConfig) -> None:
        self.config = config
        timeout = httpx2.Timeout(REQUEST_TIMEOUT_SECONDS)
        self._api = lightkube.AsyncClient(config, timeout=timeout, field_manager=FIELD_MANAGER)
        # Discovery documents are not resources: lightkube's own HTTP client, same credentials.
        self._http = ConnectedHttpClient(config, ConnectionParams(timeout=timeout))

    async def close(self) -> None:
        """Release the connection pools."""
        await self._api.close()
        await self._http.aclose()

    async def patch_policy_status(self, namespace: str, name: str,
                                  patch: Mapping[str, Any]) -> None:
        """A JSON merge patch of the policy's status subresource."""
        with api_errors(f"patch status of policy {namespace}/{name}"):
            await self._api.patch(Policy.Status, name, dict(patch), namespace=namespace,
                                  patch_type=PatchType.MERGE)

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods of ``namespace`` matching a label selector string."""
        with api_errors(f"list pods in {namespace} ({selector})"):
            return [_plain(pod) async for pod in
                    self._api.list(Pod, namespace=namespace, labels=selector_as_is(selector))]

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        """One ConfigMap."""
        with api_errors(f"get configmap {namespace}/{name}"):
            return _plain(await self._api.get(ConfigMap, name, namespace=namespace))

    async def create_configmap(self, namespace: str, body: Mapping[str, Any]) -> None:
        """A new ConfigMap (``body`` names its namespace)."""
        with api_errors(f"create configmap in {namespace}"):
            await self._api.create(cast(ConfigMap, ConfigMap.from_dict(dict(body))))

    async def patch_configmap(self, namespace: str, name: str,
                              patch: Mapping[str, Any]) -> None:
        """A JSON merge patch of one ConfigMap."""
        with api_errors(f"patch configmap {namespace}/{name}"):
            await self._api.patch(ConfigMap, name, dict(patch), namespace=namespace,
                                  patch_type=PatchType.MERGE)

    async def get_scale(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        """The ``/scale`` of one object of ``resource``."""
        with api_errors(f"get {resource.plural}/scale {namespace}/{name}"):
            return _plain(await self._api.get(scale_of(resource), name, namespace=namespace))

    async def patch_scale(self, resource: Resource, namespace: str, name: str,
                          operations: Sequence[Mapping[str, Any]]) -> None:
        """A JSON patch (RFC 6902 ``operations``) of one object's ``/scale``."""
        with api_errors(f"patch {resource.plural}/scale {namespace}/{name}"):
            await self._api.patch(scale_of(resource), name, [dict(op) for op in operations],
                                  namespace=namespace, patch_type=PatchType.JSON)

    async def list_all(self, resource: Resource, namespace: str,
                       labels: Mapping[str, str] | None = None
                       ) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``resource`` in ``namespace`` (with all of ``labels``, if given),
        and the list's resourceVersion to watch from."""
        with api_errors(f"list {resource.plural} in {namespace}"):
            listing = self._api.list(raw_resource(resource), namespace=namespace,
                                     labels=dict(labels) if labels else None)
            items = [dict(item) async for item in listing]
            return items, str(listing.resourceVersion)

    async def watch_all(self, resource: Resource, namespace: str, resource_version: str,
                        labels: Mapping[str, str] | None = None
                        ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Changes to objects of ``resource`` in ``namespace`` (with all of ``labels``, if
        given) after ``resource_version``, as ``(ADDED|MODIFIED|DELETED, object)``; an object
        that loses one of ``labels`` comes as DELETED. A 410 (the version is too old) raises
        :class:`ApiError`, and the caller lists again."""
        with api_errors(f"watch {resource.plural} in {namespace}"):
            async for change, item in self._api.watch(
                    raw_resource(resource), namespace=namespace,
                    labels=dict(labels) if labels else None,
                    resource_version=resource_version,
                    server_timeout=WATCH_SERVER_TIMEOUT_SECONDS):
                yield str(change), dict(item)

    async def api_resources(self, api_version: str) -> list[dict[str, Any]]:
        """Discovery: the resources (and subresources) one group version serves."""
        path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        with api_errors(f"discover {api_version}"):
            response = await self._http.get(path)
            if response.status_code == 404:
                raise NotFound(404, "NotFound", f"the server does not serve {api_version}")
            response.raise_for_status()
            answer = response.json()
        return [item for item in answer.get("resources") or [] if isinstance(item, dict)]
