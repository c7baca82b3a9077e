"""scripts/checkov_gate.py, run as CI runs it, on checkov-shaped reports written here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helm import REPO_ROOT

GATE = REPO_ROOT / "scripts" / "checkov_gate.py"
WAIVERS = REPO_ROOT / "scans" / "checkov-waivers.yaml"

ROOT_REASON = "the pod-resources socket is owned by root, so uid 0 is needed"


def failed(check: str, resource: str) -> dict[str, Any]:
    return {
        "check_id": check,
        "check_name": f"name of {check}",
        "resource": resource,
        "file_path": "/rendered/production-values.yaml",
        "severity": None,
    }


def report(*failures: dict[str, Any], passed: int = 10) -> list[dict[str, Any]]:
    return [
        {
            "check_type": "kubernetes",
            "results": {"failed_checks": list(failures)},
            "summary": {"passed": passed, "failed": len(failures)},
        }
    ]


def gate(tmp_path: Path, waivers: object, checkov: object) -> subprocess.CompletedProcess[str]:
    waivers_file = tmp_path / "waivers.yaml"
    waivers_file.write_text(yaml.safe_dump(waivers))
    report_file = tmp_path / "checkov.json"
    report_file.write_text(json.dumps(checkov))
    return subprocess.run(
        [sys.executable, str(GATE), str(waivers_file), str(report_file)],
        capture_output=True, text=True, timeout=60,
    )


ROOT_WAIVER = {
    "check": "CKV_K8S_23",
    "resources": ["DaemonSet.*.meltguard-exporter"],
    "reason": ROOT_REASON,
}


def test_a_waived_finding_passes_and_is_listed_with_its_reason(tmp_path: Path) -> None:
    done = gate(tmp_path, [ROOT_WAIVER],
                report(failed("CKV_K8S_23", "DaemonSet.meltguard-system.meltguard-exporter")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "10 passed, 1 failed but waived, 0 failed and not waived" in done.stdout
    assert ROOT_REASON in done.stdout


def test_the_same_check_on_another_resource_fails(tmp_path: Path) -> None:
    done = gate(tmp_path, [ROOT_WAIVER], report(
        failed("CKV_K8S_23", "DaemonSet.meltguard-system.meltguard-exporter"),
        failed("CKV_K8S_23", "Deployment.meltguard-system.meltguard-operator"),
    ))
    assert done.returncode == 1
    assert "OPEN   CKV_K8S_23 name of CKV_K8S_23: Deployment.meltguard-system.meltguard-operator" \
        in done.stdout


def test_a_waiver_that_covers_nothing_fails(tmp_path: Path) -> None:
    done = gate(tmp_path, [ROOT_WAIVER], report())
    assert done.returncode == 1
    assert "UNUSED waiver CKV_K8S_23" in done.stdout


@pytest.mark.parametrize(
    ("waiver", "complaint"),
    [
        ({"check": "CKV_K8S_23", "resources": ["*"]}, "waivers[0]: needs exactly the keys"),
        ({**ROOT_WAIVER, "reason": "root"}, "waivers[0].reason: say why"),
        ({**ROOT_WAIVER, "resources": []}, "waivers[0].resources: a non-empty list"),
    ],
)
def test_a_waiver_without_a_reason_or_scope_is_refused(
    tmp_path: Path, waiver: dict[str, object], complaint: str
) -> None:
    done = gate(tmp_path, [waiver], report())
    assert done.returncode == 2
    assert complaint in done.stderr


def test_a_report_that_is_not_checkovs_is_refused(tmp_path: Path) -> None:
    done = gate(tmp_path, [ROOT_WAIVER], {"summary": {}})
    assert done.returncode == 2
    assert "not checkov's JSON output" in done.stderr


def test_the_projects_waivers_are_well_formed(tmp_path: Path) -> None:
    """Each waiver of scans/checkov-waivers.yaml has its scope and reason (else exit 2)."""
    waivers = yaml.safe_load(WAIVERS.read_text())
    done = gate(tmp_path, waivers, report())
    assert done.returncode == 1, done.stderr
    assert done.stdout.count("UNUSED waiver") == len(waivers)
