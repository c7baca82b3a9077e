"""The building blocks of the resource's models: constrained field types, the base model, and
how a rule between fields is reported (a pydantic error naming the sub-field, plus the CEL
expression the CRD carries for the same rule)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from meltguard.api.durations import DURATION_PATTERN

Percent = Annotated[float, Field(ge=0, le=100)]
Fraction = Annotated[float, Field(gt=0, le=1)]
Seconds = Annotated[int, Field(ge=0, le=86400)]
PositiveSeconds = Annotated[int, Field(ge=1, le=86400)]
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN)]
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]
DnsSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
Port = Annotated[int, Field(ge=1, le=65535)]
HttpUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2048)]


def field_rule_error(field: str, message: str) -> PydanticCustomError:
    """A cross-field rule violation; ``field`` is the camelCase path below the validated model."""
    return PydanticCustomError("field_rule", message, {"field": field})


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One CRD ``x-kubernetes-validations`` entry (CEL, Kubernetes >= 1.25)."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class Model(BaseModel):
    """Base of every resource model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class PrometheusSpec(Model):
    """A Prometheus server answering instant queries."""

    url: HttpUrl


class LabelSelector(Model):
    """Pods picked by their labels (``matchLabels`` only)."""

    match_labels: dict[str, str] = Field(default_factory=dict)
