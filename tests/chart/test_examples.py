"""The chart's own example: an inference Deployment with the exporter as a sidecar."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from meltguard.api.validation import parse_policy
from meltguard.cli import build_parser

from .helm import CHART_DIR
from .test_render import KUBE_VERSIONS

EXAMPLES = CHART_DIR / "examples"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return doc


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_sidecar_deployment_validates(version: str) -> None:
    kubernetes_validate.validate(load("sidecar-exporter-deployment.yaml"), version, strict=True)


def test_sidecar_deployment_is_what_its_policy_scrapes() -> None:
    deployment = load("sidecar-exporter-deployment.yaml")
    policy = parse_policy(load("source-exporter-sidecar.yaml"))
    exporter = policy.spec.telemetry.exporter
    pod = deployment["spec"]["template"]
    assert deployment["metadata"]["namespace"] == exporter.namespace
    assert exporter.selector.match_labels.items() <= pod["metadata"]["labels"].items()
    assert policy.spec.scale_target_ref.name == deployment["metadata"]["name"]
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "meltguard-exporter")
    assert [p["containerPort"] for p in sidecar["ports"]] == [exporter.port]
    args = build_parser().parse_args(sidecar["args"])
    assert args.port == exporter.port
    assert args.attribution == "sidecar"
