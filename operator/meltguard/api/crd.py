"""The CustomResourceDefinition of ImageQuotaPolicy, generated from the pydantic models.

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema:
no ``$ref``, no ``anyOf`` with null, boolean ``exclusiveMinimum``, no ``title``, no
``additionalProperties: false``. :func:`structural` converts one into the other, keeping every
rule OpenAPI can express (types, enums, ranges, patterns, lengths, required) and the CEL rules
the models declare in ``x-kubernetes-validations``.
"""

from __future__ import annotations

from typing import Any

import yaml

from meltguard.api.models import PolicySpec, PolicyStatus
from meltguard.api.vocabulary import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION

CRD_NAME = f"{PLURAL}.{GROUP}"

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus.total"},
    {"name": "Hot", "type": "integer", "jsonPath": ".status.gpus.hot"},
    {"name": "Free-Limit", "type": "number", "jsonPath": ".status.quotas[0].limit",
     "description": "effective limit of the first (most shed) tier"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROPPED_KEYS = {"title", "$defs"}


def _resolve(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Inline a ``$ref`` (keeping sibling keys such as ``default`` and ``description``)."""
    if "$ref" not in node:
        return node
    target = definitions[node["$ref"].rsplit("/", 1)[-1]]
    siblings = {key: value for key, value in node.items() if key != "$ref"}
    return {**_resolve(target, definitions), **siblings}


def _without_null(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, {type: null}]`` (an optional field) -> X."""
    options = node.get("anyOf")
    if not options:
        return node
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) != 1:
        raise ValueError(f"cannot express anyOf {options} in a structural schema")
    rest = {key: value for key, value in node.items() if key != "anyOf"}
    if rest.get("default", ...) is None:
        del rest["default"]
    return {**kept[0], **rest}


def structural(node: Any, definitions: dict[str, Any]) -> Any:
    """Convert one pydantic JSON-schema node (and its children) to structural OpenAPI v3."""
    if isinstance(node, list):
        return [structural(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    node = _resolve(_without_null(_resolve(node, definitions)), definitions)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "additionalProperties" and value is False):
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "description":
            out[key] = value.replace("``", "")
        elif key in ("properties",):
            out[key] = {name: structural(child, definitions) for name, child in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = structural(value, definitions)
        else:
            out[key] = value
    return out


def model_schema(model: type[PolicySpec] | type[PolicyStatus]) -> dict[str, Any]:
    """The structural schema of one model."""
    raw = model.model_json_schema(by_alias=True)
    schema: dict[str, Any] = structural(raw, raw.get("$defs", {}))
    return schema


def _conditions_as_map(status: dict[str, Any]) -> dict[str, Any]:
    """Conditions are a list keyed by ``type`` (server-side apply merges them per type)."""
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return status


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/name": "meltguard"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["meltguard"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "Scales a GPU inference workload from GPU telemetry and sheds"
                                   " per-tier quotas when scaling cannot keep the GPUs cool.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": model_schema(PolicySpec),
                        "status": _conditions_as_map(model_schema(PolicyStatus)),
                    },
                }},
            }],
        },
    }


def render_crd() -> str:
    """The CRD as the YAML committed under ``crds/``."""
    header = "# Generated from meltguard.api.models by `meltguard crd`; do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
