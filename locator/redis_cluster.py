"""A local Redis Cluster of the project's own 6.2 binary, for tests and benchmarks.

Each master is a cluster-enabled redis-server on a loopback port whose bus port (+10000)
is free too; no persistence (a test cluster lives as long as its run). The slots are
assigned here (CLUSTER ADDSLOTSRANGE is 7.0: 6.2 takes ADDSLOTS with every slot number), the
nodes meet, and ``start`` returns once every node answers ``cluster_state:ok``: the same
binary as embedded, so nothing passes on a newer server and breaks there.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from locator.core.errors import ConfigError
from locator.embedded import _die_with_parent, free_port, redis_environment, redis_executable

SLOTS = 16384
MAX_PORT = 65535 - 10000  # the cluster bus listens on port + 10000


def cluster_port() -> int:
    """A free port whose cluster bus port is free too."""
    while True:
        port = free_port()
        if port > MAX_PORT:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _command(client: redis.Redis, *args: object) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def slot_ranges(masters: int) -> list[range]:
    """The 16384 slots split into ``masters`` contiguous ranges (as redis-cli does)."""
    per, extra = divmod(SLOTS, masters)
    ranges, start = [], 0
    for index in range(masters):
        end = start + per + (1 if index < extra else 0)
        ranges.append(range(start, end))
        start = end
    return ranges


class LocalRedisCluster:
    """``masters`` cluster-enabled Redis 6.2 servers on loopback; ``start`` → a node's URL."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        self.directory = directory
        self.masters = masters
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}" for port in self.ports]

    def _argv(self, port: int, directory: Path) -> list[str]:
        return [
            redis_executable(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(directory / "nodes.conf"),
            "--cluster-node-timeout",
            "5000",
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
        ]

    def start(self, timeout: float = 30.0) -> str:
        """Start the nodes, assign the slots, meet; returns once the cluster is ok."""
        deadline = time.monotonic() + timeout
        try:
            for index in range(self.masters):
                node_dir = self.directory / f"node-{index}"
                shutil.rmtree(node_dir, ignore_errors=True)  # a stale nodes.conf is another cluster
                node_dir.mkdir(parents=True)
                port = cluster_port()
                self.ports.append(port)
                self.processes.append(
                    subprocess.Popen(  # noqa: S603 - our own bundled binary
                        self._argv(port, node_dir),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        env=redis_environment(),
                        preexec_fn=_die_with_parent,
                    )
                )
            clients = [self._wait_up(port, deadline) for port in self.ports]
            try:
                for epoch, (client, slots) in enumerate(
                    zip(clients, slot_ranges(self.masters), strict=True), start=1
                ):
                    # Distinct epochs up front (as redis-cli does): equal ones are settled
                    # by a slow collision round before the cluster agrees.
                    _command(client, "CLUSTER SET-CONFIG-EPOCH", epoch)
                    _command(client, "CLUSTER ADDSLOTS", *slots)
                for client in clients[1:]:
                    _command(client, "CLUSTER MEET", "127.0.0.1", self.ports[0])
                for client in clients:
                    self._wait_ok(client, deadline)
            finally:
                for client in clients:
                    client.close()
        except BaseException:
            self.stop()
            raise
        return self.url

    def _wait_up(self, port: int, deadline: float) -> redis.Redis:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)
        while True:
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                    client.close()
                    raise ConfigError(f"cluster node on port {port} did not start") from None
                time.sleep(0.05)

    def _wait_ok(self, client: redis.Redis, deadline: float) -> None:
        """Every node must see every slot served (each learns the others over the bus)."""
        while True:
            info: Any = _command(client, "CLUSTER INFO")  # parsed into a dict
            ok = info.get("cluster_state") == "ok"
            if ok and int(info.get("cluster_known_nodes", 0)) == self.masters:
                return
            if time.monotonic() > deadline:
                raise ConfigError(f"Redis Cluster did not come up: {info}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill every node (no persistence to flush) and wait for them."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in self.processes:
            process.wait()
        self.processes = []
