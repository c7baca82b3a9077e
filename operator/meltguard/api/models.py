"""Typed models of the ImageQuotaPolicy resource (``meltguard.io/v1alpha1``).

These models are the single source of truth: the CRD's OpenAPI schema is generated from them
(``meltguard crd``), and the operator validates every object with them before acting.
Attributes are snake_case; the wire format is camelCase (aliases). Unknown fields are rejected.

The quota part lives in :mod:`meltguard.api.quota_models`, the field types and the base model in
:mod:`meltguard.api.fields`. Rules between fields (floor <= limit, cool below melt, ...) raise
:func:`~meltguard.api.fields.field_rule_error`, whose
``field`` context names the offending sub-field, so that messages point at the exact path
(``spec.quotas.tiers[1].floor``), and each rule also carries a CEL expression for the CRD.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from meltguard.api.fields import (
    DnsLabel,
    DnsSubdomain,
    Fraction,
    LabelSelector,
    Model,
    Percent,
    Port,
    PositiveSeconds,
    PrometheusSpec,
    Seconds,
    cel,
    field_rule_error,
)
from meltguard.api.limits import LimitInForce
from meltguard.api.quota_models import QuotasSpec
from meltguard.api.state import ControllerState
from meltguard.api.vocabulary import Phase, PolicyApiVersion, PolicyKind, ThrottleReasonName


class ScaleTargetRef(Model):
    """The workload to scale: anything with a scale subresource."""

    api_version: Annotated[str, StringConstraints(pattern=r"^([a-z0-9.-]+/)?v[0-9]+[a-z0-9]*$")] = (
        "apps/v1"
    )
    kind: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=63)] = (
        "Deployment"
    )
    name: DnsSubdomain


class ScrapeEndpoints(Model):
    """Pods serving GPU metrics: found by namespace and labels, scraped on ``port``."""

    namespace: DnsLabel
    selector: LabelSelector
    port: Port = 9400


def _default_exporter() -> ScrapeEndpoints:
    return ScrapeEndpoints(
        namespace="meltguard-system",
        selector=LabelSelector(match_labels={"app.kubernetes.io/name": "meltguard-exporter"}),
    )


def _default_dcgm() -> ScrapeEndpoints:
    return ScrapeEndpoints(
        namespace="gpu-operator",
        selector=LabelSelector(match_labels={"app": "nvidia-dcgm-exporter"}),
    )


class TelemetrySpec(Model):
    """Where GPU samples come from, and when a sample is too old to trust."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.source != 'prometheus' || has(self.prometheus)",
                    "telemetry.prometheus.url is required when source is prometheus",
                )
            ]
        }
    )

    source: Literal["exporter", "dcgm", "prometheus"] = "exporter"
    exporter: ScrapeEndpoints = Field(default_factory=_default_exporter)
    dcgm: ScrapeEndpoints = Field(default_factory=_default_dcgm)
    prometheus: PrometheusSpec | None = None
    stale_after_seconds: PositiveSeconds = 30

    @model_validator(mode="after")
    def _prometheus_needs_url(self) -> TelemetrySpec:
        if self.source == "prometheus" and self.prometheus is None:
            raise field_rule_error(
                "prometheus", "telemetry.prometheus.url is required when source is prometheus"
            )
        return self


class ScalingRules(Model):
    """meltguard's shorthand for one direction: a window and steps sharing one period."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.maxStepReplicas) || has(self.maxStepPercent)",
                    "set maxStepReplicas or maxStepPercent (or both)",
                )
            ]
        }
    )

    stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] = 0
    max_step_replicas: Annotated[int, Field(ge=1, le=10000)] | None = None
    max_step_percent: Annotated[float, Field(gt=0, le=1000)] | None = None
    period_seconds: Annotated[int, Field(ge=1, le=1800)] = 15

    @model_validator(mode="after")
    def _needs_a_step(self) -> ScalingRules:
        if self.max_step_replicas is None and self.max_step_percent is None:
            raise field_rule_error(
                "maxStepReplicas", "set maxStepReplicas or maxStepPercent (or both)"
            )
        return self


#: meltguard's shorthand defaults, in force when a policy sets neither direction's rules.
DEFAULT_SCALE_UP = ScalingRules(stabilization_seconds=0, max_step_replicas=8,
                                max_step_percent=100, period_seconds=15)
DEFAULT_SCALE_DOWN = ScalingRules(stabilization_seconds=300, max_step_percent=10,
                                  period_seconds=60)

StabilizationWindowSeconds = Annotated[int, Field(ge=0, le=3600)]
SelectPolicy = Literal["Max", "Min", "Disabled"]


class HpaScalingPolicy(Model):
    """An HPA scaling policy: per period, at most value pods, or percent of the period's start."""

    type: Literal["Pods", "Percent"]
    value: Annotated[int, Field(gt=0, le=2**31 - 1)]  # an int32, as in the HPA
    period_seconds: Annotated[int, Field(gt=0, le=1800)]


HpaPolicies = Annotated[tuple[HpaScalingPolicy, ...], Field(min_length=1)]


class HpaScaleUpRules(Model):
    """An HPA's behavior.scaleUp (left out: no window; 4 pods or 100 % per 15 s, the larger)."""

    stabilization_window_seconds: StabilizationWindowSeconds = 0
    select_policy: SelectPolicy = "Max"
    policies: HpaPolicies = (HpaScalingPolicy(type="Pods", value=4, period_seconds=15),
                             HpaScalingPolicy(type="Percent", value=100, period_seconds=15))


class HpaScaleDownRules(Model):
    """An HPA's behavior.scaleDown (left out: a 300 s window; 100 % per 15 s)."""

    stabilization_window_seconds: StabilizationWindowSeconds = 300
    select_policy: SelectPolicy = "Max"
    policies: HpaPolicies = (HpaScalingPolicy(type="Percent", value=100, period_seconds=15),)


class HpaBehavior(Model):
    """An HPA's spec.behavior (autoscaling/v2) as written; a direction left out: its defaults."""

    # {} in the CRD: the API server fills a direction left out as the HPA's own defaulting does
    scale_up: HpaScaleUpRules = Field(default_factory=HpaScaleUpRules,
                                      json_schema_extra={"default": {}})
    scale_down: HpaScaleDownRules = Field(default_factory=HpaScaleDownRules,
                                          json_schema_extra={"default": {}})


class ScalingSpec(Model):
    """Target utilization and how fast replicas may change (HPA behavior, or the shorthand)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [cel(
        "!has(self.behavior) || !(has(self.scaleUp) || has(self.scaleDown))",
        "set either behavior or the scaleUp/scaleDown shorthand, not both", ".behavior")]})

    target_utilization_percent: Annotated[float, Field(gt=0, le=100)] = 70
    tolerance_percent: Percent = 10
    #: how long pods may wait for GPUs before meltguard gives those replicas back
    pending_grace_seconds: Seconds = 120
    behavior: HpaBehavior | None = None
    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None

    @model_validator(mode="after")
    def _behavior_or_shorthand(self) -> ScalingSpec:
        shorthand = [name for name, rules in (("scaleUp", self.scale_up),
                                              ("scaleDown", self.scale_down)) if rules is not None]
        if self.behavior is not None and shorthand:
            raise field_rule_error("behavior", "set either behavior or the scaleUp/scaleDown"
                                   f" shorthand, not both ({' and '.join(shorthand)} set too)")
        return self


class CoolSpec(Model):
    """When a melting GPU counts as cool again, and for how long that must hold."""

    temperature_celsius: Annotated[float, Field(ge=0, le=150)] = 78
    utilization_percent: Percent = 85
    sustain_seconds: Seconds = 120


def _default_throttle_reasons() -> list[ThrottleReasonName]:
    return ["HwThermalSlowdown", "SwThermalSlowdown", "HwPowerBrakeSlowdown"]


class MeltSpec(Model):
    """When one GPU is hot, when it melts, and when the policy as a whole is Melting."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.cool.temperatureCelsius < self.temperatureCelsius",
                    "cool.temperatureCelsius must be below melt temperatureCelsius",
                    ".cool.temperatureCelsius",
                ),
                cel(
                    "self.cool.utilizationPercent < self.utilizationPercent",
                    "cool.utilizationPercent must be below melt utilizationPercent",
                    ".cool.utilizationPercent",
                ),
            ]
        }
    )

    temperature_celsius: Annotated[float, Field(ge=0, le=150)] = 85
    utilization_percent: Percent = 97
    memory_percent: Percent = 95
    throttle_reasons: Annotated[list[ThrottleReasonName], Field(max_length=5)] = Field(
        default_factory=_default_throttle_reasons
    )
    sustain_seconds: Seconds = 30
    fleet_fraction: Fraction = 0.25
    cool: CoolSpec = Field(default_factory=CoolSpec)

    @model_validator(mode="after")
    def _cool_below_melt(self) -> MeltSpec:
        for field in ("temperature_celsius", "utilization_percent"):
            cool_value, melt_value = getattr(self.cool, field), getattr(self, field)
            if cool_value >= melt_value:
                name = to_camel(field)
                raise field_rule_error(
                    f"cool.{name}",
                    f"cool.{name} ({cool_value:g}) must be below melt {name} ({melt_value:g}),"
                    " or a melting GPU could never cool down",
                )
        return self


class PolicySpec(Model):
    """``spec`` of an ImageQuotaPolicy."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must not exceed maxReplicas",
                    ".minReplicas",
                )
            ]
        }
    )

    scale_target_ref: ScaleTargetRef
    min_replicas: Annotated[int, Field(ge=0, le=100_000)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=100_000)]
    interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 5
    status_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    telemetry: TelemetrySpec = Field(default_factory=TelemetrySpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    melt: MeltSpec = Field(default_factory=MeltSpec)
    quotas: QuotasSpec
    paused: bool = False
    dry_run: bool = False

    @model_validator(mode="after")
    def _min_below_max(self) -> PolicySpec:
        if self.min_replicas > self.max_replicas:
            raise field_rule_error(
                "minReplicas",
                f"minReplicas ({self.min_replicas}) must not exceed maxReplicas"
                f" ({self.max_replicas})",
            )
        return self


class Condition(Model):
    """A standard ``metav1.Condition``."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class GpuCounts(Model):
    """GPUs of the target by state (``hot`` includes the melting ones)."""

    total: int = 0
    hot: int = 0
    melting: int = 0
    stale: int = 0
    max_temperature_celsius: float | None = None
    mean_utilization_percent: float | None = None


class TierQuotaStatus(Model):
    """The limit in force for one tier next to its baseline (the spec's limit)."""

    tier: str
    #: may carry two decimals (:mod:`meltguard.api.limits`)
    limit: LimitInForce | None = None
    baseline: int | None = None
    window: str | None = None
    unlimited: bool | None = None


class PolicyStatus(Model):
    """Status of an ImageQuotaPolicy, written by the operator only.

    controller is the decision core's memory between ticks, kept here so that a restarted
    operator resumes exactly where the previous one stopped.
    """

    observed_generation: int | None = None
    phase: Phase | None = None
    replicas: int | None = None
    desired_replicas: int | None = None
    pending_replicas: int | None = None
    gpus: GpuCounts | None = None
    quotas: list[TierQuotaStatus] = Field(default_factory=list)
    last_scale_time: str | None = None
    last_quota_change_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    controller: ControllerState | None = None


class PolicyMetadata(BaseModel):
    """The parts of ``metadata`` meltguard reads; everything else Kubernetes adds is kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: DnsSubdomain
    namespace: DnsLabel | None = None
    generation: int | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class ImageQuotaPolicy(Model):
    """A whole ImageQuotaPolicy object as stored by Kubernetes."""

    api_version: PolicyApiVersion
    kind: PolicyKind
    metadata: PolicyMetadata
    spec: PolicySpec
    status: PolicyStatus | None = None
