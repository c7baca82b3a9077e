"""The Kubernetes resources the operator touches, each one typed value with its URL builder.

A resource is named once here (group, version, plural, whether it is namespaced) and every
request path is built from it, so no module assembles API paths from strings of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from meltguard.api.models import ScaleTargetRef
from meltguard.api.vocabulary import GROUP, PLURAL, VERSION


@dataclass(frozen=True, slots=True)
class Resource:
    """One API resource; ``group`` is "" for the core API (``/api/v1``)."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """``apps/v1``, or ``v1`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, *, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """``/apis/apps/v1/namespaces/ns/deployments/x/scale`` and the like.

        ``namespace`` None means across all namespaces (a list) for a namespaced resource.
        """
        root = f"/apis/{self.api_version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if namespace is not None and self.namespaced:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
        if subresource is not None:
            parts.append(subresource)
        return "/".join(parts)


POLICIES = Resource(GROUP, VERSION, PLURAL)
PODS = Resource("", "v1", "pods")
CONFIGMAPS = Resource("", "v1", "configmaps")


def scale_target_resource(ref: ScaleTargetRef) -> Resource:
    """The resource of a scale target, by the Kubernetes naming convention for its kind
    (``Deployment`` -> ``deployments``)."""
    group, _, version = ref.api_version.rpartition("/")
    return Resource(group, version, ref.kind.lower() + "s")
