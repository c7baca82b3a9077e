"""Valid examples and one broken policy per validation rule, shared by the API tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
MINIMAL = yaml.safe_load((ROOT / "examples" / "full.yaml").read_text())


def broken(path: str, value: Any, base: dict[str, Any] = MINIMAL) -> dict[str, Any]:
    """The full example (or ``base``) with one field (dotted path, ``[i]`` for list items) set
    to ``value``; the value ``DELETE`` removes the field."""
    document = copy.deepcopy(base)
    node: Any = document
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    key: Any = int(last[1:-1]) if last.startswith("[") else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return document


DELETE = object()

#: The full example with an HPA's ``behavior`` block in place of the shorthand.
HPA_BEHAVIOR = broken("spec.scaling", {"behavior": {
    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15}]},
    "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Min", "policies": [
        {"type": "Percent", "value": 10, "periodSeconds": 60}]},
}})
UP_POLICY = "spec.scaling.behavior.scaleUp.policies[0]"


def broken_behavior(path: str, value: Any) -> dict[str, Any]:
    """:data:`HPA_BEHAVIOR` with one field set to ``value``."""
    return broken(path, value, HPA_BEHAVIOR)


#: (rule, broken document, field path the error must name, words the message must contain,
#:  whether the CRD's OpenAPI schema alone (without CEL) can reject it)
BROKEN: list[tuple[str, dict[str, Any], str, str, bool]] = [
    ("minReplicas <= maxReplicas", broken("spec.minReplicas", 65), "spec.minReplicas",
     "must not exceed maxReplicas", False),
    ("floor <= limit", broken("spec.quotas.tiers[1].floor", 201),
     "spec.quotas.tiers[1].floor", "must not exceed limit", False),
    ("cool temperature below melt", broken("spec.melt.cool.temperatureCelsius", 85),
     "spec.melt.cool.temperatureCelsius", "must be below melt", False),
    ("cool utilization below melt", broken("spec.melt.cool.utilizationPercent", 98),
     "spec.melt.cool.utilizationPercent", "must be below melt", False),
    ("unique tier names", broken("spec.quotas.tiers[1].name", "free"),
     "spec.quotas.tiers[1].name", "used more than once", False),
    ("at least one tier", broken("spec.quotas.tiers", []), "spec.quotas.tiers",
     "at least 1", True),
    ("duration form", broken("spec.quotas.tiers[0].window", "1w"),
     "spec.quotas.tiers[0].window", "not a duration", True),
    ("duration is positive", broken("spec.quotas.tiers[0].window", "0h"),
     "spec.quotas.tiers[0].window", "not a duration", True),
    ("factor below 1", broken("spec.quotas.tighten.factor", 1), "spec.quotas.tighten.factor",
     "less than 1", True),
    ("factor above 0", broken("spec.quotas.tighten.factor", 0), "spec.quotas.tighten.factor",
     "greater than 0", True),
    ("stepPercent in (0, 100]", broken("spec.quotas.relax.stepPercent", 101),
     "spec.quotas.relax.stepPercent", "less than or equal to 100", True),
    ("stepPercent above 0", broken("spec.quotas.relax.stepPercent", 0),
     "spec.quotas.relax.stepPercent", "greater than 0", True),
    ("fleetFraction in (0, 1]", broken("spec.melt.fleetFraction", 1.5),
     "spec.melt.fleetFraction", "less than or equal to 1", True),
    ("percentages in [0, 100]", broken("spec.melt.memoryPercent", -1),
     "spec.melt.memoryPercent", "greater than or equal to 0", True),
    ("target utilization in (0, 100]", broken("spec.scaling.targetUtilizationPercent", 120),
     "spec.scaling.targetUtilizationPercent", "less than or equal to 100", True),
    ("unknown fields rejected", broken("spec.quotas.tiers[0].burst", 5),
     "spec.quotas.tiers[0].burst", "unknown field", True),
    ("unknown spec field rejected", broken("spec.replicas", 5), "spec.replicas",
     "unknown field", True),
    ("enum of sources", broken("spec.telemetry.source", "nvml"), "spec.telemetry.source",
     "'exporter', 'dcgm' or 'prometheus'", True),
    ("enum of throttle reasons", broken("spec.melt.throttleReasons", ["TooHot"]),
     "spec.melt.throttleReasons[0]", "HwThermalSlowdown", True),
    ("enum of onTelemetryLoss", broken("spec.quotas.onTelemetryLoss", "panic"),
     "spec.quotas.onTelemetryLoss", "'hold' or 'tighten'", True),
    ("maxReplicas required", broken("spec.maxReplicas", DELETE), "spec.maxReplicas",
     "required", True),
    ("a tier needs limit or unlimited", broken("spec.quotas.tiers[0].limit", DELETE),
     "spec.quotas.tiers[0].limit", "required unless unlimited", False),
    ("an unlimited tier takes no limit", broken("spec.quotas.tiers[2].limit", 5),
     "spec.quotas.tiers[2].limit", "unlimited tier takes no limit", False),
    ("prometheus source needs its url", broken("spec.telemetry.source", "prometheus"),
     "spec.telemetry.prometheus", "required when source is prometheus", False),
    ("a scaling direction needs a step", broken("spec.scaling.scaleUp.maxStepReplicas", DELETE),
     "spec.scaling.scaleUp.maxStepReplicas", "maxStepReplicas or maxStepPercent", False),
    ("names are DNS names", broken("spec.scaleTargetRef.name", "Imagegen_Worker"),
     "spec.scaleTargetRef.name", "DNS name", True),
    ("negative limits", broken("spec.quotas.tiers[0].limit", -3), "spec.quotas.tiers[0].limit",
     "greater than or equal to 0", True),
    ("integers are integers", broken("spec.maxReplicas", "many"), "spec.maxReplicas",
     "valid integer", True),
    ("kind is ImageQuotaPolicy", broken("kind", "Deployment"), "kind", "ImageQuotaPolicy",
     True),
    ("behavior or the shorthand, not both", broken("spec.scaling.behavior", {}),
     "spec.scaling.behavior", "not both (scaleUp and scaleDown set too)", False),
    ("enum of select policies",
     broken_behavior("spec.scaling.behavior.scaleUp.selectPolicy", "Maximum"),
     "spec.scaling.behavior.scaleUp.selectPolicy", "'Max', 'Min' or 'Disabled'", True),
    ("enum of policy types", broken_behavior(f"{UP_POLICY}.type", "Replicas"),
     f"{UP_POLICY}.type", "'Pods' or 'Percent'", True),
    ("policy value above 0", broken_behavior(f"{UP_POLICY}.value", 0), f"{UP_POLICY}.value",
     "greater than 0", True),
    ("policy value an int32", broken_behavior(f"{UP_POLICY}.value", 2**31),
     f"{UP_POLICY}.value", "less than or equal to 2147483647", True),
    ("policy period above 0", broken_behavior(f"{UP_POLICY}.periodSeconds", 0),
     f"{UP_POLICY}.periodSeconds", "greater than 0", True),
    ("policy period at most 1800 s", broken_behavior(f"{UP_POLICY}.periodSeconds", 1801),
     f"{UP_POLICY}.periodSeconds", "less than or equal to 1800", True),
    ("a direction needs a policy",
     broken_behavior("spec.scaling.behavior.scaleDown.policies", []),
     "spec.scaling.behavior.scaleDown.policies", "at least 1", True),
    ("stabilization window at most 3600 s",
     broken_behavior("spec.scaling.behavior.scaleDown.stabilizationWindowSeconds", 3601),
     "spec.scaling.behavior.scaleDown.stabilizationWindowSeconds",
     "less than or equal to 3600", True),
    ("unknown behavior fields rejected",
     broken_behavior("spec.scaling.behavior.scaleUp.tolerance", 0.05),
     "spec.scaling.behavior.scaleUp.tolerance", "unknown field", True),
    ("demand names one source", broken("spec.quotas.demand", {
        "url": "http://quota:8080", "prometheus": {"url": "http://prometheus:9090"}}),
     "spec.quotas.demand.pods", "exactly one of pods, url or prometheus (found url and "
     "prometheus)", False),
    ("demand names a source", broken("spec.quotas.demand", {}), "spec.quotas.demand.pods",
     "exactly one of pods, url or prometheus (found none)", False),
    ("demand url is http(s)", broken("spec.quotas.demand", {"url": "quota:8080"}),
     "spec.quotas.demand.url", "is not the form", True),
    ("demand pods port", broken("spec.quotas.demand", {"pods": {
        "namespace": "q", "selector": {"matchLabels": {"app": "q"}}, "port": 0}}),
     "spec.quotas.demand.pods.port", "greater than or equal to 1", True),
]
