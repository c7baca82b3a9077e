"""The OpenAPI 3 document of the quota service's HTTP API (served at ``/openapi.json``).

Written by hand to read well; tests keep it true: every route is documented, live answers
validate against these schemas, and schemathesis fuzzes the running server with it. Limits
in the schemas come from :mod:`meltguard.quota.requests`, the code that enforces them.
"""

from __future__ import annotations

from typing import Any

from meltguard.quota.demand import MAX_REACHING
from meltguard.quota.requests import MAX_COST, MAX_ID_BYTES

_NO_CONTROL_CHARACTERS = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"


def _identifier(description: str) -> dict[str, Any]:
    # JSON Schema counts characters; the server counts UTF-8 bytes. A string over
    # MAX_ID_BYTES characters is always over MAX_ID_BYTES bytes, so maxLength is never
    # looser than the server; only non-ASCII strings can be refused below it.
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_BYTES,
        "pattern": _NO_CONTROL_CHARACTERS,
        "description": f"{description} At most {MAX_ID_BYTES} bytes in UTF-8, "
        "no control characters.",
    }


_NAME = {"type": "string", "minLength": 1, "maxLength": 317}
_POLICY = {
    **_NAME,
    "description": "The ImageQuotaPolicy, as namespace/name.",
    "example": "inference/imagegen",
}
_TIER = {**_NAME, "description": "A tier of that policy.", "example": "free"}
_SUBJECT = _identifier("Who is counted (a user id).")
_REQUEST_ID = _identifier("Idempotency key: the same id never consumes twice.")

_ANSWER_PROPERTIES: dict[str, Any] = {
    "policy": {"type": "string"},
    "tier": {"type": "string"},
    "unlimited": {"type": "boolean", "description": "The tier has no limit (never counted)."},
    "limit": {
        "type": "integer",
        "minimum": 0,
        "description": "The subject's own limit in this window: the tier's limit in force, "
        "rounded down or, for a share of the subjects as large as its fraction, up.",
    },
    "baseline": {"type": "integer", "minimum": 0, "description": "The tier's untightened limit."},
    "windowSeconds": {"type": "integer", "minimum": 1},
    "tightened": {
        "type": "boolean",
        "description": "The limit is below the baseline because the GPUs are melting.",
    },
    "used": {"type": "integer", "minimum": 0, "description": "Units used in this window."},
    "remaining": {"type": "integer", "minimum": 0},
    "resetSeconds": {
        "type": "integer",
        "minimum": 1,
        "description": "Seconds until the window resets (windows are fixed, aligned to the "
        "Unix epoch in UTC: a 24h window is the UTC calendar day).",
    },
}

_ERROR = {
    "type": "object",
    "required": ["error", "field"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, in words."},
        "field": {"type": "string", "description": "The field, header or part at fault."},
    },
}

_RATELIMIT_HEADERS = {
    "RateLimit-Policy": {
        "description": 'draft-ietf-httpapi-ratelimit-headers: `"free";q=3;w=86400`',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'draft-ietf-httpapi-ratelimit-headers: `"free";r=2;t=51234`',
        "schema": {"type": "string"},
    },
}
_RATE = {"type": "number", "minimum": 0, "description": "Units per second."}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}}


def _json(
    schema_ref: str, description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }
    if headers:
        response["headers"] = headers
    return response


_UNAUTHENTICATED = _json(
    "Error",
    "With --auth-tokens: no bearer token, or not a known caller's.",
    {"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}},
)
_REFUSALS = {
    "400": _json("Error", "Malformed JSON, wrong type, missing or unexpected field."),
    "401": _UNAUTHENTICATED,
    "404": _json("Error", "Unknown policy or tier."),
    "413": _json("Error", "Body over 64 KiB."),
    "415": _json("Error", "Content-Type is not application/json."),
    "503": _json("Error", "The store is unavailable.", _RETRY_AFTER),
}


def _post(summary: str, request_ref: str, ok: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{request_ref}"}}
                },
            },
            "responses": {"200": ok, **extra, **_REFUSALS},
        }
    }


def _get(summary: str, response: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An operation open to anyone, with or without --auth-tokens."""
    return {"get": {"summary": summary, "security": [], "responses": {"200": response, **extra}}}


_QUERY = [
    {"name": name, "in": "query", "required": True, "schema": schema}
    for name, schema in (("policy", _POLICY), ("tier", _TIER), ("subject", _SUBJECT))
]

OPENAPI_DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "meltguard quota service",
        "version": "v1",
        "description": "May this user generate one more image? Limits come from the "
        "quota ConfigMaps that the meltguard operator publishes. With --auth-tokens the /v1/ "
        "operations need a caller's bearer token; without it they are open.",
    },
    "security": [{"bearerAuth": []}],
    "paths": {
        "/v1/consume": _post(
            "Take `cost` units of the subject's current window",
            "ConsumeRequest",
            _json("Decision", "Allowed.", _RATELIMIT_HEADERS),
            **{
                "429": _json(
                    "Decision", "Refused: over the limit.", _RATELIMIT_HEADERS | _RETRY_AFTER
                )
            },
        ),
        "/v1/refund": _post(
            "Give back what a consumed request took (once)",
            "RefundRequest",
            _json("Refund", "The refund outcome.", _RATELIMIT_HEADERS),
            **{"403": _json("Error", "With --auth-tokens: another caller consumed it.")},
        ),
        "/v1/quota": {
            "get": {
                "summary": "The subject's standing, consuming nothing",
                "parameters": _QUERY,
                "responses": {
                    "200": _json("Standing", "The standing.", _RATELIMIT_HEADERS),
                    **{code: _REFUSALS[code] for code in ("400", "401", "404", "503")},
                },
            }
        },
        "/v1/demand": {
            "get": {
                "summary": "Per tier: recent attempted, admitted and refused units per second, "
                "and how many subjects' attempts in the current window reached each count "
                "(this replica's share: replicas sharing a store add up)",
                "parameters": _QUERY[:1],
                "responses": {
                    "200": _json("Demand", "The policy's demand."),
                    **{code: _REFUSALS[code] for code in ("400", "401", "404")},
                },
            }
        },
        "/healthz": _get("Liveness", _json("Health", "The process answers.")),
        "/readyz": _get(
            "Readiness: limits loaded and the store reachable (or failing open for a while)",
            _json("Readiness", "Ready."),
            **{"503": _json("Readiness", "Not ready.")},
        ),
        "/metrics": _get(
            "Prometheus metrics (on --metrics-port instead when that is given)",
            {
                "description": "Text format 0.0.4.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        ),
        "/openapi.json": _get(
            "This document",
            {
                "description": "OpenAPI 3.0.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
        ),
    },
    "components": {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token of the --auth-tokens file (caller-name:token lines).",
            }
        },
        "schemas": {
            "ConsumeRequest": {
                "type": "object",
                "additionalProperties": False,
                "required": ["policy", "tier", "subject"],
                "properties": {
                    "policy": _POLICY,
                    "tier": _TIER,
                    "subject": _SUBJECT,
                    "cost": {"type": "integer", "minimum": 1, "maximum": MAX_COST, "default": 1},
                    "requestId": {**_REQUEST_ID, "nullable": True},
                },
            },
            "RefundRequest": {
                "type": "object",
                "additionalProperties": False,
                "required": ["policy", "tier", "subject", "requestId"],
                "properties": {
                    "policy": _POLICY,
                    "tier": _TIER,
                    "subject": _SUBJECT,
                    "requestId": _REQUEST_ID,
                },
            },
            "Decision": {
                "type": "object",
                "required": ["policy", "tier", "allowed", "tightened"],
                "properties": {
                    "allowed": {"type": "boolean"},
                    **_ANSWER_PROPERTIES,
                    "replayed": {
                        "type": "boolean",
                        "description": "A retry of a known requestId: its first answer again.",
                    },
                    "degraded": {
                        "type": "boolean",
                        "description": "The store failed; answered by --on-store-error.",
                    },
                },
            },
            "Refund": {
                "type": "object",
                "required": ["refunded", "reason", "policy", "tier", "tightened"],
                "properties": {
                    "refunded": {"type": "boolean"},
                    "reason": {
                        "type": "string",
                        "enum": [
                            "refunded",
                            "unknown-request",
                            "not-consumed",
                            "already-refunded",
                            "window-ended",
                            "unlimited",
                        ],
                    },
                    **_ANSWER_PROPERTIES,
                },
            },
            "Standing": {
                "type": "object",
                "required": ["policy", "tier", "tightened"],
                "properties": _ANSWER_PROPERTIES,
            },
            "Demand": {
                "type": "object",
                "required": ["policy", "observedAt", "intervalSeconds", "tiers"],
                "properties": {
                    "policy": {"type": "string"},
                    "observedAt": {"type": "number", "description": "Epoch seconds."},
                    "intervalSeconds": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "The rates average over this many recent seconds.",
                    },
                    "tiers": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/TierDemand"},
                    },
                },
            },
            "TierDemand": {
                "type": "object",
                "required": [
                    "tier",
                    "attemptsPerSecond",
                    "admittedPerSecond",
                    "refusedPerSecond",
                    "reaching",
                ],
                "properties": {
                    "tier": {"type": "string"},
                    "attemptsPerSecond": _RATE,
                    "admittedPerSecond": _RATE,
                    "refusedPerSecond": _RATE,
                    "reaching": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0},
                        "maxItems": MAX_REACHING,
                        "description": "Entry k-1: subjects whose attempted units in the "
                        "current window reached k (the last entry also counts those past it). "
                        "Empty for an unlimited tier and before the window's first consume.",
                    },
                },
            },
            "Health": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "string", "enum": ["ok"]}},
            },
            "Readiness": {
                "type": "object",
                "required": ["ready", "limitsLoaded", "store", "onStoreError"],
                "properties": {
                    "ready": {"type": "boolean"},
                    "limitsLoaded": {"type": "boolean"},
                    "store": {"type": "string", "enum": ["ok", "unreachable"]},
                    "onStoreError": {"type": "string", "enum": ["open", "closed"]},
                    "storeError": {"type": "string"},
                    "storeEverAnswered": {"type": "boolean"},
                    "failingOpenSecondsLeft": {"type": "number"},
                },
            },
            "Error": _ERROR,
        },
    },
}
