"""The Kubernetes permissions each runbook step type needs: the source of truth for deploy/'s Roles.

Every verb here is one that `bot/integrations/kube.py` sends for the step (read before write, server-side
dry runs are the same verb as the real call). `tests/deploy/test_rbac.py` renders the manifests and requires
the managed-namespace Role to grant exactly the union of these, and every `k8s.*` step type found in
`runbooks/*.yaml` to be listed here, so a new step type cannot ship without a decision about its RBAC.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

CORE = ""  # the core API group ("" in a Role's apiGroups)
APPS = "apps"
ARGO = "argoproj.io"
#: Step families that talk to the Kubernetes API (each of their step types needs a decision here).
KUBE_FAMILIES = ("k8s", "argo")


@dataclass(frozen=True)
class Permission:
    """Verbs on one resource (optionally `resource/subresource`) of one API group."""

    api_group: str
    resource: str
    verbs: frozenset[str]


def _p(api_group: str, resource: str, *verbs: str) -> Permission:
    return Permission(api_group, resource, frozenset(verbs))


STEP_PERMISSIONS: Mapping[str, tuple[Permission, ...]] = {
    # list_pods(deployment=…) reads the Deployment's selector first.
    "k8s.get_pods": (_p(CORE, "pods", "get", "list"), _p(APPS, "deployments", "get")),
    # CoreV1 events (list_namespaced_event), filtered by field selector.
    "k8s.get_events": (_p(CORE, "events", "list"),),
    # read_namespaced_pod_log; the step picks the pod(s) of a deployment first.
    "k8s.logs": (
        _p(CORE, "pods/log", "get"),
        _p(CORE, "pods", "get", "list"),
        _p(APPS, "deployments", "get"),
    ),
    # read + merge-patch of the scale subresource only: no patch on the Deployment itself.
    "k8s.scale": (_p(APPS, "deployments/scale", "get", "patch"),),
    # read (refuse paused) + strategic-merge patch of the restartedAt annotation.
    "k8s.rollout_restart": (_p(APPS, "deployments", "get", "patch"),),
    # kubectl's algorithm: read, list owned ReplicaSets, JSON-patch /spec/template.
    "k8s.rollout_undo": (_p(APPS, "deployments", "get", "patch"), _p(APPS, "replicasets", "list")),
    # polls the Deployment's status.
    "k8s.rollout_status": (_p(APPS, "deployments", "get"),),
    # the Deployment's owned ReplicaSets and their revisions (read only).
    "k8s.rollout_history": (_p(APPS, "deployments", "get"), _p(APPS, "replicasets", "list")),
    # reads the history like k8s.rollout_history; the rollback itself is the ChatOps flow's (same verbs
    # as k8s.rollout_undo plus pods list).
    "k8s.suggest_rollback": (_p(APPS, "deployments", "get"), _p(APPS, "replicasets", "list")),
    # select the pods (by label or deployment), then delete them one by one (never deletecollection).
    "k8s.delete_pods": (_p(CORE, "pods", "list", "delete"), _p(APPS, "deployments", "get")),
    # Argo Rollouts (bot/integrations/argo.py): status reads the Rollout, its ReplicaSets (stable vs canary
    # image) and its AnalysisRuns (list, filtered by owner).
    "argo.status": (
        _p(ARGO, "rollouts", "get"),
        _p(APPS, "replicasets", "list"),
        _p(ARGO, "analysisruns", "list"),
    ),
    # abort/retry read the status first, then merge-patch status.abort on the status subresource (the main
    # resource only when /status is 404, an old CRD without the subresource: same verb on rollouts).
    "argo.abort": (
        _p(ARGO, "rollouts", "get", "patch"),
        _p(ARGO, "rollouts/status", "patch"),
        _p(APPS, "replicasets", "list"),
        _p(ARGO, "analysisruns", "list"),
    ),
    "argo.retry": (
        _p(ARGO, "rollouts", "get", "patch"),
        _p(ARGO, "rollouts/status", "patch"),
        _p(APPS, "replicasets", "list"),
        _p(ARGO, "analysisruns", "list"),
    ),
    # promote: status patch (pauseConditions/currentStepIndex/promoteFull), then spec.paused.
    "argo.promote": (
        _p(ARGO, "rollouts", "get", "patch"),
        _p(ARGO, "rollouts/status", "patch"),
        _p(APPS, "replicasets", "list"),
        _p(ARGO, "analysisruns", "list"),
    ),
    # pause: spec.paused on the main resource.
    "argo.pause": (
        _p(ARGO, "rollouts", "get", "patch"),
        _p(APPS, "replicasets", "list"),
        _p(ARGO, "analysisruns", "list"),
    ),
    # undo: the Rollout's ReplicaSets by revision, JSON patch of /spec/template (a Rollout with
    # spec.workloadRef has its referenced Deployment read and patched instead).
    "argo.undo": (
        _p(ARGO, "rollouts", "get", "patch"),
        _p(APPS, "replicasets", "list"),
        _p(ARGO, "analysisruns", "list"),
        _p(APPS, "deployments", "get", "patch"),
    ),
}

#: Target discovery (bot/runbook/targets.py), read only, in the namespaces the bot manages: a pod and its
#: owner ReplicaSet (pod_owner), pods by llm-d's labels or a pool's selector (pod_owners), an InferencePool.
DISCOVERY_PERMISSIONS: tuple[Permission, ...] = (
    _p(CORE, "pods", "get", "list"),
    _p(APPS, "replicasets", "get"),
    _p("inference.networking.k8s.io", "inferencepools", "get"),
)

# Verbs that change cluster state; never granted cluster-wide, never on secrets.
MUTATING_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection", "escalate", "bind"})


def required_rules(step_types: Iterable[str] | None = None) -> dict[tuple[str, str], frozenset[str]]:
    """(apiGroup, resource) -> verbs needed by the given step types (default: all k8s steps and discovery)."""
    names = STEP_PERMISSIONS.keys() if step_types is None else step_types
    perms = [perm for name in names for perm in STEP_PERMISSIONS[name]]
    if step_types is None:
        perms.extend(DISCOVERY_PERMISSIONS)
    merged: dict[tuple[str, str], set[str]] = {}
    for perm in perms:
        merged.setdefault((perm.api_group, perm.resource), set()).update(perm.verbs)
    return {key: frozenset(verbs) for key, verbs in sorted(merged.items())}


def k8s_step_types_in(document: Any) -> set[str]:
    """Every Kubernetes (`k8s.*`, `argo.*`) step type named anywhere in a parsed runbook (any string)."""
    return {value for value in _strings(document) if _looks_like_k8s_step(value)}


def _looks_like_k8s_step(value: str) -> bool:
    head, dot, tail = value.partition(".")
    return head in KUBE_FAMILIES and dot == "." and tail.replace("_", "").isalpha() and tail.islower()


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _strings(item)
