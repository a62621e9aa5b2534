"""A real Prometheus server (Debian ``prometheus`` package) for integration tests, on loopback.

Usage::

    with run_prometheus(tmp_path, targets=["127.0.0.1:41234"]) as prom:
        prom.wait_targets_up(1)
        prom.url  # http://127.0.0.1:PORT

``run_prometheus`` writes a config (scrape interval 1 s by default), starts the binary with a temp
TSDB on a free loopback port, polls ``/-/ready`` (never sleeps blindly) and kills it at exit. Extra
config (``rule_files``, ``alerting``) and flags (``--rules.alert.resend-delay=1s``) can be passed
for Alertmanager-style fixtures. When the binary is missing the test FAILS with install advice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

T = TypeVar("T")

INSTALL_HINT = {
    "prometheus": "apt-get install prometheus",
    "promtool": "apt-get install prometheus",
    "alertmanager": "apt-get install prometheus-alertmanager",
    "prometheus-alertmanager": "apt-get install prometheus-alertmanager",
}


def require_binary(name: str, env_var: str | None = None) -> str:
    """Path of an executable, or fail the test (not skip) saying how to install it."""
    override = os.environ.get(env_var) if env_var else None
    fallback = Path("/usr/bin") / name
    path = override or shutil.which(name) or (str(fallback) if fallback.exists() else None)
    if not path or not os.access(path, os.X_OK):
        hint = INSTALL_HINT.get(name, f"install {name}")
        pytest.fail(
            f"{name} binary not found (PATH, /usr/bin{', $' + env_var if env_var else ''}). "
            f"These integration tests need the real server: {hint} (Debian/Ubuntu)",
            pytrace=False,
        )
    return path


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
        except Exception as exc:  # probes may fail while a server starts
            last_error = exc
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            pytest.fail(
                f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}\n{detail}"
            )
        time.sleep(interval)


class PrometheusProcess:
    """A running Prometheus: its URL, process, config and log, plus readiness helpers."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = workdir
        self.log_path = workdir / "prometheus.log"
        self.config_path = workdir / "prometheus.yml"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET an API path and return the JSON body."""
        response = httpx.get(self.url + path, params=params, timeout=5, trust_env=False)
        response.raise_for_status()
        return response.json()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/-/ready`` until 200 (fail early if the process exits)."""

        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
            return httpx.get(self.url + "/-/ready", timeout=2, trust_env=False).status_code == 200

        wait_until(ready, timeout=timeout, what="prometheus /-/ready", on_timeout=self.log_tail)

    def targets(self) -> list[dict[str, Any]]:
        """Active targets from ``/api/v1/targets``."""
        return list(self.get_json("/api/v1/targets", {"state": "active"})["data"]["activeTargets"])

    def wait_targets_up(
        self, count: int, job: str | None = None, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll ``/api/v1/targets`` until ``count`` targets (of ``job``) report health ``up``."""

        def up() -> list[dict[str, Any]] | None:
            found = [
                t
                for t in self.targets()
                if t.get("health") == "up" and (job is None or t.get("labels", {}).get("job") == job)
            ]
            return found if len(found) >= count else None

        return wait_until(
            up,
            timeout=timeout,
            what=f"{count} prometheus target(s) up",
            on_timeout=lambda: f"targets: {self.targets()}\n{self.log_tail()}",
        )

    def wait_query(self, promql: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns at least one series."""

        def result() -> list[dict[str, Any]] | None:
            body = self.get_json("/api/v1/query", {"query": promql})
            return body["data"]["result"] or None

        return wait_until(result, timeout=timeout, what=f"a result for {promql!r}", on_timeout=self.log_tail)

    def stop(self) -> None:
        """Terminate, then kill if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def prometheus_config(
    targets: Sequence[str] = (),
    *,
    job: str = "vllm",
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    scrape_configs: Sequence[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Prometheus config dict: one static job over ``targets`` plus any extra scrape configs."""
    for target in targets:
        if not target.startswith("127."):
            raise ValueError(f"test targets must be on 127.0.0.0/8, got {target!r}")
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "scrape_configs": [],
    }
    if targets:
        config["scrape_configs"].append({"job_name": job, "static_configs": [{"targets": list(targets)}]})
    config["scrape_configs"].extend(dict(c) for c in scrape_configs)
    config.update(extra or {})
    return config


@contextlib.contextmanager
def run_prometheus(
    workdir: Path,
    targets: Sequence[str] = (),
    *,
    job: str = "vllm",
    scrape_interval: str = "1s",
    scrape_configs: Sequence[Mapping[str, Any]] = (),
    extra_config: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 30.0,
) -> Iterator[PrometheusProcess]:
    """Start a real Prometheus on a free loopback port, wait until ready, kill it at exit."""
    binary = require_binary("prometheus", env_var="PROMETHEUS_BIN")
    workdir.mkdir(parents=True, exist_ok=True)
    for name, content in (extra_files or {}).items():
        (workdir / name).write_text(content)
    config = prometheus_config(
        targets, job=job, scrape_interval=scrape_interval, scrape_configs=scrape_configs, extra=extra_config
    )
    port = free_port()
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    storage = workdir / "tsdb"
    log = (workdir / "prometheus.log").open("wb")
    command = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        *extra_args,
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    prom = PrometheusProcess(process, port, workdir)
    try:
        prom.wait_ready(ready_timeout)
        yield prom
    finally:
        prom.stop()
        log.close()
