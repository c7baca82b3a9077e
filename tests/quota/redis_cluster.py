"""A real Redis Cluster on 127.0.0.1, for the tests and for bench/quota.py.

Six ``redis-server --cluster-enabled yes`` processes on free ports, joined by ``redis-cli
--cluster create --cluster-replicas 1``: three masters, each with one replica. Every node
keeps an append-only file with ``appendfsync everysec`` (Redis's default and what the docs
advise): a node that restarts from its own files loses at most the last second of writes.
A failover does not read the files at all: the promoted replica has what replication had
streamed to it when its master died.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
#: Why a cluster cannot be started here, or None when it can.
MISSING = (
    None
    if REDIS_SERVER and REDIS_CLI
    else "redis-server and redis-cli are not installed (apt-get install redis-server)"
)
APPENDFSYNC = "everysec"
#: How long a silent master may stay unnoticed before its replica takes over: short, so a
#: test's failover takes seconds (production keeps Redis's default, 15 s, or a few seconds).
NODE_TIMEOUT_MS = 1000


def _free_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _wait(condition: str, check: Callable[[], object], seconds: float) -> None:
    """Poll ``check()`` until it is true, or fail naming ``condition``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis cluster: {condition} within {seconds:g} s")
        time.sleep(0.05)


@dataclass
class RedisClusterProcesses:
    """Six cluster nodes with their data under ``directory``; ``start()``, then ``stop()``."""

    directory: Path
    ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """``--store`` for the quota service: every node, so it starts while any is down."""
        return "redis-cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def ask(self, port: int, *command: str) -> object:
        """One command to the node on ``port``, on a connection of its own."""
        with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
            return client.execute_command(*command)

    def replication(self, port: int) -> dict[str, str]:
        with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
            return dict(client.info("replication"))

    def _start_node(self, port: int) -> None:
        assert REDIS_SERVER is not None, MISSING
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        settings = {
            "port": port,
            "bind": "127.0.0.1",
            "dir": node_dir,
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": NODE_TIMEOUT_MS,
            # while one master's slots wait for its replica, the other masters keep
            # answering (the default, yes, stops the whole cluster until the failover)
            "cluster-require-full-coverage": "no",
            # a replica whose link was slow to come up (a loaded test machine) must still
            # take over when its master dies: what is tested is the service, not Redis's rule
            # against promoting replicas whose data may be old
            "cluster-replica-validity-factor": 0,
            "appendonly": "yes",
            "appendfsync": APPENDFSYNC,
            "save": "",
            "daemonize": "no",
        }
        command = [REDIS_SERVER]
        for name, value in settings.items():
            command += [f"--{name}", str(value)]
        self.processes[port] = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(f"node {port} answering", lambda: self.ask(port, "PING"), 10)

    def start(self, nodes: int = 6) -> None:
        """Start ``nodes`` nodes, join them (one replica per master), wait until every node
        says cluster_state:ok and knows every slot's master."""
        assert REDIS_CLI is not None, MISSING
        self.ports = [_free_port() for _ in range(nodes)]
        for port in self.ports:
            self._start_node(port)
        create = [REDIS_CLI, "--cluster", "create"]
        create += [f"127.0.0.1:{port}" for port in self.ports]
        create += ["--cluster-replicas", "1", "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        self.wait_ok(30)
        _wait("every replica in sync with its master", self._replicas_linked, 30)

    def _replicas_linked(self) -> bool:
        infos = [self.replication(port) for port in self.live_ports()]
        replicas = [info for info in infos if info["role"] == "slave"]
        return len(replicas) * 2 == len(infos) and all(
            info.get("master_link_status") == "up" for info in replicas)

    def wait_ok(self, seconds: float) -> None:
        """Wait until every live node reports cluster_state:ok."""

        def all_ok() -> bool:
            return all(
                "cluster_state:ok" in str(self.ask(port, "CLUSTER", "INFO"))
                for port in self.live_ports()
            )

        _wait("every node reporting cluster_state:ok", all_ok, seconds)

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def masters(self) -> list[int]:
        """Ports of the live nodes that are masters now."""
        return [port for port in self.live_ports() if self.role(port) == "master"]

    def role(self, port: int) -> str:
        return self.replication(port)["role"]

    def master_of(self, key: str) -> int:
        """Port of the master serving ``key``'s slot, as a live node sees it."""
        port = self.live_ports()[0]
        slot = self.ask(port, "CLUSTER", "KEYSLOT", key)
        slots = self.ask(port, "CLUSTER", "SLOTS")
        assert isinstance(slot, int) and isinstance(slots, list)
        for start, end, master, *_ in slots:
            if int(start) <= slot <= int(end):
                return int(master[1])
        raise RuntimeError(f"redis cluster: no master serves slot {slot}")

    def replica_of(self, master: int) -> int:
        """Port of the (live) replica of ``master``."""
        for port in self.live_ports():
            info = self.replication(port)
            if info["role"] == "slave" and int(info["master_port"]) == master:
                return port
        raise RuntimeError(f"redis cluster: node {master} has no live replica")

    def kill(self, port: int) -> None:
        """SIGKILL one node: no shutdown, no last write to its files."""
        process = self.processes[port]
        process.kill()
        process.wait(10)

    def flush(self) -> None:
        """Empty every master (the replicas follow)."""
        for port in self.masters():
            self.ask(port, "FLUSHALL")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)
