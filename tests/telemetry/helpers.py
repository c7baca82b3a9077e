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
