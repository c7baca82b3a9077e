"""Run the real helm binary on the chart and hand back the rendered objects."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "meltguard"
VALUES_DIR = CHART_DIR / "ci"
#: Release name and namespace of every test render (alert tests depend on the names they give).
RELEASE = "meltguard"
NAMESPACE = "meltguard-system"
#: APIs a cluster with the Prometheus Operator serves; passed to `helm template --api-versions`.
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)


def find_tool(name: str) -> str | None:
    """The repo's .tools/<name> (scripts/fetch-tools.sh), else <name> on PATH."""
    local = REPO_ROOT / ".tools" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


class HelmFailed(Exception):
    """helm exited non-zero; the message is its stderr."""


@dataclass(frozen=True)
class Helm:
    binary: str

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise HelmFailed(done.stderr.strip() or done.stdout.strip())
        return done.stdout

    def template(
        self,
        values_files: Iterable[Path] = (),
        settings: Iterable[str] = (),
        api_versions: Iterable[str] = (),
        include_crds: bool = False,
    ) -> list[dict[str, Any]]:
        """`helm template` of the chart; every non-empty YAML document it printed."""
        args = ["template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE]
        for path in values_files:
            args += ["--values", str(path)]
        for setting in settings:
            args += ["--set", setting]
        for api in api_versions:
            args += ["--api-versions", api]
        if include_crds:
            args.append("--include-crds")
        return [doc for doc in yaml.safe_load_all(self.run(*args)) if doc]


def values_files() -> list[Path]:
    """The chart's CI values files (minimal, production, sidecar-exporter, fire drill)."""
    return sorted(VALUES_DIR.glob("*-values.yaml"))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Rendered objects of ``kind`` (and ``name``, when given)."""
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The single rendered object of ``kind``/``name``; fails naming what was there instead."""
    found = find(docs, kind, name)
    if len(found) != 1:
        present = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
        raise AssertionError(f"expected one {kind}/{name}, found {len(found)} among {present}")
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload rendered."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "DaemonSet", "StatefulSet"}:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]
