"""The committed CRD is the generated one, is a valid CRD, and agrees with the models."""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

from meltguard.api.crd import CRD_NAME, build_crd, render_crd
from meltguard.api.validation import PolicyInvalid, parse_policy

from .cases import BROKEN, EXAMPLES, ROOT

CEL = celpy.Environment()
CRD_FILE = ROOT / "crds" / f"{CRD_NAME}.yaml"


def test_committed_crd_is_generated_from_the_models() -> None:
    assert CRD_FILE.read_text() == render_crd(), (
        "crds/ drifted from the models: run `meltguard crd -o crds/" + CRD_FILE.name + "`")


@pytest.mark.parametrize("version", ["1.28.0", "1.37.0"])
def test_crd_is_a_valid_custom_resource_definition(version: str) -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    kubernetes_validate.validate(crd, version, strict=True)


def test_printer_columns_short_name_category_and_status_subresource() -> None:
    version = build_crd()["spec"]["versions"][0]
    names = build_crd()["spec"]["names"]
    columns = [column["name"].upper() for column in version["additionalPrinterColumns"]]
    assert columns == ["PHASE", "REPLICAS", "DESIRED", "GPUS", "HOT", "FREE-LIMIT", "AGE"]
    assert names["shortNames"] == ["iqp"] and names["categories"] == ["meltguard"]
    assert version["subresources"] == {"status": {}}


def _api_server_view(schema: Any) -> Any:
    """The schema as the API server applies it to a create with strict field validation:
    unknown fields are errors (kubectl's default), which JSON Schema needs spelled out."""
    if isinstance(schema, dict):
        schema = {key: _api_server_view(value) for key, value in schema.items()}
        if "properties" in schema:
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [_api_server_view(item) for item in schema]
    return schema


def _schema() -> dict[str, Any]:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    root: dict[str, Any] = copy.deepcopy(_api_server_view(schema))
    root["properties"]["metadata"] = {"type": "object"}
    root["properties"]["kind"]["enum"] = ["ImageQuotaPolicy"]  # the API server routes by kind
    return root


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it before validation."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = _apply_defaults(child, value[name])
    elif isinstance(value, list) and "items" in schema:
        return [_apply_defaults(schema["items"], item) for item in value]
    return value


def _cel_failures(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Evaluate every x-kubernetes-validations rule (with cel-python) where it applies."""
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = CEL.program(CEL.compile(rule["rule"]))
        if not bool(program.evaluate({"self": celpy.json_to_cel(value)})):
            failures.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                failures += _cel_failures(child, value[name], f"{path}.{name}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            failures += _cel_failures(schema["items"], item, f"{path}[{index}]")
    return failures


def _openapi_verdict(document: dict[str, Any], with_cel: bool = False) -> bool:
    """Would the API server accept this object? OpenAPI schema only, or with the CEL rules."""
    schema = _schema()
    if not jsonschema.Draft4Validator(schema).is_valid(document):
        return False
    if not with_cel:
        return True
    return not _cel_failures(schema, _apply_defaults(schema, copy.deepcopy(document)))


def _model_verdict(document: dict[str, Any]) -> bool:
    try:
        parse_policy(document)
    except PolicyInvalid:
        return False
    return True


def test_examples_pass_both_schema_and_models() -> None:
    for example in EXAMPLES:
        for document in yaml.safe_load_all(example.read_text()):
            assert _openapi_verdict(document, with_cel=True) and _model_verdict(document)


#: Rules OpenAPI cannot express: the CRD carries them as CEL x-kubernetes-validations,
#: which a JSON-schema validator does not run (cel-python runs them below).
CEL_ONLY = sorted(case[0] for case in BROKEN if not case[4])


@pytest.mark.parametrize(("rule", "document", "openapi_can"),
                         [(case[0], case[1], case[4]) for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_schema_and_models_agree_on_broken_policies(rule: str, document: dict[str, Any],
                                                    openapi_can: bool) -> None:
    assert _model_verdict(document) is False
    assert _openapi_verdict(document) is (not openapi_can), (
        f"{rule}: the OpenAPI schema should {'reject' if openapi_can else 'not see'} this")
    assert _openapi_verdict(document, with_cel=True) is False, f"{rule}: the CRD accepts it"


def test_every_cel_only_rule_has_a_cel_validation_in_the_crd() -> None:
    text = CRD_FILE.read_text()
    assert sorted([
        "a scaling direction needs a step", "a tier needs limit or unlimited",
        "an unlimited tier takes no limit", "behavior or the shorthand, not both",
        "cool temperature below melt",
        "cool utilization below melt", "demand names a source", "demand names one source",
        "floor <= limit", "minReplicas <= maxReplicas",
        "prometheus source needs its url", "unique tier names",
    ]) == CEL_ONLY
    for rule in ("self.minReplicas <= self.maxReplicas", "self.floor <= self.limit",
                 "self.cool.temperatureCelsius < self.temperatureCelsius",
                 "self.cool.utilizationPercent < self.utilizationPercent",
                 "exists_one(u, u.name == t.name)", "has(self.prometheus)",
                 "has(self.maxStepReplicas) || has(self.maxStepPercent)",
                 "!= has(self.limit)", "!(has(self.scaleUp) || has(self.scaleDown))",
                 "has(self.prometheus)].exists_one(x, x)"):
        assert rule in text
