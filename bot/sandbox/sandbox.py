"""The emulated llm-d cluster as one object: a Kubernetes API emulator plus the vLLM servers behind it.

The vLLM servers stand for the decode pool's endpoints. Their queueing model sees the decode Deployment's
ready replica count, so scaling ``vllm-decode`` in the emulated cluster shortens their queues, and a pool
with no ready pod (a crash-looping rollout) makes them answer /health with 503. Endpoints are a static list
(VLLM_ENDPOINTS): emulated pod IPs are not routable on this machine.

With ``decode_kind="Rollout"`` the decode tier is an Argo Rollout (canary: 20 %, an indefinite pause, an
analysis, 50 %, a pause) run by the emulated Rollout controller (:mod:`bot.sandbox.argo`) and the catalog
says so. :meth:`Sandbox.start_canary` rolls a new image into it; while a broken image serves its canary
weight, that share of the vLLM servers' requests fails (``error_ratio``), as a real canary taking that share
of the traffic would, and it falls back to 0 once the canary has no weight (abort, undo).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.sandbox.argo import RolloutController, canary_rollout
from bot.sandbox.cluster import Cluster, _pod_ready, vllm_deployment
from bot.sandbox.helm_seed import mark_managed, seed_release_history
from bot.sandbox.kube_emulator import KubeEmulator
from bot.sandbox.vllm_emulator import EmulatorConfig, EmulatorFleet, start_emulators
from bot.sandbox.workload_controllers import install as install_controllers
from bot.sandbox.workload_controllers import vllm_leaderworkerset


@dataclass(frozen=True)
class SandboxConfig:
    """Shape of the emulated cluster."""

    namespace: str = "llm-d"
    decode_replicas: int = 2
    prefill_replicas: int = 1
    vllm_servers: int = 2
    image: str = "vllm/vllm-openai:v0.8.5"
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    gpus_per_node: int = 8
    tls: bool = True  # kubectl sends a bearer token only over TLS
    offered_rps: float = 0.0
    helm_release: str | None = "llm-d"
    """Seed the workloads as this Helm release's (labels, annotations, two release Secrets); None: no Helm."""
    lws_groups: int = 0
    """> 0: also run a multi-node decode LeaderWorkerSet ``vllm-multinode`` with this many groups."""
    lws_size: int = 2
    decode_kind: str = "Deployment"
    """Deployment, or Rollout (an Argo canary Rollout named vllm-decode)."""
    canary_rollout: str | None = None
    """With the decode Deployment: an Argo canary Rollout of this name beside it (its own pods and labels,
    role decode) that :meth:`Sandbox.start_canary` rolls; the demo's canary act uses it."""


CANARY_STEPS: tuple[dict[str, Any], ...] = (
    {"setWeight": 20},
    {"pause": {}},
    {"analysis": {"templates": [{"templateName": "error-rate"}]}},
    {"setWeight": 50},
    {"pause": {"duration": "2m"}},
)


class Sandbox:
    """Starts and stops the emulated cluster; exposes its kubeconfig and vLLM endpoints."""

    def __init__(self, config: SandboxConfig | None = None, *, workdir: Path | None = None) -> None:
        self.config = config or SandboxConfig()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="incident-bot-sandbox-"))
        self.token = secrets.token_urlsafe(24)
        cluster = Cluster()
        install_controllers(cluster)
        self.kube = KubeEmulator(cluster, token=self.token, tls=self.config.tls)
        self.vllm: EmulatorFleet | None = None
        self.kubeconfig: Path | None = None
        self.catalog: Path | None = None
        self.argo: RolloutController | None = None
        self.rollout_name = "vllm-decode"
        self.bad_images: set[str] = set()

    @property
    def cluster(self) -> Cluster:
        """The emulated cluster's state."""
        return self.kube.cluster

    def decode_ready(self) -> int:
        """Ready replicas of the decode Deployment (or Rollout)."""
        if self.config.decode_kind != "Rollout":
            return self.cluster.ready_replicas(self.config.namespace, "vllm-decode")
        return sum(1 for pod in self._rollout_pods() if _pod_ready(pod))

    def _rollout_pods(self) -> list[dict[str, Any]]:
        with self.cluster.lock:
            pods = self.cluster.pods(self.config.namespace, f"app.kubernetes.io/name={self.rollout_name}")
            return [p for p in pods if "rollouts-pod-template-hash" in (p["metadata"].get("labels") or {})]

    def _seed_rollout(self, name: str | None = None) -> None:
        """Replace the decode Deployment by an Argo canary Rollout of the same pods (or add Rollout name)."""
        c, ns, cfg = self.cluster, self.config.namespace, self.config
        self.argo = RolloutController(c)
        if name is None:
            template = c.get("Deployment", ns, "vllm-decode")["spec"]["template"]
            c.delete_deployment(ns, "vllm-decode")
        else:
            self.rollout_name = name
            dep = vllm_deployment(name, image=cfg.image, replicas=cfg.decode_replicas, model=cfg.model)
            template = dep["spec"]["template"]
        template["metadata"].pop("creationTimestamp", None)
        body = canary_rollout(
            self.rollout_name,
            template,
            replicas=cfg.decode_replicas,
            steps=[dict(s) for s in CANARY_STEPS],
            traffic_routing=True,
        )
        c.create_object("Rollout", body, ns, field_manager="sandbox-seed")

    def start_canary(self, image: str, *, broken: bool = True) -> None:
        """Roll ``image`` into the decode Rollout (its analysis fails and it serves errors when broken)."""
        if self.argo is None:
            raise RuntimeError("start_canary needs SandboxConfig(decode_kind='Rollout')")
        if broken:
            self.bad_images.add(image)
            self.argo.bad_images.add(image)
        self.cluster.patch_object(
            "Rollout",
            self.config.namespace,
            self.rollout_name,
            "application/json-patch+json",
            [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}],
        )

    def canary_error_ratio(self) -> float:
        """The share of requests a broken canary fails: its traffic weight while it runs a bad image."""
        if self.argo is None:
            return 0.0
        try:
            ro = self.cluster.get("Rollout", self.config.namespace, self.rollout_name)
        except Exception:
            return 0.0
        containers = ro["spec"]["template"]["spec"].get("containers") or []
        if not any(c.get("image") in self.bad_images for c in containers):
            return 0.0
        weights = ((ro.get("status") or {}).get("canary") or {}).get("weights") or {}
        return float((weights.get("canary") or {}).get("weight") or 0) / 100.0

    def start(self) -> Sandbox:
        """Start the API emulator, seed the llm-d namespace, start the vLLM servers."""
        c = self.config
        self.kube.start()
        self.cluster.seed_llmd(
            c.namespace,
            image=c.image,
            decode_replicas=c.decode_replicas,
            prefill_replicas=c.prefill_replicas,
            gpus_per_node=c.gpus_per_node,
            model=c.model,
        )
        if c.lws_groups:
            self.cluster.create_object(
                "LeaderWorkerSet",
                vllm_leaderworkerset(
                    "vllm-multinode", image=c.image, groups=c.lws_groups, size=c.lws_size, model=c.model
                ),
                c.namespace,
                field_manager="sandbox-seed",
            )
        if c.decode_kind == "Rollout":
            self._seed_rollout()
        elif c.canary_rollout:
            self._seed_rollout(c.canary_rollout)
        if c.helm_release:
            self.seed_helm(c.helm_release)
        self.kubeconfig = self.kube.write_kubeconfig(self.workdir / "kubeconfig", namespace=c.namespace)
        self.catalog = self.write_catalog(self.workdir / "catalog.yaml")
        self.vllm = start_emulators(
            c.vllm_servers,
            EmulatorConfig(model=c.model, served_model_name=c.model),
            replicas=lambda: max(1, self.decode_ready()),
            offered_rps=c.offered_rps,
        )
        self.cluster.add_listener(self._on_change)
        self._sync_health()
        return self

    def seed_helm(self, release: str) -> None:
        """Make the seeded workloads Helm-managed: llm-d-modelservice 1.3.0 (30 days ago) then 1.3.1 (3 days
        ago), both rendering what runs now, stored as Helm stores release Secrets."""
        ns, cluster = self.config.namespace, self.cluster
        manifests = []
        for kind in ("Deployment", "LeaderWorkerSet"):
            for obj in cluster.list_objects(kind, ns):
                if (obj["metadata"].get("labels") or {}).get("llm-d.ai/role") is None:
                    continue
                meta = mark_managed({"metadata": {}}, release, ns)["metadata"]
                patch = {"metadata": {"labels": meta["labels"], "annotations": meta["annotations"]}}
                name = obj["metadata"]["name"]
                if kind == "Deployment":
                    cluster.patch_deployment(ns, name, "application/merge-patch+json", patch)
                else:
                    cluster.patch_object(kind, ns, name, "application/merge-patch+json", patch)
                manifests.append(_manifest(cluster.get(kind, ns, name)))
        now = cluster.now()
        seed_release_history(
            cluster,
            ns,
            release,
            [
                ("1.3.0", manifests, now - dt.timedelta(days=30)),
                ("1.3.1", manifests, now - dt.timedelta(days=3)),
            ],
        )

    def write_catalog(self, path: Path) -> Path:
        """A service catalog mapping the guide's alert labels (service: llm-d, team: sre) to this sandbox."""
        c = self.config
        path.write_text(
            "# Service catalog of the incident-bot sandbox (written by `incident-bot sandbox up`/`demo`).\n"
            "version: 1\n"
            "services:\n"
            "  - name: llm-d-sandbox\n"
            "    match: {service: llm-d, team: sre}\n"
            f"    namespace: {c.namespace}\n"
            f"    decode: {{name: vllm-decode, kind: {c.decode_kind}}}\n"
            "    prefill: {name: vllm-prefill, kind: Deployment}\n"
            "    inference_pool: llm-d-pool\n"
            f"    model: {json.dumps(c.model)}\n",
            encoding="utf-8",
        )
        return path

    def _on_change(self, kind: str, event: str, obj: Any) -> None:
        if kind in ("Pod", "Rollout"):
            self._sync_health()

    def _sync_health(self) -> None:
        if self.vllm is not None:
            dead = self.decode_ready() == 0
            ratio = self.canary_error_ratio()
            for server in self.vllm:
                if server.controls.engine_dead != dead:
                    server.set(engine_dead=dead)
                if server.controls.error_ratio != ratio:
                    server.set(error_ratio=ratio)

    @property
    def vllm_endpoints(self) -> list[str]:
        """Base URLs of the emulated vLLM servers."""
        return self.vllm.urls if self.vllm is not None else []

    def environment(self) -> dict[str, str]:
        """Environment variables that point the bot at this sandbox."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "KUBE_CONFIG_MODE": "kubeconfig",
            "VLLM_ENDPOINTS": ",".join(self.vllm_endpoints),
            "CATALOG": str(self.catalog),
        }

    def stop(self) -> None:
        """Stop everything."""
        if self.vllm is not None:
            self.vllm.stop()
            self.vllm = None
        self.kube.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _manifest(obj: dict[str, Any]) -> dict[str, Any]:
    """What a chart renders for an object: its spec and user metadata, none of the server's fields."""
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {
            "name": meta["name"],
            "labels": dict(meta.get("labels") or {}),
            "annotations": {
                k: v
                for k, v in (meta.get("annotations") or {}).items()
                if "deployment.kubernetes.io" not in k
            },
        },
        "spec": obj.get("spec") or {},
    }
