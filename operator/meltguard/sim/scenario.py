"""Scenario files: every number of a simulated day in one YAML document.

A scenario names the fleet (GPU supply, speed, start-up time, which GPU profile its GPUs
follow), the GPU profiles (power and heat as measured, or as assumed for a failure), cooling
failures (some nodes switching profile for a while), the demand (users per tier over a normal
day, and a surge on top), the latency the users expect, the simulation's time steps, the
static cap of the ``static-cap`` baseline, and the ImageQuotaPolicy the ``meltguard`` strategy
runs (``--policy FILE`` replaces it). Built-in scenarios ship as files next to this module
(``scenarios/<name>.yaml``); ``--scenario`` takes such a name or a path.

``extends: NAME`` starts from a built-in scenario and merges the file over it the way a JSON
merge patch does (RFC 7386): mappings merge key by key, anything else replaces, ``null``
deletes. Every built-in scenario but ``ghibli-surge`` is written that way.

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

from meltguard.api.fields import field_rule_error as _rule
from meltguard.api.models import ImageQuotaPolicy
from meltguard.api.validation import FieldError, PolicyInvalid, field_errors, parse_policy
from meltguard.sim.errors import SimulationInputInvalid

BUILT_IN_PACKAGE = "meltguard.sim.scenarios"
#: The scenario ``meltguard simulate`` runs without ``--scenario``; the others extend it.
DEFAULT_SCENARIO = "ghibli-surge"

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Celsius = Annotated[float, Field(ge=-40, le=150)]


class _Part(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Timing(_Part):
    """Time steps: physics (demand, queues, heat) and control (strategies decide)."""

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


class GpuProfile(_Part):
    """How one kind of GPU, cooled one way, turns work into watts and watts into heat.

    Two operating points fix a straight line from power to steady temperature (so a profile
    reads like a measurement): ``idleWatts`` at ``idleCelsius`` and ``fullLoadWatts`` (the
    draw at full load, already held under ``powerLimitWatts`` by the power cap) at
    ``fullLoadCelsius``. The slope is the cooling's resistance (degrees per watt), the line's
    value at 0 W its effective inlet temperature; the temperature follows the power with
    ``timeConstantSeconds``. Where full load would settle above ``slowdownCelsius`` the GPU
    slows its clocks to stay there (see :mod:`meltguard.sim.thermal`). ``source`` says where
    the numbers come from: measured, fitted or assumed.
    """

    source: Annotated[str, Field(min_length=1)]
    idle_watts: NonNegative
    idle_celsius: Celsius
    full_load_watts: Positive
    full_load_celsius: Celsius
    power_limit_watts: Positive
    slowdown_celsius: Celsius
    time_constant_seconds: Positive
    spread_celsius: NonNegative = 0

    @model_validator(mode="after")
    def _a_rising_line_under_the_cap(self) -> GpuProfile:
        if self.full_load_watts <= self.idle_watts:
            raise _rule("fullLoadWatts", "must be above idleWatts")
        if self.full_load_celsius <= self.idle_celsius:
            raise _rule("fullLoadCelsius", "must be above idleCelsius")
        if self.full_load_watts > self.power_limit_watts:
            raise _rule("fullLoadWatts", f"must not exceed powerLimitWatts"
                                         f" ({self.power_limit_watts:g}): the cap holds it")
        if self.slowdown_celsius <= self.idle_celsius:
            raise _rule("slowdownCelsius", "must be above idleCelsius (an idle GPU would slow)")
        return self


class CoolingFailure(_Part):
    """A share of the nodes follow another GPU profile from ``startHour`` to ``endHour``.

    The nodes are spread evenly over the fleet (every fourth node for a share of 0.25), so
    the share holds among the GPUs in use whatever the fleet's size.
    """

    profile: Annotated[str, Field(min_length=1)]
    node_share: Annotated[float, Field(gt=0, le=1)]
    start_hour: NonNegative
    end_hour: Positive | None = None

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> CoolingFailure:
        if self.end_hour is not None and self.end_hour <= self.start_hour:
            raise _rule("endHour", f"must be after startHour ({self.start_hour:g})")
        return self


class Fleet(_Part):
    """The GPUs the inference Deployment can get and how fast they make images.

    ``initialReplicas`` left out (the usual case) starts the day warm: as many replicas as
    the policy's target utilization asks for the normal day's demand at midnight.
    """

    gpu_supply: Annotated[int, Field(ge=1, le=100_000)] = 1000
    gpus_per_replica: Annotated[int, Field(ge=1, le=16)] = 1
    gpus_per_node: Annotated[int, Field(ge=1, le=64)] = 8
    initial_replicas: Annotated[int, Field(ge=0, le=100_000)] | None = None
    gpu_profile: Annotated[str, Field(min_length=1)] = "h200"
    gpu_seconds_per_image: Positive = 6
    startup_seconds: NonNegative = 240
    request_timeout_seconds: Positive = 120
    memory_total_gib: Positive = 80
    model_memory_gib: NonNegative = 38
    busy_memory_gib: NonNegative = 24

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
    """One simulated day: fleet, GPU profiles, demand, time steps, baselines and policy."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    description: str = ""
    duration_hours: Annotated[float, Field(gt=0, le=24 * 7)] = 24
    seed: Annotated[int, Field(ge=0)] = 0
    timing: Timing = Field(default_factory=Timing)
    fleet: Fleet = Field(default_factory=Fleet)
    gpu_profiles: dict[str, GpuProfile] = Field(default_factory=dict)
    cooling_failures: list[CoolingFailure] = Field(default_factory=list)
    latency_slo_seconds: Positive = 30
    demand: Demand
    static_caps: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    policy: dict[str, Any]

    @model_validator(mode="after")
    def _at_least_one_tick(self) -> Scenario:
        if self.duration_hours * 3600 < self.timing.control_tick_seconds:
            raise _rule("durationHours", "must last at least one control tick")
        return self

    @model_validator(mode="after")
    def _profiles_known(self) -> Scenario:
        known = ", ".join(sorted(self.gpu_profiles)) or "none"
        if self.fleet.gpu_profile not in self.gpu_profiles:
            raise _rule("fleet.gpuProfile", f"no profile {self.fleet.gpu_profile!r} in"
                                            f" gpuProfiles (it has: {known})")
        for index, failure in enumerate(self.cooling_failures):
            if failure.profile not in self.gpu_profiles:
                raise _rule(f"coolingFailures[{index}].profile",
                            f"no profile {failure.profile!r} in gpuProfiles (it has: {known})")
        return self

    @property
    def duration_seconds(self) -> int:
        """Simulated seconds, rounded down to whole control ticks."""
        tick = self.timing.control_tick_seconds
        return int(self.duration_hours * 3600) // tick * tick


def built_in_names() -> list[str]:
    """Names of the scenarios shipped with meltguard, the default first."""
    folder = resources.files(BUILT_IN_PACKAGE)
    names = sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                   if p.name.endswith(".yaml"))
    return sorted(names, key=lambda name: name != DEFAULT_SCENARIO)


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


def _built_in_path(name: str) -> Path:
    return Path(str(resources.files(BUILT_IN_PACKAGE).joinpath(f"{name}.yaml")))


def scenario_path(name_or_path: str) -> Path:
    """The file of a built-in scenario name, or ``name_or_path`` itself when it is a file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    if name_or_path in built_in_names():
        return _built_in_path(name_or_path)
    known = ", ".join(built_in_names())
    raise SimulationInputInvalid(
        name_or_path,
        [FieldError("--scenario", f"no built-in scenario {name_or_path!r} (built in: {known})"
                    " and no such file")],
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """``patch`` applied to ``target`` as an RFC 7386 JSON merge patch (neither is changed)."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def resolve_extends(document: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """The document with its ``extends`` chain merged in (built-in scenarios only)."""
    base_name = document.get("extends")
    if base_name is None:
        return document
    known = built_in_names()
    if not isinstance(base_name, str) or base_name not in known:
        raise SimulationInputInvalid(source, [FieldError(
            "extends", f"no built-in scenario {base_name!r} (built in: {', '.join(known)})")])
    if "name" not in document:
        raise SimulationInputInvalid(source, [FieldError(
            "name", "a scenario that extends another must name itself")])
    base = read_yaml(_built_in_path(base_name), base_name)
    if not isinstance(base, Mapping):
        raise SimulationInputInvalid(base_name, [FieldError("(object)", "must be a mapping")])
    own = {key: value for key, value in document.items() if key != "extends"}
    merged: Mapping[str, Any] = merge_patch(resolve_extends(base, base_name), own)
    return merged


def parse_scenario(document: Any, source: str) -> tuple[Scenario, ImageQuotaPolicy]:
    """A validated scenario and its policy; every problem is reported, each by its field."""
    if not isinstance(document, Mapping):
        raise SimulationInputInvalid(source, [FieldError("(object)", "must be a mapping")])
    document = resolve_extends(document, source)
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


def defaults_only(policy: ImageQuotaPolicy) -> ImageQuotaPolicy:
    """The policy with only ``scaleTargetRef``, ``min/maxReplicas`` and the tiers kept: every
    tuning field at its default (``--defaults``: how the defaults fare on a scenario)."""
    spec = policy.spec
    return parse_policy({
        "apiVersion": policy.api_version,
        "kind": policy.kind,
        "metadata": policy.metadata.model_dump(by_alias=True, exclude_none=True),
        "spec": {
            "scaleTargetRef": spec.scale_target_ref.model_dump(by_alias=True, exclude_none=True),
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "quotas": {"tiers": [tier.model_dump(by_alias=True, exclude_none=True,
                                                 exclude_defaults=True)
                                 for tier in spec.quotas.tiers]},
        },
    })


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
