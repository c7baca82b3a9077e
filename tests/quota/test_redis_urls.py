"""``--store redis-cluster://...``: what is accepted, and errors that name what is wrong."""

from __future__ import annotations

import subprocess

import pytest

from meltguard.quota.redis_clients import ClusterAddress, parse_cluster_url
from meltguard.quota.server import open_store

from .conftest import MELTGUARD


def test_a_cluster_url_names_its_startup_nodes_and_credentials() -> None:
    assert parse_cluster_url("redis-cluster://10.0.0.1:7000,redis-1.ns.svc:7001") == (
        ClusterAddress((("10.0.0.1", 7000), ("redis-1.ns.svc", 7001)))
    )
    assert parse_cluster_url("redis-cluster://app:s%40cret@[fd00::1]:6379") == ClusterAddress(
        (("fd00::1", 6379),), "app", "s@cret"
    )
    assert parse_cluster_url("redis-cluster://:only-password@h:1") == ClusterAddress(
        (("h", 1),), None, "only-password"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis-clusters://h:1", "or a redis-cluster:// URL, got 'redis-clusters://h:1'"),
        ("redis-cluster://", "names at least one HOST:PORT"),
        ("redis-cluster://h", "cluster node 'h' must be HOST:PORT"),
        ("redis-cluster://h:1,:2", "cluster node ':2' must be HOST:PORT"),
        ("redis-cluster://[]:2", "cluster node '[]:2' has no host"),
        ("redis-cluster://h:port", "cluster node 'h:port' needs a port from 1 to 65535"),
        ("redis-cluster://h:0", "needs a port from 1 to 65535"),
        ("redis-cluster://h:65536", "needs a port from 1 to 65535"),
        ("redis-cluster://h:1,", "cluster node '' must be HOST:PORT"),
        ("redis-cluster://h:1/0", "takes no database, path or query"),
        ("redis-cluster://h:1?password=x", "takes no database, path or query"),
    ],
)
def test_a_bad_cluster_url_is_refused_naming_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^--store") as refused:
        open_store(url)
    assert message in str(refused.value)


def test_the_password_of_a_bad_cluster_url_never_shows() -> None:
    with pytest.raises(ValueError) as refused:
        parse_cluster_url("redis-cluster://app:hunter2@h:1,h2")
    assert "hunter2" not in str(refused.value)
    assert "'h2'" in str(refused.value)
    with pytest.raises(ValueError, match="a cluster URL starts with redis-cluster://"):
        parse_cluster_url("redis://app:hunter2@h:1")


def test_quota_server_exits_2_on_a_bad_cluster_url() -> None:
    result = subprocess.run(
        [MELTGUARD, "quota-server", "--limits", "x", "--store", "redis-cluster://h:99999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cluster node 'h:99999' needs a port from 1 to 65535" in result.stderr
