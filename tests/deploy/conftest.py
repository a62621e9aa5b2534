"""Shared helpers for the deploy/ tests: the real tools, rendered overlays, pod templates."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("development", "staging", "production")
KUBERNETES_VERSION = "1.30.0"  # schemas shipped inside kubernetes-validate; no network needed

# What to install when a tool is missing (these tests never skip for want of a tool).
TOOL_PACKAGES = {
    "kubectl": (
        "kubectl >= 1.27 (kustomize v5 built in): the upstream binary from dl.k8s.io or the Debian package "
        "'kubernetes-client' from trixie or later; bookworm's 1.20 is too old for Kustomize components"
    ),
    "promtool": "the Debian package 'prometheus'",
    "amtool": "the Debian package 'prometheus-alertmanager'",
}


def tool(name: str) -> str:
    """Path of a required command-line tool; fails the test, naming the package, when it is absent."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install {TOOL_PACKAGES[name]}", pytrace=False)
    return path


_kubectl_checked: list[str] = []


def kubectl() -> str:
    """kubectl, checked once to be new enough for these manifests (components, labels, patches)."""
    path = tool("kubectl")
    if not _kubectl_checked:
        out = run([path, "version", "--client", "-o", "json"]).stdout
        version = json.loads(out)["clientVersion"]
        major, minor = int(version["major"]), int("".join(c for c in version["minor"] if c.isdigit()))
        if (major, minor) < (1, 27):
            pytest.fail(
                f"kubectl {major}.{minor} is too old: install {TOOL_PACKAGES['kubectl']}", pytrace=False
            )
        _kubectl_checked.append(path)
    return path


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool, failing the test with its output when it exits non-zero."""
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}", pytrace=False
        )
    return proc


def kustomize(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH`, parsed."""
    out = run([kubectl(), "kustomize", str(path)]).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


_rendered: dict[str, list[dict[str, Any]]] = {}


def rendered(overlay: str) -> list[dict[str, Any]]:
    """The objects one overlay renders to (rendered once per session)."""
    if overlay not in _rendered:
        _rendered[overlay] = kustomize(DEPLOY / "overlays" / overlay)
    return _rendered[overlay]


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """Each overlay in turn."""
    return str(request.param)


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload's pod template."""
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield (
                f"CronJob/{obj['metadata']['name']}",
                obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            )


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
