"""Helm awareness without helm: decoding release Secrets built exactly as Helm stores them, the history
read through the real client from the emulator, and the LeaderWorkerSet undo that falls back to the
previous release's manifest."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.integrations.helm import (
    HelmDecodeError,
    HelmHistory,
    decode_release,
    describe_change,
    lws_template_fallback,
    parse_release,
    release_of,
    rollback_command,
)
from bot.integrations.kube import KubeClient, NoRolloutHistory
from bot.integrations.workloads import LeaderWorkerSetWorkload
from bot.sandbox.cluster import Cluster
from bot.sandbox.helm_seed import mark_managed, seed_release_history
from bot.sandbox.kube_emulator import KubeEmulator
from bot.sandbox.workload_controllers import install, vllm_leaderworkerset

NS = "llm-d"
OLD, NEW = "vllm/vllm-openai:v0.8.5", "vllm/vllm-openai:v0.9.0"
NOW = dt.datetime(2026, 12, 4, 19, 0, tzinfo=dt.UTC)

RELEASE = {
    "name": "llm-d",
    "namespace": NS,
    "version": 8,
    "info": {
        "first_deployed": "2026-11-01T10:00:00Z",
        "last_deployed": "2026-12-04T18:48:00.123456789Z",
        "status": "deployed",
        "description": "Upgrade complete",
    },
    "chart": {"metadata": {"name": "llm-d-modelservice", "version": "1.3.1", "appVersion": "v0.2.0"}},
    "manifest": "---\n# Source: x\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
}


def as_helm_stores_it(release: dict[str, object]) -> str:
    """Helm's encodeRelease (json, gzip BestCompression, base64) and then the Secret API's base64 of the
    bytes, built here by hand (not with the sandbox's seeder)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
        gz.write(json.dumps(release, separators=(",", ":")).encode())
    helm_value = base64.standard_b64encode(buf.getvalue())
    assert buf.getvalue()[:3] == b"\x1f\x8b\x08"
    return base64.standard_b64encode(helm_value).decode()


def test_decode_a_release_secret_as_helm_stores_it() -> None:
    decoded = decode_release(as_helm_stores_it(RELEASE))
    assert decoded == RELEASE
    rel = parse_release(decoded)
    assert (rel.name, rel.revision, rel.status, rel.chart, rel.chart_version) == (
        "llm-d",
        8,
        "deployed",
        "llm-d-modelservice",
        "1.3.1",
    )
    assert rel.last_deployed is not None and rel.last_deployed.minute == 48


def test_decode_accepts_uncompressed_legacy_payloads_and_rejects_garbage() -> None:
    plain = base64.b64encode(base64.b64encode(json.dumps(RELEASE).encode())).decode()
    assert decode_release(plain)["version"] == 8
    with pytest.raises(HelmDecodeError, match="base64"):
        decode_release("not base64 at all!")
    with pytest.raises(HelmDecodeError, match="JSON"):
        decode_release(base64.b64encode(base64.b64encode(b"\x00\x01 nope")).decode())


def test_release_of_and_rollback_command() -> None:
    managed = mark_managed({"metadata": {"name": "x", "namespace": NS}}, "llm-d", NS)
    assert release_of(managed) == ("llm-d", NS)
    assert release_of({"metadata": {"labels": {"app.kubernetes.io/managed-by": "Kustomize"}}}) is None
    assert rollback_command("llm-d", 7, NS) == "helm rollback llm-d 7 -n llm-d"


@pytest.fixture
def cluster() -> Cluster:
    cluster = Cluster(seed=3)
    cluster.seed_llmd(NS, image=OLD, gpu_nodes=2)
    install(cluster)
    old = mark_managed(vllm_leaderworkerset("ms-decode", image=OLD), "llm-d", NS)
    new = mark_managed(vllm_leaderworkerset("ms-decode", image=NEW), "llm-d", NS)
    seed_release_history(
        cluster,
        NS,
        "llm-d",
        [("1.3.0", [old], NOW - dt.timedelta(days=2)), ("1.3.1", [new], NOW - dt.timedelta(minutes=12))],
    )
    # An unrelated Secret in the namespace: listed by label selector, so never read.
    cluster.create_object("Secret", {"metadata": {"name": "hf-token"}, "data": {"token": "c2VjcmV0"}}, NS)
    cluster.create_object("LeaderWorkerSet", new, NS)
    return cluster


@pytest.fixture
def kube(cluster: Cluster, tmp_path: Path) -> Iterator[KubeClient]:
    with KubeEmulator(cluster, token="tok") as emu:
        client = KubeClient.from_kubeconfig(str(emu.write_kubeconfig(tmp_path / "kc", namespace=NS)))
        yield client
        client.close()


def test_history_from_the_emulator_and_the_change_line(kube: KubeClient) -> None:
    history = HelmHistory(kube).history(NS, "llm-d")
    assert [(r.revision, r.status, r.chart_version) for r in history] == [
        (1, "superseded", "1.3.0"),
        (2, "deployed", "1.3.1"),
    ]
    assert (
        describe_change(history, NOW) == "release llm-d rev 1 → 2, chart 1.3.0 → 1.3.1, deployed 12 min ago"
    )
    assert describe_change(history[:1], NOW) == "release llm-d rev 1, chart 1.3.0, deployed 2 days ago"
    assert describe_change([], NOW) is None


def test_lws_undo_falls_back_to_the_previous_release_manifest(kube: KubeClient, cluster: Cluster) -> None:
    lws_obj = cluster.get("LeaderWorkerSet", NS, "ms-decode")
    assert HelmHistory(kube).for_object(lws_obj) is not None
    bare = LeaderWorkerSetWorkload(kube)
    with pytest.raises(NoRolloutHistory):
        bare.undo(NS, "ms-decode")
    lws = LeaderWorkerSetWorkload(kube, fallback=lws_template_fallback(kube))
    undone = lws.undo(NS, "ms-decode")
    assert undone.changed and undone.images == (OLD,)
    assert undone.source == "helm release llm-d rev 1 manifest"
    assert lws.get(NS, "ms-decode").images == (OLD,)
    assert lws.rollout_status(NS, "ms-decode").complete
