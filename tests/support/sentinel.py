"""A real Redis Sentinel group for tests: one master, replicas and three sentinels on loopback ports.

Debian's ``redis-server`` and ``redis-sentinel`` (scripts/services.sh installs them). Sentinels notice a dead
master after DOWN_AFTER_MS and promote a replica within a few seconds; tests poll, never sleep a fixed time.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.services import free_port, require_binary

MASTER_NAME = "llm-bot"
DOWN_AFTER_MS = 600
FAILOVER_TIMEOUT_MS = 3000


def _wait_ping(port: int, what: str, timeout: float = 10.0) -> None:
    client = redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.ping()
            return
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer PING on port {port}")


class SentinelGroup:
    """`replicas` replicas of one master, watched by three sentinels (quorum 2), under a temp directory."""

    def __init__(self, replicas: int = 2, sentinels: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ib-sentinel-"))
        self.redis_ports = [free_port() for _ in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def sentinels(self) -> str:
        """REDIS_SENTINELS for these sentinels."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def _server(self, port: int, *extra: str) -> None:
        data = self.dir / f"redis-{port}"
        data.mkdir()
        binary = require_binary("redis-server", "redis-server")
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(data), "--logfile", str(data / "log"), "--maxmemory-policy", "noeviction"]
        self.procs[port] = subprocess.Popen(
            [*args, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_ping(port, "redis-server")

    def _sentinel(self, port: int, master_port: int) -> None:
        conf = self.dir / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.dir}/sentinel-{port}.log\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 2\n"
        )
        binary = require_binary("redis-sentinel", "redis-sentinel")
        self.procs[port] = subprocess.Popen(
            [binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_ping(port, "redis-sentinel")

    def start(self) -> None:
        """Start the master, the replicas (waiting until they are in sync) and the sentinels."""
        master, *replicas = self.redis_ports
        self._server(master)
        for port in replicas:
            self._server(port, "--replicaof", "127.0.0.1", str(master))
        self.wait_replicas(master, len(replicas))
        for port in self.sentinel_ports:
            self._sentinel(port, master)
        self.wait_known(len(replicas))

    def wait_replicas(self, master: int, count: int, timeout: float = 15.0) -> None:
        """Wait until `count` replicas are online at `master`."""
        client = redis.Redis(port=master)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if int(client.info("replication").get("connected_slaves", 0)) >= count:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{count} replicas did not connect to {master}")

    def wait_known(self, replicas: int, timeout: float = 15.0) -> None:
        """Wait until every sentinel knows the other sentinels and the replicas."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [redis.Redis(port=p).sentinel_master(MASTER_NAME) for p in self.sentinel_ports]
            if all(
                int(s["num-other-sentinels"]) >= len(self.sentinel_ports) - 1
                and int(s["num-slaves"]) >= replicas
                for s in states
            ):
                return
            time.sleep(0.1)
        raise RuntimeError("sentinels did not discover each other and the replicas")

    def master_port(self) -> int:
        """The port of the master the sentinels currently name."""
        _, port = redis.Redis(port=self.sentinel_ports[0]).sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def kill_master(self) -> int:
        """kill -9 the current master; its port."""
        port = self.master_port()
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(5)
        return port

    def wait_new_master(self, old: int, timeout: float = 20.0) -> int:
        """Wait until the sentinels name a master other than `old` and it accepts writes; its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                port = self.master_port()
                if port != old and redis.Redis(port=port).info("replication")["role"] == "master":
                    return port
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"no new master after {old} within {timeout} s")

    def wait_role(self, port: int, role: str, timeout: float = 20.0) -> None:
        """Wait until the server on `port` reports `role` (master or slave)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=port).info("replication")["role"] == role:
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"redis on {port} did not become {role} within {timeout} s")

    def pause(self, port: int) -> None:
        """SIGSTOP a server (a replica that stops acknowledging)."""
        self.procs[port].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        """SIGCONT a paused server."""
        self.procs[port].send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        """Kill every process and remove the directory."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
