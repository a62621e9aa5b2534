"""Real service processes for tests: private redis-server and Alertmanager instances on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import redis


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_binary(name: str, package: str) -> str:
    """Path of a binary, or a failure telling how to install it (never a silent skip)."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed: run `apt-get install -y {package}` (scripts/services.sh)"
        )
    return path


class RedisServer:
    """A throw-away redis-server that a test can stop and start again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="ib-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        binary = require_binary("redis-server", "redis-server")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Kill the server (its data is lost, as with a crash of a non-persistent Redis)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def cleanup(self) -> None:
        """Stop and remove the data directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Alertmanager:
    """A real Prometheus Alertmanager (Debian package) on loopback, without clustering."""

    def __init__(self, config_yaml: str) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ib-am-"))
        (self.dir / "alertmanager.yml").write_text(config_yaml)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "alertmanager.log"

    @property
    def url(self) -> str:
        """Base URL of the Alertmanager API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start Alertmanager and wait for /-/ready."""
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            require_binary("prometheus-alertmanager", "prometheus-alertmanager")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={self.dir / 'alertmanager.yml'}",
                    f"--storage.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                    "--log.level=debug",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"alertmanager did not become ready: {self.log.read_text()[-2000:]}")

    def post_alerts(self, alerts: list[dict[str, object]]) -> None:
        """Send alerts through Alertmanager's v2 API, as Prometheus does."""
        r = httpx.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=5)
        r.raise_for_status()

    def cleanup(self) -> None:
        """Stop Alertmanager and remove its files."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
