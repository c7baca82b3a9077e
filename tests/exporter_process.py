"""A real ``meltguard exporter`` process on a free 127.0.0.1 port, and plain HTTP helpers.

Shared by the exporter's tests and the ingest's (which read what the exporter serves).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MELTGUARD = str(Path(sys.executable).with_name("meltguard"))
ATTACHED_PODS = ("inference/imagegen-0", "inference/imagegen-1", "other/batch-0")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningExporter:
    """A ``meltguard exporter`` subprocess and its base URL."""

    process: subprocess.Popen[bytes]
    url: str
    port: int


def wait_until_serving(process: subprocess.Popen[bytes], url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else b""
            raise RuntimeError(f"exporter exited with {process.returncode}: {stderr!r}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise TimeoutError(f"exporter at {url} did not answer /healthz within {timeout}s")


def start_exporter(*flags: str, node: str = "gpu-node-1") -> RunningExporter:
    port = free_port()
    env = {**os.environ, "NODE_NAME": node}
    env.pop("POD_NAME", None)
    env.pop("POD_NAMESPACE", None)
    process = subprocess.Popen(
        [MELTGUARD, "exporter", "--host", "127.0.0.1", "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, url)
    except BaseException:
        process.kill()
        raise
    return RunningExporter(process, url, port)


def stop_exporter(exporter: RunningExporter) -> None:
    exporter.process.terminate()
    try:
        exporter.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        exporter.process.kill()
        exporter.process.wait()


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
