"""The chart's alerting rules and dashboard, as rendered for the tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from .helm import CHART_DIR, Helm, one

DASHBOARD_FILE = CHART_DIR / "dashboards" / "meltguard-overview.json"


def rendered_rule_groups(helm: Helm, settings: Iterable[str] = ()) -> dict[str, Any]:
    """``spec`` of the rendered PrometheusRule: a Prometheus rule file's ``groups``."""
    docs = helm.template(settings=["monitoring.prometheusRule.enabled=true", *settings])
    spec: dict[str, Any] = one(docs, "PrometheusRule", "meltguard")["spec"]
    return spec


def alert_rules(groups: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in groups["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return board


def dashboard_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable of the dashboard."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            inner = query.removeprefix("label_values(").rsplit(",", 1)[0]
            yield f"variable {variable['name']}", inner
