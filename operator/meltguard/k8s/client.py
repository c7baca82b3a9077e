"""A small asyncio client for the few Kubernetes API calls the operator makes itself.

kopf owns watching, finalizers and its own annotations; the control loop's reads and writes
(scale subresource, pods, the quota ConfigMap, the policy's status) go through this client,
which uses the credentials kopf's login handler obtained (:class:`Connection`). Every call
the operator can make here is listed in :mod:`meltguard.k8s.rbac`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT_SECONDS = 10.0


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


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how to reach the API server (taken from kopf's ``ConnectionInfo``)."""

    server: str
    token: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    certificate_path: str | None = None
    private_key_path: str | None = None

    @classmethod
    def from_kopf(cls, info: Any) -> Connection:
        """Copy the fields this client supports from a ``kopf.ConnectionInfo``."""
        return cls(server=info.server.rstrip("/"), token=info.token, ca_path=info.ca_path,
                   ca_data=info.ca_data, insecure=bool(info.insecure),
                   certificate_path=info.certificate_path,
                   private_key_path=info.private_key_path)

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS settings for aiohttp: the cluster CA, client certificates, or none at all."""
        if self.insecure:
            return False
        if not (self.ca_path or self.ca_data or self.certificate_path):
            return True
        context = ssl.create_default_context(
            cafile=self.ca_path,
            cadata=self.ca_data.decode() if self.ca_data else None,
        )
        if self.certificate_path:
            context.load_cert_chain(self.certificate_path, self.private_key_path)
        return context


def _error(status: int, body: Any, fallback: str) -> ApiError:
    reason = body.get("reason", "") if isinstance(body, Mapping) else ""
    message = body.get("message", "") if isinstance(body, Mapping) else ""
    kind = NotFound if status == 404 else Conflict if status == 409 else ApiError
    return kind(status, reason or fallback, message or fallback)


class KubeClient:
    """JSON requests to one API server; raises :class:`ApiError` (and subclasses) on failure."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        headers = {"Accept": "application/json", "User-Agent": "meltguard-operator"}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
            connector=aiohttp.TCPConnector(ssl=connection.ssl_context()),
        )

    async def close(self) -> None:
        """Release the connection pool."""
        await self._session.close()

    async def request(self, method: str, path: str, *, body: Any = None,
                      params: Mapping[str, str] | None = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        """One request; the decoded JSON answer, or an :class:`ApiError`."""
        url = self._connection.server + path
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            async with self._session.request(method, url, json=body, params=params,
                                             headers=headers) as response:
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                if response.status >= 400:
                    raise _error(response.status, answer, response.reason or "error")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, type(exc).__name__, f"{method} {path}: {exc}") from exc
        if not isinstance(answer, dict):
            raise ApiError(response.status, "BadResponse", f"{method} {path}: not a JSON object")
        return answer

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET one object or a list."""
        return await self.request("GET", path, params=params)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH with a JSON merge patch (RFC 7386)."""
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new object to a collection."""
        return await self.request("POST", path, body=body)
