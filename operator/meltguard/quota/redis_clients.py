"""The Redis client behind the store: one server (``redis://``) or a Redis Cluster.

A cluster is named by ``redis-cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]``: a few of
its nodes to learn the slot map from (any node will do; naming several lets the service
start while one is down). The cluster client then follows the map itself: it sends each
command to the master of its key's slot, splits a pipeline into one batch per master,
follows MOVED and ASK redirections, and reloads the map after a connection fails, which is
how it finds the replica promoted in a failover.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

CLUSTER_SCHEME = "redis-cluster"

RedisClient = aioredis.Redis | RedisCluster
#: What a client call raises when the store fails (the cluster client's own errors, such
#: as a slot no node serves, are not RedisErrors).
STORE_ERRORS = (RedisError, RedisClusterException, OSError)


@dataclass(frozen=True)
class ClusterAddress:
    """A parsed ``redis-cluster://`` URL."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def _node(entry: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for an IPv6 address) of one startup node."""
    host, colon, port = entry.rpartition(":")
    if not colon or not host:
        raise ValueError(f"--store: cluster node {entry!r} must be HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    if not host:
        raise ValueError(f"--store: cluster node {entry!r} has no host")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--store: cluster node {entry!r} needs a port from 1 to 65535")
    return host, int(port)


def parse_cluster_url(url: str) -> ClusterAddress:
    """The startup nodes and credentials of a ``redis-cluster://`` URL, or a ValueError
    naming what is wrong (the message never carries the password)."""
    scheme, _, rest = url.partition("://")
    if scheme != CLUSTER_SCHEME:
        raise ValueError(f"--store: a cluster URL starts with {CLUSTER_SCHEME}://")
    userinfo, at, hosts = rest.rpartition("@")
    if "/" in hosts or "?" in hosts or "#" in hosts:
        raise ValueError(
            "--store: a cluster URL takes no database, path or query "
            "(Redis Cluster has only database 0)"
        )
    if not hosts:
        raise ValueError("--store: a cluster URL names at least one HOST:PORT")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_node(entry) for entry in hosts.split(","))
    return ClusterAddress(nodes, username, password)


def open_client(
    url: str, *, timeout_seconds: float, max_connections: int, queue_seconds: float
) -> RedisClient:
    """A client for ``url`` answering within ``timeout_seconds`` per call. The single-server
    client retries a broken connection once at once, opens at most ``max_connections``
    and queues a burst beyond that up to ``queue_seconds``. The cluster client opens at
    most ``max_connections`` per node and does not retry: a failed call marks its slot
    map for reloading before the next call (see :class:`SlotMap` for batches)."""
    if url.startswith(f"{CLUSTER_SCHEME}://"):
        address = parse_cluster_url(url)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
            username=address.username,
            password=address.password,
            max_connections=max_connections,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=queue_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        decode_responses=True,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


class SlotMap:
    """Which server holds a key, as far as the client knows, and learning it anew.

    For a single server there is one server and nothing to learn. A cluster client keeps a
    map of slots to masters; after a failed batch, :meth:`reload` asks a live node for it
    again, so the calls of a failed-over master go to its promoted replica as soon as the
    cluster has promoted it. (The client's own pipeline retry would instead drop every
    connection, the other masters' busy ones too, failing their batches as well.)
    """

    def __init__(self, client: RedisClient) -> None:
        self._cluster = client if isinstance(client, RedisCluster) else None
        self._reloading = False

    def server_of(self, key: str) -> Hashable:
        """The name of the node serving ``key`` (None for a single server, or while the
        map is not loaded yet)."""
        if self._cluster is None:
            return None
        try:
            found = self._cluster.get_node_from_key(key)
        except RedisClusterException:
            return None
        return None if found is None else found.name

    async def reload(self) -> None:
        """Reload the slot map, unless a reload is under way; a failure to reach any node
        is left for the next failed batch to try again."""
        if self._cluster is None or self._reloading:
            return
        self._reloading = True
        try:
            await self._cluster.nodes_manager.initialize()
        except STORE_ERRORS:
            pass
        finally:
            self._reloading = False
