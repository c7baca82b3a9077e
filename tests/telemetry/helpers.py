"""Small HTTP helpers shared by the telemetry tests (real requests, no mocks)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def post_json(url: str, body: object | bytes) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def scrape_samples(base_url: str) -> list[Sample]:
    """Every sample of the exporter's page, parsed by prometheus-client's own parser."""
    status, text = get(f"{base_url}/metrics")
    assert status == 200, text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def by_gpu(samples: list[Sample], name: str) -> dict[str, float]:
    """``gpu`` index label -> value, for one metric."""
    return {s.labels["gpu"]: s.value for s in samples if s.name == name}


def render_page(
    node: str = "gpu-node-1", gpus: int = 8, pods: tuple[str, ...] = ("inference/imagegen-0",)
) -> str:
    """A page exactly as the exporter renders it, for simulated GPUs attached to ``pods``."""
    from prometheus_client import CollectorRegistry, generate_latest

    from meltguard.telemetry.attribution import RoundRobinAttribution, parse_attach
    from meltguard.telemetry.exposition import GpuCollector
    from meltguard.telemetry.sampler import Sampler
    from meltguard.telemetry.simulated import SimulatedBackend

    sampler = Sampler(
        SimulatedBackend(gpus, node), RoundRobinAttribution(parse_attach(",".join(pods)))
    )
    sampler.sample_once()
    registry = CollectorRegistry()
    registry.register(GpuCollector(lambda: sampler.snapshot, node))
    return generate_latest(registry).decode()


def replace_line(page: str, metric: str, gpu: int, value: str) -> str:
    """The page with one GPU's value of one metric replaced."""
    lines = page.split("\n")
    for number, line in enumerate(lines):
        if line.startswith(metric + "{") and f'gpu="{gpu}"' in line:
            lines[number] = line.rpartition(" ")[0] + " " + value
            return "\n".join(lines)
    raise AssertionError(f"{metric} of GPU {gpu} not on the page")
