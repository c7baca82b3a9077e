"""A real ``prometheus`` process on a free 127.0.0.1 port, scraping the targets it is given."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..exporter_process import free_port, get


@dataclass
class RunningPrometheus:
    process: subprocess.Popen[bytes]
    url: str


def get_status(url: str) -> int:
    try:
        return get(url)[0]
    except OSError:
        return 0


@contextlib.contextmanager
def running_prometheus(
    workdir: Path, job: str, targets: Sequence[str]
) -> Iterator[RunningPrometheus]:
    """Prometheus scraping ``targets`` (``host:port``) every second as job ``job``, keeping
    the targets' own labels; skips the test when the binary is missing."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus binary not found (apt-get install prometheus)")
    config = workdir / "prometheus.yml"
    listed = ", ".join(f"'{target}'" for target in targets)
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        "    honor_labels: true\n"
        f"    static_configs: [{{targets: [{listed}]}}]\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while get_status(f"{url}/-/ready") != 200:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("prometheus did not become ready")
            time.sleep(0.2)
        yield RunningPrometheus(process, url)
    finally:
        process.terminate()
        process.wait(timeout=20)
