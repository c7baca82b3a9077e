"""The Redis stores bench/quota.py measures: one redis-server of its own, or a Redis Cluster
(a URL given, or six nodes of its own on 127.0.0.1 from tests/quota/redis_cluster.py)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.cluster import RedisCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.quota.redis_cluster import MISSING, RedisClusterProcesses

#: ``--store`` value that starts a cluster of the bench's own
OWN_CLUSTER = "redis-cluster"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str] | None:
    """A redis-server without persistence on a free port, or None when not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            directory,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_ready(port)
    return process, f"redis://127.0.0.1:{port}/0"


def redis_cpu_seconds(url: str) -> float:
    """User + system CPU time so far of the Redis server at ``url``, or of every master of
    the cluster (INFO cpu)."""
    if url.startswith("redis-cluster://"):
        host, port = url.removeprefix("redis-cluster://").split(",")[0].rsplit(":", 1)
        with RedisCluster(host=host, port=int(port)) as cluster:
            answers = cluster.info("cpu", target_nodes=RedisCluster.PRIMARIES)
            masters = list(answers.values())
    else:
        with redis.Redis.from_url(url) as single:
            masters = [single.info("cpu")]
    return sum(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) for info in masters)


@contextmanager
def store_url(store: str, directory: str) -> Iterator[str]:
    """``store`` itself, or for ``redis-cluster`` the URL of a six-node cluster started here
    (AOF with fsync every second on each node, as the docs advise) and stopped after."""
    if store != OWN_CLUSTER:
        yield store
        return
    if MISSING is not None:
        raise SystemExit(f"--store {OWN_CLUSTER}: {MISSING}")
    cluster = RedisClusterProcesses(Path(directory) / "cluster")
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()
