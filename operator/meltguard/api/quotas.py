"""The quota ConfigMap's documents: ``quotas.json`` (the model) and ``config.yaml`` (its rendering).

The operator writes both keys of the ConfigMap from one :class:`QuotaDocument`; the quota
service reads ``quotas.json`` back with :func:`parse_quota_document`. Parsing is strict
(unknown fields, wrong types and inconsistent tiers are refused, with the path of the bad
field in the message), so a malformed update can be logged and ignored by the reader.

``config.yaml`` is the same limits in envoyproxy/ratelimit's file format: one descriptor per
tier keyed ``tier``. That service only knows the units second, minute, hour and day, so a
window that is exactly one of them is copied as is; any other window (``3h``) is expressed
in the largest unit shorter than it, with ``requests_per_unit = floor(limit x unit / window)``
so that Envoy never admits more than the limit over the window (at least 1 when the limit
is at least 1, so a small limit over a long window is not turned into a ban).

A limit in force may be fractional (``1.4``: see :mod:`meltguard.api.limits`), which the quota
service turns into a whole limit per subject and window. envoyproxy/ratelimit has one limit for
every subject of a descriptor, so ``config.yaml`` carries the whole part of the limit
(``floor(1.4) = 1``): a stricter limit than the quota service's, never a looser one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from meltguard.api.durations import MAX_DURATION_SECONDS
from meltguard.api.limits import MAX_COUNT, LimitInForce, subject_limit, subject_share
from meltguard.api.vocabulary import Phase

#: Label that marks a ConfigMap holding quotas for the quota service to watch.
QUOTAS_LABEL = "meltguard.io/quotas"
#: The quota ConfigMap's labels, which the quota service (and the operator) select it by.
QUOTAS_LABELS: Mapping[str, str] = {QUOTAS_LABEL: "true"}
#: The two keys of the quota ConfigMap.
QUOTAS_JSON_KEY = "quotas.json"
RATELIMIT_CONFIG_KEY = "config.yaml"


def carries_quotas_label(configmap: Mapping[str, Any]) -> bool:
    """Whether a ConfigMap has :data:`QUOTAS_LABELS`: one the quota service reads."""
    labels = (configmap.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in QUOTAS_LABELS.items())


#: envoyproxy/ratelimit's units, longest first, with their length in seconds.
RATELIMIT_UNITS: tuple[tuple[str, int], ...] = (
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
    ("second", 1),
)

TierName = Annotated[str, Field(pattern=r"^[A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?$")]
PolicyRef = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$", max_length=317
    ),
]


class QuotaDocumentInvalid(ValueError):
    """A ``quotas.json`` that cannot be used; ``errors`` name each bad field by its path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid quotas.json: " + "; ".join(errors))
        self.errors = errors


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


class QuotaTier(_Strict):
    """One tier's limit in force (which may carry two decimals; the baseline is whole).
    An unlimited tier carries no numbers at all."""

    name: TierName
    unlimited: bool = False
    limit: LimitInForce | None = None
    baseline: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = None
    # any window a policy may give (a year or more is odd, but must not break a tick)
    window_seconds: Annotated[int, Field(ge=1, le=MAX_DURATION_SECONDS)] | None = None
    tightened: bool = False

    @model_validator(mode="after")
    def _numbers_match_unlimited(self) -> QuotaTier:
        numbers = {
            "limit": self.limit,
            "baseline": self.baseline,
            "windowSeconds": self.window_seconds,
        }
        if self.unlimited:
            present = [name for name, value in numbers.items() if value is not None]
            if present or self.tightened:
                raise ValueError(f"an unlimited tier takes no {', '.join(present) or 'tightened'}")
        else:
            missing = [name for name, value in numbers.items() if value is None]
            if missing:
                raise ValueError(f"a limited tier needs {', '.join(missing)}")
        return self

    def subject_limit(self, key: str, subject: str, window_start: float) -> int:
        """The whole limit of ``subject`` in the window starting at ``window_start`` (epoch
        seconds); ``key`` is ``"<policy>/<tier>"``. Only a limited tier has one."""
        if self.limit is None:
            raise ValueError(f"tier {self.name!r} is unlimited: its subjects have no limit")
        if isinstance(self.limit, int):  # the same for every subject: no hash to compute
            return self.limit
        return subject_limit(self.limit, subject_share(key, subject, window_start))


class QuotaDocument(_Strict):
    """``quotas.json``: the limits in force for one policy's tiers, in shed order."""

    policy: PolicyRef
    observed_generation: Annotated[int, Field(ge=0)] = 0
    phase: Phase = "Unknown"
    updated: datetime
    tiers: Annotated[list[QuotaTier], Field(min_length=1)]
    #: the domain Envoy's rate limit requests name (``spec.quotas.publish.envoyDomain``);
    #: absent from older documents, where the policy's name stands for it
    envoy_domain: Annotated[str, Field(min_length=1, max_length=253)] | None = None

    @model_validator(mode="after")
    def _tier_names_unique(self) -> QuotaDocument:
        names = [tier.name for tier in self.tiers]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"tier names must be unique: {', '.join(duplicated)} repeated")
        return self


#: Where pydantic names the member of a union that refused a value (``limit.int``, ``limit.float``
#: for a limit in force); the path names the field, not the member.
_UNION_MEMBERS = frozenset({"int", "float"})


def _error_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in _UNION_MEMBERS and not part.startswith(("function-", "constrained-")):
            path += f".{part}" if path else part
    return path or "(document)"


def parse_quota_document(raw: str | bytes) -> QuotaDocument:
    """Parse and validate ``quotas.json`` text (or its decoded object).

    Raises :class:`QuotaDocumentInvalid` naming every bad field (``tiers[1].limit: ...``).
    JSON is parsed as JSON (strict types: ``"3"`` is not a limit), timestamps as RFC 3339.
    """
    try:
        return QuotaDocument.model_validate_json(raw)
    except ValidationError as error:
        raise QuotaDocumentInvalid(
            [f"{_error_path(e['loc'])}: {e['msg']}" for e in error.errors()]
        ) from None


def dump_quota_document(document: QuotaDocument) -> str:
    """``quotas.json`` text: camelCase keys, no null fields, RFC 3339 timestamp."""
    body = document.model_dump(mode="json", by_alias=True, exclude_none=True)
    for tier in body["tiers"]:
        if tier["unlimited"]:
            del tier["tightened"]
        else:
            del tier["unlimited"]
    return json.dumps(body, indent=2, sort_keys=False) + "\n"


def ratelimit_unit(limit: int, window_seconds: int) -> tuple[str, int]:
    """(unit, requests_per_unit) that envoyproxy/ratelimit can enforce for ``limit`` per window."""
    for unit, unit_seconds in RATELIMIT_UNITS:
        if unit_seconds == window_seconds:
            return unit, limit
        if unit_seconds < window_seconds:
            scaled = limit * unit_seconds // window_seconds
            return unit, max(scaled, 1) if limit >= 1 else 0
    raise AssertionError("window_seconds >= 1 always matches the unit 'second'")


def _descriptor(tier: QuotaTier) -> dict[str, Any]:
    if tier.unlimited:
        return {"key": "tier", "value": tier.name, "rate_limit": {"unlimited": True}}
    assert tier.limit is not None and tier.window_seconds is not None  # validated
    unit, per_unit = ratelimit_unit(math.floor(tier.limit), tier.window_seconds)
    return {
        "key": "tier",
        "value": tier.name,
        "rate_limit": {"unit": unit, "requests_per_unit": per_unit},
    }


def render_ratelimit_config(document: QuotaDocument, domain: str) -> str:
    """``config.yaml`` for envoyproxy/ratelimit: domain ``domain``, one descriptor per tier."""
    if not domain.strip():
        raise ValueError("envoyDomain must not be empty")
    config = {"domain": domain, "descriptors": [_descriptor(tier) for tier in document.tiers]}
    header = f"# meltguard: limits of policy {document.policy}, phase {document.phase}\n"
    return header + yaml.safe_dump(config, sort_keys=False)
