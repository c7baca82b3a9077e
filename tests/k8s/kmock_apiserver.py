"""kmock 0.8 made to behave like a Kubernetes API server where meltguard relies on it.

kmock's :class:`~kmock.KubernetesEmulator` stores objects and serves list/watch/get/create/
patch/delete, but (checked by hand against kmock 0.8) it sets no
``resourceVersion``/``uid``/``generation``, answers a failed JSON-patch ``test`` op with 500,
replays every object on each watch (ignoring ``?resourceVersion=``) and subscribes only after
that replay, ignores label/field selectors, serves ``/scale`` as the whole object and lets a
main-resource patch overwrite ``status``. :class:`ApiServer` keeps kmock's HTTP server, request
parsing, request log (``server.requests``), object history (``server.objects``) and reaction DSL,
and replaces only the serving of object reads and writes:

* every write stamps ``metadata.resourceVersion`` (one global counter), ``uid``,
  ``creationTimestamp`` and ``generation`` (bumped when anything but metadata/status changes);
* a merge patch carrying ``metadata.resourceVersion`` is a precondition: 409 when stale;
  a JSON patch whose ``test`` op fails (or that cannot apply) is a 422;
* every change goes to an event log indexed by resourceVersion, so a watch from a
  resourceVersion streams only later changes and a watch without one replays the current
  objects and then continues from the same point: nothing is lost, nothing repeated;
* ``labelSelector`` (equality and set-based) and ``fieldSelector`` (equality on dotted paths)
  filter lists and watches;
* ``/scale`` reads and writes an ``autoscaling/v1`` Scale (whose spec leaves out a zero
  count, as a real server's does); ``/status`` writes only ``status``,
  and the main resource ignores ``status`` for resources declared with that subresource;
* ``generateName`` is honoured (kopf posts Events that way);
* unlike a real server, a create keeps the ``status`` it is given, so a test can build pods
  and Deployments as the kubelet and controllers would have left them;
* ``/api/v1/namespaces`` parses (kmock 0.8 fails on it with a ValueError, see
  :func:`_parse_path_with_namespaces`), so kopf can list and watch namespaces.

Because the writes are served as kmock fallbacks, a test can still inject faults with kmock's
DSL (``server['patch', kmock.subresource('scale')][:1] << 409``): the reaction answers and the
object is left untouched, as on a real server that refused the write.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch
import kmock
from kmock._internal import apps, parsing, rendering

Body = dict[str, Any]
ObjectKey = tuple[kmock.resource, str | None, str]

SCALE_SUBRESOURCE = "scale"
STATUS_SUBRESOURCE = "status"


class Unprocessable(kmock.KubernetesError):
    """422: the patch could not be applied (a failed ``test`` op, a bad path)."""

    def __init__(self, message: str) -> None:
        super().__init__(status=422, reason="Invalid", message=message)


class Conflict(kmock.KubernetesError):
    """409: a stale resourceVersion precondition, or a name that already exists."""

    def __init__(self, message: str, reason: str = "Conflict") -> None:
        super().__init__(status=409, reason=reason, message=message)


class NotFound(kmock.KubernetesError):
    """404 for one object, with the API server's reason."""

    def __init__(self, message: str) -> None:
        super().__init__(status=404, reason="NotFound", message=message)


_kmock_parse_path = parsing.parse_path


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    """kmock's path parser, plus the namespaces collection it cannot parse.

    kmock 0.8 reads ``/api/v1/namespaces[/NAME]`` as a namespaced URL with nothing after the
    ``namespaces`` segment and raises; here it is the cluster-scoped ``namespaces`` resource.
    """
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path_with_namespaces


# --------------------------------------------------------------------------------------------
# Pure helpers: merge patch, selectors, Scale views.
# --------------------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, ``None`` deletes, the rest replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_patch(body: Body, patch: Any, content_type: str) -> Body:
    """Apply a JSON patch (list) or a merge patch (dict); a failing JSON patch is a 422."""
    if "json-patch" in content_type or isinstance(patch, list):
        try:
            result: Body = jsonpatch.apply_patch(body, patch, in_place=False)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise Unprocessable(f"the JSON patch cannot be applied: {exc}") from exc
        return result
    if not isinstance(patch, Mapping):
        raise Unprocessable("a merge patch must be a JSON object")
    merged: Body = merge_patch(body, patch)
    return merged


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: ``key op values``."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=", "notin"


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside ``in (a,b)`` parentheses."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    terms.append(current.strip())
    return [term for term in terms if term]


def _parse_term(term: str) -> Requirement:
    for word, op in ((" notin ", "notin"), (" in ", "in")):
        if word in term:
            key, _, rest = term.partition(word)
            values = frozenset(v.strip() for v in rest.strip().strip("()").split(",") if v.strip())
            return Requirement(key.strip(), op, values)
    for token, op in (("!=", "!="), ("==", "="), ("=", "=")):
        if token in term:
            key, _, value = term.partition(token)
            return Requirement(key.strip(), op, frozenset({value.strip()}))
    if term.startswith("!"):
        return Requirement(term[1:].strip(), "!exists")
    return Requirement(term, "exists")


def parse_label_selector(selector: str) -> tuple[Requirement, ...]:
    """Parse ``a=b,c!=d,e in (x,y),!f,g`` into requirements (all must hold)."""
    return tuple(_parse_term(term) for term in _split_terms(selector))


def _field_value(body: Mapping[str, Any], path: str) -> str | None:
    node: Any = body
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return None if node is None else str(node)


def matches_selectors(body: Mapping[str, Any], params: Mapping[str, str]) -> bool:
    """Whether an object passes the request's ``labelSelector`` and ``fieldSelector``."""
    labels = body.get("metadata", {}).get("labels") or {}
    for requirement in parse_label_selector(params.get("labelSelector", "")):
        if not requirement.matches(labels):
            return False
    for term in _split_terms(params.get("fieldSelector", "")):
        requirement = _parse_term(term)
        value = _field_value(body, requirement.key)
        fields = {requirement.key: value} if value is not None else {}
        if not requirement.matches(fields):
            return False
    return True


def selector_string(label_selector: Mapping[str, Any] | None) -> str:
    """A ``spec.selector`` (LabelSelector) as the string a Scale's ``status.selector`` holds."""
    selector = label_selector or {}
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = ",".join(expression.get("values") or [])
        terms.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[operator])
    return ",".join(terms)


def scale_view(body: Mapping[str, Any]) -> Body:
    """The ``autoscaling/v1`` Scale of an object with ``spec.replicas``."""
    meta = body.get("metadata", {})
    spec = body.get("spec", {})
    status = body.get("status", {})
    replicas = spec.get("replicas", 0)
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {key: meta[key] for key in ("name", "namespace", "uid", "resourceVersion",
                                                 "creationTimestamp") if key in meta},
        "spec": {"replicas": replicas} if replicas else {},  # a real server omits a zero
        "status": {"replicas": status.get("replicas", spec.get("replicas", 0)),
                   "selector": selector_string(spec.get("selector"))},
    }


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without(body: Mapping[str, Any], *keys: str) -> Body:
    return {key: value for key, value in body.items() if key not in keys}


# --------------------------------------------------------------------------------------------
# The server.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WatchEvent:
    """One entry of the change log: the object as it was right after the change."""

    resource_version: int
    resource: kmock.resource
    type: str
    body: Body
    at: float  # time.monotonic() when the change was stored


class ApiServer(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator with the API-server semantics listed in the module docstring."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._revision = 0
        self._changes: list[WatchEvent] = []
        self._changed = asyncio.Event()
        self._builtin_reactions = {id(payload) for payload in self._payloads}
        self._direct = {
            kmock.action.LIST: rendering.Response.guess(self._serve_list),
            kmock.action.WATCH: rendering.Response.guess(self._serve_watch),
            kmock.action.FETCH: rendering.Response.guess(self._serve_fetch),
            kmock.action.CREATE: rendering.Response.guess(self._serve_create),
            kmock.action.UPDATE: rendering.Response.guess(self._serve_update),
            kmock.action.DELETE: rendering.Response.guess(self._serve_delete),
        }

    async def _handle(self, request: rendering.Request) -> Any:
        """Serve a request: through kmock's reactions only while a test has added some.

        kmock matches a request against a reaction by scanning every request recorded so far
        (``request in view``), so each request costs O(all requests) and a long test slows
        quadratically. Object requests go straight to the fallbacks below unless a test
        registered a reaction (a fault to inject); everything is still in the request log.
        kmock's emulator also changes objects in _handle() before any reaction is considered;
        here the writes happen in the fallbacks, so a reaction that answers a write leaves the
        object alone.
        """
        direct = self._direct.get(request.action) if request.action is not None else None
        is_object_request = request.resource is not None and request.resource.plural
        if direct is None or not is_object_request or self._has_test_reactions():
            return await apps.RawHandler._handle(self, request)
        return await direct(request)

    def _has_test_reactions(self) -> bool:
        return any(id(payload) not in self._builtin_reactions and not payload._disabled.is_set()
                   for payload in self._payloads)

    # ---- direct access for tests (not through HTTP: the request log stays the operator's) ----

    def stored(self, resource: str | kmock.resource, namespace: str | None,
               name: str) -> Body | None:
        """The stored object, or None."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def create_object(self, resource: str | kmock.resource, body: Body) -> Body:
        """Create an object as a client would, with metadata stamped and watchers told."""
        return self._create(kmock.resource(resource), body.get("metadata", {}).get("namespace"),
                            body)

    def patch_object(self, resource: str | kmock.resource, namespace: str | None, name: str,
              patch: Any, subresource: str | None = None) -> Body:
        """Patch an object as a client would (merge patch for a dict, JSON patch for a list)."""
        content_type = "application/json-patch+json" if isinstance(patch, list) else "merge"
        return self._update(kmock.resource(resource), namespace, name, patch, content_type,
                            subresource)

    def delete_object(self, resource: str | kmock.resource, namespace: str | None,
                      name: str) -> None:
        """Delete an object (finalizers honoured)."""
        self._delete(kmock.resource(resource), namespace, name)

    @property
    def request_log(self) -> list[rendering.Request]:
        """Every request served so far, in order (kmock records them; iterating yields them)."""
        return list(iter(self))

    def changes_since(self, resource_version: int) -> list[WatchEvent]:
        """Every change stored after ``resource_version``, oldest first, with its time."""
        return self._changes[resource_version:]

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out."""
        return self._revision

    # ---- the store ----

    def _status_isolated(self, resource: kmock.resource) -> bool:
        return STATUS_SUBRESOURCE in self.resources[resource].subresources

    def _publish(self, resource: kmock.resource, event_type: str, body: Body) -> None:
        event = WatchEvent(self._revision, resource, event_type, copy.deepcopy(body),
                           time.monotonic())
        self._changes.append(event)
        self._changed.set()
        self._changed = asyncio.Event()

    def _stored(self, key: ObjectKey) -> Body:
        if key not in self.objects or self.objects[key].deleted:
            raise NotFound(f"{key[0].plural} {key[2]!r} not found in namespace {key[1]!r}")
        return copy.deepcopy(self.objects[key].raw)

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _create(self, resource: kmock.resource, namespace: str | None, body: Body) -> Body:
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise Unprocessable("metadata.name: Required value")
        if namespace is not None:
            meta["namespace"] = namespace
        key = (resource, meta.get("namespace"), meta["name"])
        if key in self.objects and not self.objects[key].deleted:
            raise Conflict(f"{resource.plural} {meta['name']!r} already exists", "AlreadyExists")
        meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now(),
                    resourceVersion=self._next_revision())
        if key in self.objects:
            self.objects[key].create(body)
        else:
            self.objects[key] = body
        self._publish(resource, "ADDED", body)
        return body

    def _check_precondition(self, old: Body, patch: Any) -> None:
        if not isinstance(patch, Mapping):
            return
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        current = old["metadata"]["resourceVersion"]
        if wanted is not None and str(wanted) != current:
            raise Conflict(f"the object has been modified (resourceVersion {wanted} is stale, "
                           f"now {current}); please apply your changes to the latest version")

    def _patched_body(self, resource: kmock.resource, old: Body, patch: Any,
                      content_type: str, subresource: str | None) -> Body:
        """The object after the patch, with subresource and status isolation applied."""
        if subresource == SCALE_SUBRESOURCE:
            scale = apply_patch(scale_view(old), patch, content_type)
            return merge_patch(old, {"spec": {"replicas": scale["spec"].get("replicas", 0)}})  # type: ignore[no-any-return]
        new = apply_patch(old, patch, content_type)
        if subresource == STATUS_SUBRESOURCE:
            return {**_without(old, "status"), **({"status": new["status"]} if "status" in new
                                                  else {})}
        if subresource is not None:
            raise NotFound(f"no subresource {subresource!r}")
        if self._status_isolated(resource):
            new = {**_without(new, "status"), **({"status": old["status"]} if "status" in old
                                                 else {})}
        return new

    def _update(self, resource: kmock.resource, namespace: str | None, name: str, patch: Any,
                content_type: str, subresource: str | None) -> Body:
        key = (resource, namespace, name)
        old = self._stored(key)
        if subresource != SCALE_SUBRESOURCE:
            self._check_precondition(old, patch)
        new = self._patched_body(resource, old, patch, content_type, subresource)
        meta = new.setdefault("metadata", {})
        for immutable in ("uid", "creationTimestamp", "name", "namespace"):
            if immutable in old["metadata"]:
                meta[immutable] = old["metadata"][immutable]
        if _without(new, "metadata", "status") != _without(old, "metadata", "status"):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        meta["resourceVersion"] = self._next_revision()
        self.objects[key].history.append(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects[key].delete()
            self._publish(resource, "DELETED", new)
        else:
            self._publish(resource, "MODIFIED", new)
        return scale_view(new) if subresource == SCALE_SUBRESOURCE else new

    def _delete(self, resource: kmock.resource, namespace: str | None, name: str) -> Body:
        key = (resource, namespace, name)
        old = self._stored(key)
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return old
            return self._update(resource, namespace, name,
                                {"metadata": {"deletionTimestamp": _now()}}, "merge", None)
        old["metadata"]["resourceVersion"] = self._next_revision()
        self.objects[key].delete()
        self._publish(resource, "DELETED", old)
        return old

    def _matching(self, request: rendering.Request, body: Mapping[str, Any]) -> bool:
        meta = body.get("metadata", {})
        return ((request.namespace is None or meta.get("namespace") == request.namespace)
                and (request.name is None or meta.get("name") == request.name)
                and matches_selectors(body, request.params))

    # ---- kmock fallbacks, by action ----

    def _known(self, request: rendering.Request) -> kmock.resource:
        resource: kmock.resource | None = request.resource
        declared = resource is not None and resource in self.resources
        if resource is None or (not declared and resource not in self._get_resources()):
            raise kmock.KubernetesResourceNotFoundError()
        return resource

    async def _serve_list(self, request: rendering.Request) -> Any:
        resource = self._known(request)
        items = [obj.raw for (res, _, _), obj in self.objects.items()
                 if res == resource and not obj.deleted and self._matching(request, obj.raw)]
        return {"apiVersion": "v1", "kind": "List", "items": items,
                "metadata": {"resourceVersion": str(self._revision)}}

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        yield b""  # send the headers now, even if nothing happens for a while
        resource = self._known(request)
        since = request.params.get("resourceVersion", "")
        cursor = self._revision
        if since in ("", "0"):
            for (res, _, _), obj in list(self.objects.items()):
                if res == resource and not obj.deleted and self._matching(request, obj.raw):
                    yield {"type": "ADDED", "object": obj.raw}
        else:
            cursor = int(since)
        timeout = float(request.params.get("timeoutSeconds", 0)) or None
        async for event in self._changes_after(cursor, timeout):
            if event.resource == resource and self._matching(request, event.body):
                yield {"type": event.type, "object": event.body}

    async def _changes_after(self, cursor: int, timeout: float | None) -> AsyncIterator[WatchEvent]:
        """Every logged change after ``cursor``, waiting for new ones (until the timeout)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            changed = self._changed
            # resourceVersion N is the N-th change, so the log is indexed by it.
            for event in self._changes[cursor:]:
                yield event
            cursor = max(cursor, len(self._changes))
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return

    async def _serve_fetch(self, request: rendering.Request) -> Any:
        body = self._stored((self._known(request), request.namespace, request.name))
        if request.subresource == SCALE_SUBRESOURCE:
            return scale_view(body)
        return body

    async def _serve_create(self, request: rendering.Request) -> Any:
        if not isinstance(request.data, Mapping):
            raise Unprocessable("the body must be a JSON object")
        return self._create(self._known(request), request.namespace, dict(request.data))

    async def _serve_update(self, request: rendering.Request) -> Any:
        content_type = request.headers.get("Content-Type", "application/merge-patch+json")
        return self._update(self._known(request), request.namespace, request.name or "",
                            request.data, content_type, request.subresource)

    async def _serve_delete(self, request: rendering.Request) -> Any:
        return self._delete(self._known(request), request.namespace, request.name or "")
