"""Names used everywhere in meltguard, spelled once: the resource, its phases, throttle reasons.

This module imports nothing (not even pydantic), so the node-side exporter can use it without
pulling in the resource models.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

GROUP = "meltguard.io"
VERSION = "v1alpha1"
#: ``apiVersion`` and ``kind`` as types, for the models that accept only this resource.
PolicyApiVersion = Literal["meltguard.io/v1alpha1"]
PolicyKind = Literal["ImageQuotaPolicy"]
API_VERSION: str = get_args(PolicyApiVersion)[0]
KIND: str = get_args(PolicyKind)[0]
PLURAL = "imagequotapolicies"
SINGULAR = "imagequotapolicy"
SHORT_NAMES: tuple[str, ...] = ("iqp",)

Phase = Literal["Cool", "Warm", "Hot", "Melting", "Unknown"]
PHASES: tuple[Phase, ...] = get_args(Phase)
#: Phases in which the fleet has headroom: quotas may be given back.
CALM_PHASES: frozenset[Phase] = frozenset({"Cool", "Warm"})

ThrottleReasonName = Literal[
    "HwThermalSlowdown", "SwThermalSlowdown", "HwPowerBrakeSlowdown", "HwSlowdown", "SwPowerCap"
]


class ThrottleReason(NamedTuple):
    """One reason a GPU slows its clocks, in each of the spellings meltguard meets."""

    #: As NVML names it, and as ``spec.melt.throttleReasons`` lists it.
    name: ThrottleReasonName
    #: As the exporter labels it: ``meltguard_gpu_throttled{reason="..."}``.
    label: str
    #: Its bit in NVML's clocks-event reasons mask (and DCGM's ``..._CLOCKS_EVENT_REASONS``).
    bit: int


THROTTLE_REASONS: tuple[ThrottleReason, ...] = (
    ThrottleReason("HwThermalSlowdown", "hw_thermal", 0x40),
    ThrottleReason("SwThermalSlowdown", "sw_thermal", 0x20),
    ThrottleReason("HwPowerBrakeSlowdown", "hw_power_brake", 0x80),
    ThrottleReason("HwSlowdown", "hw_slowdown", 0x08),
    ThrottleReason("SwPowerCap", "sw_power_cap", 0x04),
)
#: Exporter label -> NVML name, and back.
THROTTLE_NAME_OF_LABEL: dict[str, ThrottleReasonName] = {r.label: r.name for r in THROTTLE_REASONS}
THROTTLE_LABEL_OF_NAME: dict[ThrottleReasonName, str] = {r.name: r.label for r in THROTTLE_REASONS}


def throttle_labels(mask: int) -> frozenset[str]:
    """The exporter's reason labels for the bits set in a clocks-event reasons mask."""
    return frozenset(reason.label for reason in THROTTLE_REASONS if mask & reason.bit)
