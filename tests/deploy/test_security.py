"""Pod security on every pod template, probes, and the network policies' shape."""

from __future__ import annotations

from tests.deploy.conftest import by_kind, pod_specs, rendered


def test_every_pod_is_restricted(overlay: str) -> None:
    specs = list(pod_specs(rendered(overlay)))
    assert len(specs) == 6  # web, three workers (one per lane), beat, redis
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] == 1000, name
        assert pod["fsGroup"] == 2000, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert "privileged" not in sc or sc["privileged"] is False, where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be an emptyDir"
            assert container["resources"]["requests"]["memory"], where
            assert container["resources"]["limits"]["memory"], where
            assert ":latest" not in container["image"], where


def test_web_probes(overlay: str) -> None:
    web = by_kind(rendered(overlay), "Deployment")["incident-bot-web"]["spec"]["template"]["spec"]
    container = web["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    readiness = container["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    # /readyz may wait ENQUEUE_TIMEOUT_SECONDS (2 s) for Redis: the probe must wait longer.
    assert readiness["timeoutSeconds"] > 2
    assert container["livenessProbe"]["failureThreshold"] * container["livenessProbe"]["periodSeconds"] >= 30


def test_workers_have_no_liveness_probe_by_design(overlay: str) -> None:
    # A `celery inspect ping` probe would restart every worker during a Redis outage (see the manifest).
    deployments = by_kind(rendered(overlay), "Deployment")
    for name in (
        "incident-bot-worker-intake",
        "incident-bot-worker-notifications",
        "incident-bot-worker-runbooks",
        "incident-bot-beat",
    ):
        assert "livenessProbe" not in deployments[name]["spec"]["template"]["spec"]["containers"][0]


def test_network_policies(overlay: str) -> None:
    policies = by_kind(rendered(overlay), "NetworkPolicy")
    deny = policies["incident-bot-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    ingress = policies["incident-bot-web-ingress"]["spec"]["ingress"]
    assert len(ingress) == 1
    namespaces = ingress[0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert set(namespaces) == {"ingress-nginx", "monitoring"}
    assert ingress[0]["ports"] == [{"protocol": "TCP", "port": 8080}]
    worker_ports = {
        port["port"]
        for rule in policies["incident-bot-worker-egress"]["spec"]["egress"]
        for port in rule["ports"]
    }
    assert worker_ports == {443, 6443, 9090, 8000}
    base_ports = {
        (port["protocol"], port["port"])
        for rule in policies["incident-bot-egress-base"]["spec"]["egress"]
        for port in rule["ports"]
    }
    assert base_ports == {("UDP", 53), ("TCP", 53), ("TCP", 6379)}
    # Only pods of the bot reach Redis.
    redis_from = policies["incident-bot-redis-ingress"]["spec"]["ingress"][0]["from"]
    assert redis_from == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "incident-bot"}}}]
