"""The PrometheusRule: promtool checks and unit tests, annotations, and runbook sections."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .helm import REPO_ROOT, Helm
from .monitoring import alert_rules, rendered_rule_groups

REQUIRED_ALERTS = {
    "MeltguardGPUsMelting",
    "MeltguardQuotasTightened",
    "MeltguardNoGPUCapacity",
    "MeltguardAtMaxReplicas",
    "MeltguardTelemetryStale",
    "MeltguardOperatorDown",
    "MeltguardQuotaStoreErrors",
    "MeltguardQuotaCallersUnauthenticated",
}
ALERT_TESTS = Path(__file__).with_name("alerts-test.yaml")
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"


def write_rules(helm: Helm, folder: Path) -> Path:
    path = folder / "meltguard-rules.yaml"
    path.write_text(yaml.safe_dump(rendered_rule_groups(helm), sort_keys=False))
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_exactly_the_required_alerts(helm: Helm) -> None:
    names = [rule["alert"] for rule in alert_rules(rendered_rule_groups(helm))]
    assert sorted(names) == sorted(REQUIRED_ALERTS)


def test_promtool_check_rules(helm: Helm, promtool: str, tmp_path: Path) -> None:
    done = run(promtool, "check", "rules", str(write_rules(helm, tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(REQUIRED_ALERTS)} rules found" in done.stdout


def test_promtool_check_rules_rejects_a_broken_expression(
    helm: Helm, promtool: str, tmp_path: Path
) -> None:
    """The check above can fail: a syntax error in one expression is caught."""
    groups = rendered_rule_groups(helm)
    groups["groups"][0]["rules"][0]["expr"] = "max by (policy (meltguard_policy_phase"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(groups))
    assert run(promtool, "check", "rules", str(path)).returncode != 0


def promtool_tests(rules: Path, folder: Path) -> Path:
    """alerts-test.yaml pointed at ``rules``."""
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    tests["rule_files"] = [str(rules)]
    path = folder / "alerts-test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    return path


def test_promtool_unit_tests_pass(helm: Helm, promtool: str, tmp_path: Path) -> None:
    tests = promtool_tests(write_rules(helm, tmp_path), tmp_path)
    done = run(promtool, "test", "rules", str(tests))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize(
    ("alert", "before", "after"),
    [
        ("MeltguardNoGPUCapacity", "> 0", "> 10"),
        # counting every invalid request, 400s of known callers included
        ("MeltguardQuotaCallersUnauthenticated", 'status=~"401|UNAUTHENTICATED"', 'status=~".+"'),
        # gRPC refusals no longer counted
        ("MeltguardQuotaCallersUnauthenticated", "UNAUTHENTICATED", "UNAUTHORIZED"),
    ],
    ids=["no-gpu-threshold", "callers-any-status", "callers-grpc-status"],
)
def test_promtool_unit_tests_fail_on_a_changed_rule(
    helm: Helm, promtool: str, tmp_path: Path, alert: str, before: str, after: str
) -> None:
    """The unit tests pin the rules: changing what an alert matches breaks them."""
    groups = rendered_rule_groups(helm)
    for rule in alert_rules(groups):
        if rule["alert"] == alert:
            assert before in rule["expr"], rule["expr"]
            rule["expr"] = rule["expr"].replace(before, after)
    rules = tmp_path / "changed.yaml"
    rules.write_text(yaml.safe_dump(groups))
    done = run(promtool, "test", "rules", str(promtool_tests(rules, tmp_path)))
    assert done.returncode != 0
    assert alert in done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == REQUIRED_ALERTS
    assert quiet == REQUIRED_ALERTS


def test_every_alert_has_severity_text_and_a_runbook_section(helm: Helm) -> None:
    sections = {heading.lower() for heading in re.findall(r"^## (\w+)$", RUNBOOK.read_text(), re.M)}
    for rule in alert_rules(rendered_rule_groups(helm)):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert len(annotations["description"]) > 60, name
        anchor = annotations["runbook_url"].rsplit("#", 1)[1]
        assert anchor == name.lower(), name
        assert anchor in sections, f"docs/runbook.md has no '## {name}' section"
