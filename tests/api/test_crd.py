"""The committed CRD is the generated one, is a valid CRD, and agrees with the models."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from meltguard.api.crd import CRD_NAME, build_crd, render_crd
from meltguard.api.validation import PolicyInvalid, parse_policy

from .cases import BROKEN, EXAMPLES, ROOT

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


def _openapi_verdict(document: dict[str, Any]) -> bool:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    root = copy.deepcopy(_api_server_view(schema))
    root["properties"]["metadata"] = {"type": "object"}
    root["properties"]["kind"]["enum"] = ["ImageQuotaPolicy"]  # the API server routes by kind
    return jsonschema.Draft4Validator(root).is_valid(document)


def _model_verdict(document: dict[str, Any]) -> bool:
    try:
        parse_policy(document)
    except PolicyInvalid:
        return False
    return True


def test_examples_pass_both_schema_and_models() -> None:
    for example in EXAMPLES:
        for document in yaml.safe_load_all(example.read_text()):
            assert (_openapi_verdict(document), _model_verdict(document)) == (True, True)


#: Rules OpenAPI cannot express: the CRD carries them as CEL x-kubernetes-validations,
#: which a JSON-schema validator does not run. Listed by rule name from tests/api/cases.py.
CEL_ONLY = sorted(case[0] for case in BROKEN if not case[4])


@pytest.mark.parametrize(("rule", "document", "openapi_can"),
                         [(case[0], case[1], case[4]) for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_schema_and_models_agree_on_broken_policies(rule: str, document: dict[str, Any],
                                                    openapi_can: bool) -> None:
    assert _model_verdict(document) is False
    assert _openapi_verdict(document) is (not openapi_can), (
        f"{rule}: the OpenAPI schema should {'reject' if openapi_can else 'not see'} this")


def test_every_cel_only_rule_has_a_cel_validation_in_the_crd() -> None:
    text = CRD_FILE.read_text()
    assert CEL_ONLY == sorted([
        "a scaling direction needs a step", "a tier needs limit or unlimited",
        "an unlimited tier takes no limit", "cool temperature below melt",
        "cool utilization below melt", "floor <= limit", "minReplicas <= maxReplicas",
        "prometheus source needs its url", "unique tier names",
    ])
    for rule in ("self.minReplicas <= self.maxReplicas", "self.floor <= self.limit",
                 "self.cool.temperatureCelsius < self.temperatureCelsius",
                 "self.cool.utilizationPercent < self.utilizationPercent",
                 "exists_one(u, u.name == t.name)", "has(self.prometheus)",
                 "has(self.maxStepReplicas) || has(self.maxStepPercent)",
                 "!= has(self.limit)"):
        assert rule in text
