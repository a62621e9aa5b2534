"""Every overlay renders with the real kubectl and validates offline against the Kubernetes schemas."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bot.settings import Settings
from bot.tasknames import LANES
from tests.deploy.conftest import DEPLOY, KUBERNETES_VERSION, ROOT, by_kind, kustomize, pod_specs, rendered

# Environment variables the manifests set that are not Settings fields, and why.
NOT_SETTINGS = {
    "REDIS_PASSWORD": "composes REDIS_URL in the pod spec; the bundled Redis reads it too",
    "REDISCLI_AUTH": "redis-cli's password for the Redis readiness probe",
    "PYTHONDONTWRITEBYTECODE": "read-only root filesystem: no .pyc files",
    "HOME": "read-only root filesystem: HOME on the /tmp emptyDir",
}
# Variables referenced ahead of the settings that read them (none now: every one is a setting).
PENDING_SETTINGS: set[str] = set()


def test_overlay_renders_and_validates_offline(overlay: str) -> None:
    objects = rendered(overlay)
    assert objects, f"{overlay} rendered nothing"
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_every_object_is_namespaced_where_expected(overlay: str) -> None:
    for obj in rendered(overlay):
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == "incident-bot"
            continue
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in {"Role", "RoleBinding"}:
            assert ns == "llm-d", obj["metadata"]
        else:
            assert ns == "incident-bot", f"{obj['kind']}/{obj['metadata']['name']} in {ns}"


def test_no_secret_is_rendered_and_the_example_stays_out(overlay: str) -> None:
    assert not [o for o in rendered(overlay) if o["kind"] == "Secret"]
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        listed = [*spec.get("resources", []), *spec.get("components", [])]
        listed += [p.get("path", "") for p in spec.get("patches", [])]
        assert not [entry for entry in listed if "secret" in entry], kustomization


def test_secret_example_holds_placeholders_for_every_referenced_key() -> None:
    example = yaml.safe_load((DEPLOY / "secrets" / "secret.example.yaml").read_text())
    values = example["stringData"]
    for key, value in values.items():
        assert value.startswith("<") and value.endswith(">"), f"{key} looks like a real value"
    referenced = set()
    for _, spec in pod_specs(rendered("production") + external_redis()):
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "incident-bot-secrets"
                    referenced.add(ref["key"])
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, "secrets are referenced key by key, never whole"
    assert referenced == set(values), f"example keys {set(values)} vs referenced {referenced}"


def test_environment_names_are_settings_the_bot_reads() -> None:
    known = {name.upper() for name in Settings.model_fields}
    objects = rendered("production")
    config = next(o for o in objects if o["metadata"]["name"].startswith("incident-bot-config"))
    names = set(config["data"])
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            names |= {env["name"] for env in container.get("env", [])}
    unknown = names - known - set(NOT_SETTINGS) - PENDING_SETTINGS
    assert not unknown, f"the manifests set variables bot/settings.py does not read: {sorted(unknown)}"


_external: list[dict[str, Any]] = []


def external_redis() -> list[dict[str, Any]]:
    """Production with the external-redis component, rendered from an overlay outside the repo."""
    if not _external:
        with tempfile.TemporaryDirectory() as tmp:
            here = Path(tmp)
            base = os.path.relpath(DEPLOY / "overlays" / "production", here)
            component = os.path.relpath(DEPLOY / "components" / "external-redis", here)
            (here / "kustomization.yaml").write_text(
                f"resources:\n  - {base}\ncomponents:\n  - {component}\n"
            )
            _external.extend(kustomize(here))
    return _external


def test_external_redis_component_replaces_the_bundled_redis() -> None:
    objects = external_redis()
    assert not [o for o in objects if o["metadata"]["name"].startswith("incident-bot-redis")]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    for name, spec in pod_specs(objects):
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert "REDIS_PASSWORD" not in env, name
        assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "incident-bot-secrets",
            "key": "REDIS_URL",
        }, name
    assert "incident-bot-egress-external-redis" in by_kind(objects, "NetworkPolicy")


@pytest.mark.parametrize(
    ("overlay_name", "web", "workers"), [("development", 1, 1), ("staging", 2, 2), ("production", 3, 3)]
)
def test_replicas_per_environment(overlay_name: str, web: int, workers: int) -> None:
    deployments = by_kind(rendered(overlay_name), "Deployment")
    assert deployments["incident-bot-web"]["spec"]["replicas"] == web
    assert deployments["incident-bot-worker-intake"]["spec"]["replicas"] == workers
    assert deployments["incident-bot-worker-notifications"]["spec"]["replicas"] == workers
    assert deployments["incident-bot-worker-runbooks"]["spec"]["replicas"] == workers
    beat = deployments["incident-bot-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"] == {"type": "Recreate"}


def test_production_spreads_pods_and_keeps_two_of_three() -> None:
    objects = rendered("production")
    pdbs = by_kind(objects, "PodDisruptionBudget")
    deployments = by_kind(objects, "Deployment")
    for name in (
        "incident-bot-web",
        "incident-bot-worker-intake",
        "incident-bot-worker-notifications",
        "incident-bot-worker-runbooks",
    ):
        assert pdbs[name]["spec"] == {
            "minAvailable": 2,
            "selector": deployments[name]["spec"]["selector"],
        }
        affinity = deployments[name]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        term = affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == deployments[name]["spec"]["selector"]["matchLabels"]
    assert "incident-bot-beat" not in pdbs  # a PDB on a lone pod would block node drains


def test_workers_run_the_lanes_so_pages_never_wait_behind_slack_or_runbooks(overlay: str) -> None:
    deployments = by_kind(rendered(overlay), "Deployment")

    def queues(name: str) -> tuple[str, ...]:
        args = deployments[name]["spec"]["template"]["spec"]["containers"][0]["args"]
        return tuple(sorted(args[args.index("--queues") + 1].split(",")))

    workers = {n: queues(n) for n in deployments if n.startswith("incident-bot-worker-")}
    assert sorted(workers.values()) == sorted(tuple(sorted(q)) for q in LANES.values())  # one per lane
    assert workers["incident-bot-worker-intake"] == ("alerts", "paging")
    assert workers["incident-bot-worker-notifications"] == ("notifications",)
    assert workers["incident-bot-worker-runbooks"] == ("runbooks",)


def test_redis_persists_and_never_evicts(overlay: str) -> None:
    objects = rendered(overlay)
    conf = next(o for o in objects if o["metadata"]["name"].startswith("incident-bot-redis-"))
    lines = {
        line.split()[0]: line.split(None, 1)[1]
        for line in conf["data"]["redis.conf"].splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert lines["appendonly"] == "yes"
    assert lines["maxmemory-policy"] == "noeviction"
    sts = by_kind(objects, "StatefulSet")["incident-bot-redis"]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_kube_allowed_namespaces_match_the_roles(overlay: str) -> None:
    objects = rendered(overlay)
    config = next(o for o in objects if o["metadata"]["name"].startswith("incident-bot-config"))
    allowed = set(config["data"]["KUBE_ALLOWED_NAMESPACES"].split(","))
    role_namespaces = {o["metadata"]["namespace"] for o in objects if o["kind"] == "Role"}
    assert allowed == role_namespaces
    egress = by_kind(objects, "NetworkPolicy")["incident-bot-worker-egress"]["spec"]["egress"]
    vllm = next(rule for rule in egress if rule.get("ports") == [{"protocol": "TCP", "port": 8000}])
    selector = vllm["to"][0]["namespaceSelector"]["matchExpressions"][0]
    assert set(selector["values"]) == role_namespaces


def test_generated_config_component_is_in_sync() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync_deploy_config.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_policy_configmap_is_the_shipped_policy() -> None:
    objects = rendered("production")
    policy = next(o for o in objects if o["metadata"]["name"].startswith("incident-bot-policy"))
    shipped = (ROOT / "bot" / "policy" / "severity.yaml").read_text()
    assert policy["data"]["severity.yaml"] == shipped
    # the service catalog ships beside it, and CATALOG points at the mounted key
    assert policy["data"]["catalog.yaml"] == (ROOT / "bot" / "policy" / "catalog.yaml").read_text()
    config = next(o for o in objects if o["metadata"]["name"].startswith("incident-bot-config"))
    catalog, severity = Path(config["data"]["CATALOG"]), Path(config["data"]["SEVERITY_POLICY"])
    assert catalog.parent == severity.parent and catalog.name == "catalog.yaml"


def test_managed_namespace_unit_repeats_for_another_namespace(tmp_path: Path) -> None:
    # An overlay outside the repo adding a second managed namespace, as README "Managed namespaces" says.
    extra = tmp_path / "batch"
    extra.mkdir()
    rel = os.path.relpath(DEPLOY / "managed-namespace", extra)
    (extra / "kustomization.yaml").write_text(f"namespace: llm-d-batch\nresources:\n  - {rel}\n")
    objects = kustomize(extra)
    assert {(o["kind"], o["metadata"]["namespace"]) for o in objects} == {
        ("Role", "llm-d-batch"),
        ("RoleBinding", "llm-d-batch"),
    }
    binding = next(o for o in objects if o["kind"] == "RoleBinding")
    # The subject stays the runbook worker's ServiceAccount in the bot's own namespace.
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "incident-bot-automation", "namespace": "incident-bot"}
    ]


def test_production_ha_runs_redis_with_sentinel_and_points_the_bot_at_it() -> None:
    objects = kustomize(DEPLOY / "overlays" / "production-ha")
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert "incident-bot-redis" not in by_kind(objects, "StatefulSet")  # the single Redis is gone
    ha = by_kind(objects, "StatefulSet")["incident-bot-redis-ha"]
    assert ha["spec"]["replicas"] == 3
    pod = ha["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["redis", "sentinel"]
    assert pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    script = next(
        o for n, o in by_kind(objects, "ConfigMap").items() if n.startswith("incident-bot-redis-ha")
    )["data"]
    assert "--appendonly yes" in script["start-redis.sh"]
    assert "--maxmemory-policy noeviction" in script["start-redis.sh"]
    assert "sentinel monitor llm-bot" in script["start-sentinel.sh"] and " 2\n" in script["start-sentinel.sh"]
    assert by_kind(objects, "PodDisruptionBudget")["incident-bot-redis-ha"]["spec"]["minAvailable"] == 2
    policies = by_kind(objects, "NetworkPolicy")
    assert {"incident-bot-redis-ha-ingress", "incident-bot-egress-redis-ha"} <= set(policies)
    for name, spec in pod_specs(objects):
        if name == "StatefulSet/incident-bot-redis-ha":
            continue
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert "REDIS_URL" not in env, name
        sentinels = env["REDIS_SENTINELS"]["value"].split(",")
        assert len(sentinels) == 3 and all(s.endswith(".incident-bot-redis-ha:26379") for s in sentinels), (
            name
        )
        assert env["REDIS_MIN_REPLICAS_ACK"]["value"] == "1", name
        assert env["REDIS_SENTINEL_MASTER"]["value"] == "llm-bot", name
