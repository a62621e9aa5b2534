"""RBAC: exactly the verbs the Kubernetes step types need, namespaced, no wildcards, no secrets."""

from __future__ import annotations

from typing import Any

import yaml

import bot.steps  # noqa: F401  (registers the shipped step types)
from bot.rbac import KUBE_FAMILIES, MUTATING_VERBS, STEP_PERMISSIONS, k8s_step_types_in, required_rules
from tests.deploy.conftest import ROOT, by_kind, pod_specs, rendered

RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
# The step types the runbook engine defines (issue 5); each needs a decision in bot/rbac.py.


def granted(role: dict[str, Any]) -> dict[tuple[str, str], frozenset[str]]:
    """(apiGroup, resource) -> verbs a Role grants."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return {key: frozenset(verbs) for key, verbs in out.items()}


def test_mapping_is_exactly_the_registered_kubernetes_step_types() -> None:
    """Every k8s.* step an operator may write has RBAC, and the mapping lists nothing the engine lacks."""
    from bot.plan.steptypes import step_types

    k8s = {name for name in step_types() if name.split(".")[0] in KUBE_FAMILIES}
    assert k8s, "no k8s.* step types registered"
    assert set(STEP_PERMISSIONS) == k8s


def test_runbook_step_types_are_all_mapped() -> None:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "runbooks").glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for step in k8s_step_types_in(doc):
                found.setdefault(step, set()).add(path.name)
    unmapped = {step: files for step, files in found.items() if step not in STEP_PERMISSIONS}
    assert not unmapped, f"k8s step types without RBAC in bot/rbac.py: {unmapped}"


def test_step_scanner_finds_k8s_types_anywhere() -> None:
    doc = {
        "name": "x",
        "steps": [{"type": "k8s.scale", "with": {"replicas": 2}}, {"uses": "vllm.warmup"}],
        "on_failure": [{"type": "k8s.rollout_undo"}],
        "description": "k8s.not a step",
    }
    assert k8s_step_types_in(doc) == {"k8s.scale", "k8s.rollout_undo"}


def test_managed_namespace_role_grants_exactly_what_the_steps_need(overlay: str) -> None:
    roles = [o for o in rendered(overlay) if o["kind"] == "Role"]
    assert roles, "no Role rendered"
    for role in roles:
        assert granted(role) == required_rules(), role["metadata"]


def test_no_wildcards_no_secrets_no_cluster_scope(overlay: str) -> None:
    objects = rendered(overlay)
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, "no cluster-scoped RBAC at all"
    for role in (o for o in objects if o["kind"] == "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"wildcard in {role['metadata']['name']}.{field}"
            assert not {"serviceaccounts/token", "roles", "rolebindings"} & set(rule["resources"])
            if "secrets" in rule["resources"]:
                # Helm's release Secrets: list only (README explains why RBAC cannot narrow it further).
                assert rule["resources"] == ["secrets"] and rule["verbs"] == ["list"], rule
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])
            if set(rule["verbs"]) & MUTATING_VERBS:
                # Argo Rollouts: the Rollout (pause/promote/undo) and its status (abort/retry/promote);
                # StatefulSets and LeaderWorkerSets: the object (restart/undo) and the scale subresource.
                assert set(rule["resources"]) <= {
                    "deployments",
                    "deployments/scale",
                    "pods",
                    "rollouts",
                    "rollouts/status",
                    "rollouts/scale",
                    "statefulsets",
                    "statefulsets/scale",
                    "leaderworkersets",
                    "leaderworkersets/scale",
                }


def test_only_the_runbook_worker_holds_a_token(overlay: str) -> None:
    objects = rendered(overlay)
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "incident-bot-automation",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "incident-bot-automation", "namespace": "incident-bot"}
        ]
    accounts = by_kind(objects, "ServiceAccount")
    assert all(sa.get("automountServiceAccountToken") is False for sa in accounts.values())
    for name, spec in pod_specs(objects):
        if name == "Deployment/incident-bot-worker-runbooks":
            assert spec["serviceAccountName"] == "incident-bot-automation"
            assert spec["automountServiceAccountToken"] is True
        else:
            assert spec["serviceAccountName"] == "incident-bot", name
            assert spec["automountServiceAccountToken"] is False, name
    # The bot's own namespace gets no Role: its ConfigMaps are mounted, not read through the API.
    assert not [
        o for o in objects if o["kind"] in RBAC_KINDS and o["metadata"]["namespace"] == "incident-bot"
    ]


def test_argo_steps_are_least_privilege() -> None:
    """Reading a Rollout never needs patch; only abort/retry/promote patch the status subresource."""
    from bot.rbac import ARGO

    status_only = required_rules(["argo.status"])
    assert status_only[(ARGO, "rollouts")] == frozenset({"get"})
    assert not any(verbs & MUTATING_VERBS for verbs in status_only.values())
    for name in ("argo.abort", "argo.retry", "argo.promote"):
        assert required_rules([name])[(ARGO, "rollouts/status")] == frozenset({"patch"})
    assert (ARGO, "rollouts/status") not in required_rules(["argo.pause", "argo.undo"])
    assert (ARGO, "analysisruns") in status_only and status_only[(ARGO, "analysisruns")] == frozenset(
        {"list"}
    )
    assert k8s_step_types_in({"steps": [{"type": "argo.abort"}, {"type": "argo.status"}]}) == {
        "argo.abort",
        "argo.status",
    }


def test_each_kind_adds_only_its_own_verbs() -> None:
    """A Deployment-only install needs nothing of the other kinds; each kind adds its resource only."""
    from bot.rbac import APPS, LWS

    deployment_only = required_rules(None, kinds=["Deployment"])
    assert not {r for _g, r in deployment_only} & {"statefulsets", "leaderworkersets", "controllerrevisions"}
    assert deployment_only[("", "secrets")] == frozenset({"list"}), "k8s.helm_history"
    lws_scale = required_rules(["k8s.scale"], kinds=["LeaderWorkerSet"])
    assert lws_scale == {
        (APPS, "controllerrevisions"): frozenset({"list"}),
        (APPS, "deployments/scale"): frozenset({"get", "patch"}),
        (LWS, "leaderworkersets"): frozenset({"get"}),
        (LWS, "leaderworkersets/scale"): frozenset({"get", "patch"}),
    }
    lws_reads = required_rules(
        ["k8s.get_pods", "k8s.rollout_status", "k8s.rollout_history"], ["LeaderWorkerSet"]
    )
    assert not any(verbs & MUTATING_VERBS for verbs in lws_reads.values())
    sts_undo = required_rules(["k8s.rollout_undo"], kinds=["StatefulSet"])
    assert sts_undo[(APPS, "statefulsets")] == frozenset({"get", "patch"})
    assert (APPS, "statefulsets/scale") not in sts_undo
    assert ("", "secrets") in required_rules(["k8s.rollout_undo"], kinds=["LeaderWorkerSet"])
    assert ("", "secrets") not in required_rules(["k8s.rollout_undo"], kinds=["StatefulSet"])
