"""Exporter pages for the ingest tests, rendered by the exporter's own code."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from meltguard.exporter.attribution import RoundRobinAttribution, parse_attach
from meltguard.exporter.exposition import GpuCollector
from meltguard.exporter.sampler import Sampler
from meltguard.exporter.simulated import SimulatedBackend


def render_page(
    node: str = "gpu-node-1", gpus: int = 8, pods: tuple[str, ...] = ("inference/imagegen-0",)
) -> str:
    """A page exactly as the exporter renders it, for simulated GPUs attached to ``pods``."""
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
