"""The ``spec.quotas`` part of the resource: tiers in shed order, how limits tighten and relax,
where they are published, and where the operator reads what users attempted."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from meltguard.api.durations import duration_seconds
from meltguard.api.fields import (
    DnsLabel,
    DnsSubdomain,
    Duration,
    LabelSelector,
    Model,
    Port,
    PositiveSeconds,
    PrometheusSpec,
    Seconds,
    cel,
    field_rule_error,
)


class TierSpec(Model):
    """One user tier: a limit per window, never tightened below ``floor``, or unlimited."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(has(self.unlimited) && self.unlimited) != has(self.limit)",
                    "a tier sets either limit or unlimited: true",
                ),
                cel(
                    "!has(self.limit) || !has(self.floor) || self.floor <= self.limit",
                    "floor must not exceed limit",
                    ".floor",
                ),
            ]
        }
    )

    name: DnsLabel
    limit: Annotated[int, Field(ge=0, le=1_000_000_000)] | None = None
    window: Duration = "24h"
    floor: Annotated[int, Field(ge=0, le=1_000_000_000)] = 0
    unlimited: bool = False

    @property
    def window_seconds(self) -> int:
        """The window in seconds."""
        return duration_seconds(self.window)

    @model_validator(mode="after")
    def _limit_xor_unlimited(self) -> TierSpec:
        if self.unlimited and self.limit is not None:
            raise field_rule_error("limit", "an unlimited tier takes no limit")
        if not self.unlimited and self.limit is None:
            raise field_rule_error("limit", "required unless unlimited: true")
        if self.limit is not None and self.floor > self.limit:
            raise field_rule_error(
                "floor", f"floor ({self.floor}) must not exceed limit ({self.limit})"
            )
        return self


class TightenSpec(Model):
    """Multiplicative decrease: limit x factor every interval while melting."""

    factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    interval_seconds: PositiveSeconds = 180
    grace_seconds: Seconds = 90


class RelaxSpec(Model):
    """Additive increase: stepPercent of the baseline every interval once cool."""

    step_percent: Annotated[float, Field(gt=0, le=100)] = 25
    interval_seconds: PositiveSeconds = 300


class PublishSpec(Model):
    """Where the limits in force are written."""

    config_map: DnsSubdomain | None = None
    envoy_domain: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = None


#: ``http://HOST:PORT`` (plain HTTP, like the GPU scrapes)
PlainHttpEndpoint = Annotated[
    str, StringConstraints(pattern=r"^http://[^\s/?#]+/?$", max_length=260)
]


class QuotaServicePods(Model):
    """The quota service's pods, found like the exporters (namespace and labels, from the
    operator's pod watch); each is asked for ``/v1/demand`` on ``port``, by default the metrics
    port, where the page is open like ``/metrics`` (it holds per-tier sums, nothing of any
    subject)."""

    namespace: DnsLabel
    selector: LabelSelector
    port: Port = 9090


class DemandPrometheusSpec(PrometheusSpec):
    """A Prometheus server scraping every quota replica; rates are taken over ``rateWindow``."""

    rate_window: Duration = "1m"


class DemandSpec(Model):
    """Where the operator reads what users attempted: exactly one of ``pods`` (every replica of
    the quota service), ``url`` (one server's base URL) or ``prometheus``."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.pods), has(self.url), has(self.prometheus)]"
                    ".exists_one(x, x)",
                    "set exactly one of pods, url or prometheus",
                )
            ]
        }
    )

    pods: QuotaServicePods | None = None
    url: PlainHttpEndpoint | None = None
    prometheus: DemandPrometheusSpec | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> DemandSpec:
        given = [name for name in ("pods", "url", "prometheus") if getattr(self, name)]
        if len(given) != 1:
            found = " and ".join(given) if given else "none"
            raise field_rule_error(
                "pods", f"set exactly one of pods, url or prometheus (found {found})"
            )
        return self


class QuotasSpec(Model):
    """Per-tier quotas, in shed order: the first tier is tightened first and relaxed last."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.tiers.all(t, self.tiers.exists_one(u, u.name == t.name))",
                    "tier names must be unique",
                    ".tiers",
                )
            ]
        }
    )

    tiers: Annotated[list[TierSpec], Field(min_length=1, max_length=16)]
    tighten: TightenSpec = Field(default_factory=TightenSpec)
    relax: RelaxSpec = Field(default_factory=RelaxSpec)
    on_telemetry_loss: Literal["hold", "tighten"] = "hold"
    publish: PublishSpec = Field(default_factory=PublishSpec)
    demand: DemandSpec | None = None  # without it, the quotas follow AIMD

    @model_validator(mode="after")
    def _unique_tier_names(self) -> QuotasSpec:
        seen: set[str] = set()
        for index, tier in enumerate(self.tiers):
            if tier.name in seen:
                raise field_rule_error(
                    f"tiers[{index}].name", f"tier name {tier.name!r} is used more than once"
                )
            seen.add(tier.name)
        return self
