"""Scenario files: every number of a simulated day in one YAML document.

A scenario names the fleet (GPU supply, speed, thermal behaviour, start-up time), the demand
(users per tier over a normal day, and a surge on top), the simulation's time steps, the
static cap of the ``static-cap`` baseline, and the ImageQuotaPolicy the ``meltguard``
strategy runs (``--policy FILE`` replaces it). Built-in scenarios ship as files next to this
module (``scenarios/<name>.yaml``); ``--scenario`` takes such a name or a path.

Errors name the field the way ``meltguard validate`` does (``fleet.gpuSupply: ...``,
``policy.spec.quotas.tiers[1].floor: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from meltguard.api.models import ImageQuotaPolicy
from meltguard.api.models import field_rule_error as _rule
from meltguard.api.validation import FieldError, PolicyInvalid, field_errors, parse_policy
from meltguard.sim.errors import SimulationInputInvalid

BUILT_IN_PACKAGE = "meltguard.sim.scenarios"

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Celsius = Annotated[float, Field(ge=-40, le=150)]


class _Part(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Timing(_Part):
    """Time steps: physics (demand, queue, heat) and control (strategies decide)."""

    physics_step_seconds: Annotated[int, Field(ge=1, le=600)] = 15
    control_tick_seconds: Annotated[int, Field(ge=1, le=3600)] = 60

    @model_validator(mode="after")
    def _tick_is_whole_steps(self) -> Timing:
        if self.control_tick_seconds % self.physics_step_seconds:
            raise _rule(
                "controlTickSeconds",
                f"must be a whole multiple of physicsStepSeconds ({self.physics_step_seconds})",
            )
        return self


class Thermal(_Part):
    """First-order heating: temperature moves toward a steady state set by utilization."""

    idle_celsius: Celsius = 35
    full_load_celsius: Celsius = 89
    spread_celsius: NonNegative = 2
    time_constant_seconds: Positive = 180
    slowdown_celsius: Celsius = 90
    hysteresis_celsius: NonNegative = 3
    throttled_heat_share: Annotated[float, Field(gt=0, le=1)] = 0.6

    @model_validator(mode="after")
    def _ordered(self) -> Thermal:
        if self.full_load_celsius <= self.idle_celsius:
            raise _rule("fullLoadCelsius", "must be above idleCelsius")
        return self


class Fleet(_Part):
    """The GPUs the inference Deployment can get and how fast they make images."""

    gpu_supply: Annotated[int, Field(ge=1, le=100_000)] = 1000
    gpus_per_replica: Annotated[int, Field(ge=1, le=16)] = 1
    gpus_per_node: Annotated[int, Field(ge=1, le=64)] = 8
    initial_replicas: Annotated[int, Field(ge=0, le=100_000)] = 100
    gpu_seconds_per_image: Positive = 6
    startup_seconds: NonNegative = 240
    request_timeout_seconds: Positive = 120
    memory_total_gib: Positive = 80
    model_memory_gib: NonNegative = 38
    busy_memory_gib: NonNegative = 24
    idle_power_watts: NonNegative = 90
    power_limit_watts: Positive = 700
    thermal: Thermal = Field(default_factory=Thermal)

    @model_validator(mode="after")
    def _memory_fits(self) -> Fleet:
        if self.model_memory_gib + self.busy_memory_gib > self.memory_total_gib:
            raise _rule("busyMemoryGib", "model plus busy memory exceed memoryTotalGib")
        return self


class TierDemand(_Part):
    """How one tier's users behave on a normal day."""

    daily_users: NonNegative
    images_per_session: Annotated[float, Field(ge=1)] = 4
    think_seconds: Positive = 60
    give_up_probability: Probability = 0.7


class Diurnal(_Part):
    """Sessions start along a daily cosine: most at ``peakHour``, fewest 12 hours later."""

    peak_hour: Annotated[float, Field(ge=0, lt=24)] = 17
    trough_ratio: Annotated[float, Field(gt=0, le=1)] = 0.35


class Surge(_Part):
    """New users on top of the normal day: ``newUsers`` in ``hours``, then decaying interest.

    Sign-ups per second rise linearly for ``rampHours`` (word of mouth spreading), hold until
    ``hours`` have passed, then decay exponentially with ``decayHours`` as time constant.
    """

    start_hour: Annotated[float, Field(ge=0)] = 9
    hours: Positive = 1
    ramp_hours: NonNegative = 0.25
    new_users: NonNegative = 1_000_000
    decay_hours: Positive = 3
    tier_shares: dict[str, Probability] = Field(default_factory=lambda: {"free": 1.0})

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> Surge:
        if self.ramp_hours >= self.hours:
            raise _rule("rampHours", f"must be shorter than hours ({self.hours:g})")
        total = sum(self.tier_shares.values())
        if self.tier_shares and abs(total - 1) > 1e-6:
            raise _rule("tierShares", f"shares must add up to 1 (they add up to {total:g})")
        return self


class Demand(_Part):
    """Users per tier over the day."""

    tiers: Annotated[dict[str, TierDemand], Field(min_length=1)]
    diurnal: Diurnal = Field(default_factory=Diurnal)
    surge: Surge | None = None

    @model_validator(mode="after")
    def _surge_tiers_known(self) -> Demand:
        if self.surge:
            for name in self.surge.tier_shares:
                if name not in self.tiers:
                    raise _rule(f"surge.tierShares.{name}", "no such tier in demand.tiers")
        return self


class Scenario(_Part):
    """One simulated day: fleet, demand, time steps, baselines and the default policy."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    description: str = ""
    duration_hours: Annotated[float, Field(gt=0, le=24 * 7)] = 24
    seed: Annotated[int, Field(ge=0)] = 0
    timing: Timing = Field(default_factory=Timing)
    fleet: Fleet = Field(default_factory=Fleet)
    demand: Demand
    static_caps: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    policy: dict[str, Any]

    @model_validator(mode="after")
    def _at_least_one_tick(self) -> Scenario:
        if self.duration_hours * 3600 < self.timing.control_tick_seconds:
            raise _rule("durationHours", "must last at least one control tick")
        return self

    @property
    def duration_seconds(self) -> int:
        """Simulated seconds, rounded down to whole control ticks."""
        tick = self.timing.control_tick_seconds
        return int(self.duration_hours * 3600) // tick * tick


def built_in_names() -> list[str]:
    """Names of the scenarios shipped with meltguard."""
    folder = resources.files(BUILT_IN_PACKAGE)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                  if p.name.endswith(".yaml"))


def read_yaml(path: Path, what: str) -> Any:
    """One YAML document from ``path``; errors say which file and where it broke."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SimulationInputInvalid(what, [FieldError("(file)", str(error))]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SimulationInputInvalid(what, [FieldError("(file)", f"not valid YAML: {error}")]) \
            from None


def scenario_path(name_or_path: str) -> Path:
    """The file of a built-in scenario name, or ``name_or_path`` itself when it is a file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    if name_or_path in built_in_names():
        return Path(str(resources.files(BUILT_IN_PACKAGE).joinpath(f"{name_or_path}.yaml")))
    known = ", ".join(built_in_names())
    raise SimulationInputInvalid(
        name_or_path,
        [FieldError("--scenario", f"no built-in scenario {name_or_path!r} (built in: {known})"
                    " and no such file")],
    )


def parse_scenario(document: Any, source: str) -> tuple[Scenario, ImageQuotaPolicy]:
    """A validated scenario and its policy; every problem is reported, each by its field."""
    if not isinstance(document, Mapping):
        raise SimulationInputInvalid(source, [FieldError("(object)", "must be a mapping")])
    errors: list[FieldError] = []
    scenario: Scenario | None = None
    try:
        scenario = Scenario.model_validate(document)
    except ValidationError as error:
        errors.extend(field_errors(error))
    policy: ImageQuotaPolicy | None = None
    if isinstance(document.get("policy"), Mapping):
        try:
            policy = parse_policy(document["policy"])
        except PolicyInvalid as invalid:
            errors.extend(_prefixed(invalid.errors, "policy"))
    if scenario is not None and policy is not None:
        errors.extend(check_tiers_match(scenario, policy, "policy"))
    if errors or scenario is None or policy is None:
        raise SimulationInputInvalid(source, errors)
    return scenario, policy


def _prefixed(errors: tuple[FieldError, ...], prefix: str) -> list[FieldError]:
    return [FieldError(f"{prefix}.{error.path}", error.message) for error in errors]


def check_tiers_match(
    scenario: Scenario, policy: ImageQuotaPolicy, policy_name: str
) -> list[FieldError]:
    """Demand tiers and static caps must name tiers of the policy (else the quota is unknown)."""
    known = {tier.name for tier in policy.spec.quotas.tiers}
    problems = [
        FieldError(f"demand.tiers.{name}", f"the {policy_name} has no tier {name!r}"
                   f" (its tiers: {', '.join(sorted(known))})")
        for name in scenario.demand.tiers if name not in known
    ]
    problems += [
        FieldError(f"staticCaps.{name}", f"the {policy_name} has no tier {name!r}")
        for name in scenario.static_caps if name not in known
    ]
    return problems


def load_scenario(name_or_path: str) -> tuple[Scenario, ImageQuotaPolicy]:
    """Read, validate and return a scenario (built-in name or file) with its default policy."""
    path = scenario_path(name_or_path)
    return parse_scenario(read_yaml(path, str(path)), str(path))


def load_policy(path: Path, scenario: Scenario) -> ImageQuotaPolicy:
    """An ImageQuotaPolicy file for ``--policy``, checked like ``meltguard validate`` does."""
    document = read_yaml(path, str(path))
    try:
        policy = parse_policy(document)
    except PolicyInvalid as invalid:
        raise SimulationInputInvalid(str(path), list(invalid.errors)) from None
    mismatched = check_tiers_match(scenario, policy, f"policy {path}")
    if mismatched:
        raise SimulationInputInvalid(f"scenario {scenario.name} with {path}", mismatched)
    return policy
