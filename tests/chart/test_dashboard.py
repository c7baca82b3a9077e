"""The Grafana dashboard: valid JSON with the panels DESIGN/issue 7 ask for, shipped as a
ConfigMap the Grafana sidecar picks up."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from .helm import NAMESPACE, Helm, one
from .monitoring import DASHBOARD_FILE, dashboard, dashboard_queries
from .promql import metric_names


def test_dashboard_shows_what_a_platform_team_needs() -> None:
    names = set().union(*(metric_names(expr) for _, expr in dashboard_queries(dashboard())))
    for needed in [
        "meltguard_policy_phase",  # phase per policy
        "meltguard_policy_gpus",  # GPUs by state
        "meltguard_gpu_temperature_celsius",  # temperature
        "meltguard_policy_replicas",  # replicas current / desired / pending
        "meltguard_quota_limit",  # limits by tier
    ]:
        assert needed in names


def test_panels_have_unique_ids_and_queries() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "policy"} <= variables


def test_dashboard_configmap_carries_the_json_and_the_sidecar_label(helm: Helm) -> None:
    configmap = one(helm.template(), "ConfigMap", "meltguard-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == NAMESPACE
    shipped = json.loads(configmap["data"]["meltguard-overview.json"])
    assert shipped == json.loads(DASHBOARD_FILE.read_text())


def test_dashboard_can_go_to_grafanas_namespace(helm: Helm) -> None:
    docs = helm.template(settings=["monitoring.dashboard.namespace=monitoring"])
    assert one(docs, "ConfigMap", "meltguard-dashboard")["metadata"]["namespace"] == "monitoring"


#: What Grafana puts in place of its variables before the query reaches Prometheus.
GRAFANA_VALUES = {"$__rate_interval": "1m", "$namespace": ".*", "$policy": ".*"}


def as_prometheus_query(expr: str) -> str:
    for variable, value in GRAFANA_VALUES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query, as the expression of a recording rule."""
    rules = [
        {"record": f"meltguard:dashboard_query_{i}", "expr": as_prometheus_query(expr)}
        for i, (_, expr) in enumerate(dashboard_queries(dashboard()))
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
