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
LWS = "leaderworkerset.x-k8s.io"
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
    # Helm release history (bot/integrations/helm.py): list the release Secrets by label selector
    # owner=helm,name=<release> in the release namespace. RBAC cannot scope a list by label nor by name
    # prefix, and the revision numbers are unknown up front (resourceNames would need them), so this is
    # `list` on secrets of the managed namespaces: never `get`, never a write, never cluster-wide. The
    # Deployment is read for its meta.helm.sh annotations when no release is named.
    "k8s.helm_history": (_p(CORE, "secrets", "list"), _p(APPS, "deployments", "get")),
}

#: What a step needs for a workload kind other than Deployment (bot/integrations/workloads.py): the kind's
#: own resource instead of ``deployments`` (the Deployment verbs above stay: they are the default kind).
_STS_READ = (_p(APPS, "statefulsets", "get"), _p(APPS, "controllerrevisions", "list"))
_LWS_READ = (_p(LWS, "leaderworkersets", "get"), _p(APPS, "controllerrevisions", "list"))
_RO_READ = (_p(ARGO, "rollouts", "get"),)
_PODS_READ = (_p(CORE, "pods", "list"),)
_PODS_DELETE = (_p(CORE, "pods", "list", "delete"),)
KIND_PERMISSIONS: Mapping[str, Mapping[str, tuple[Permission, ...]]] = {
    "StatefulSet": {
        "k8s.get_pods": (_p(APPS, "statefulsets", "get"), *_PODS_READ),
        "k8s.logs": (_p(APPS, "statefulsets", "get"), *_PODS_READ),
        "k8s.delete_pods": (_p(APPS, "statefulsets", "get"), *_PODS_DELETE),
        "k8s.rollout_status": (_p(APPS, "statefulsets", "get"),),
        "k8s.rollout_history": _STS_READ,
        "k8s.suggest_rollback": _STS_READ,
        "k8s.helm_history": (_p(APPS, "statefulsets", "get"),),
        "k8s.scale": (*_STS_READ, _p(APPS, "statefulsets/scale", "get", "patch")),
        # strategic-merge patch of spec.template's restartedAt annotation, like kubectl rollout restart.
        "k8s.rollout_restart": (*_STS_READ, _p(APPS, "statefulsets", "get", "patch")),
        # JSON patch of /spec/template with the chosen ControllerRevision's template.
        "k8s.rollout_undo": (*_STS_READ, _p(APPS, "statefulsets", "get", "patch")),
    },
    "LeaderWorkerSet": {
        "k8s.get_pods": (_p(LWS, "leaderworkersets", "get"), *_PODS_READ),
        "k8s.logs": (_p(LWS, "leaderworkersets", "get"), *_PODS_READ),
        "k8s.delete_pods": (_p(LWS, "leaderworkersets", "get"), *_PODS_DELETE),
        "k8s.rollout_status": (_p(LWS, "leaderworkersets", "get"),),
        "k8s.rollout_history": _LWS_READ,
        "k8s.suggest_rollback": _LWS_READ,
        "k8s.helm_history": (_p(LWS, "leaderworkersets", "get"),),
        "k8s.scale": (*_LWS_READ, _p(LWS, "leaderworkersets/scale", "get", "patch")),
        # merge patch of restartedAt on the leader and worker templates.
        "k8s.rollout_restart": (*_LWS_READ, _p(LWS, "leaderworkersets", "get", "patch")),
        # JSON patch of /spec/leaderWorkerTemplate; the previous Helm release's manifest when LWS has
        # pruned every older ControllerRevision (list of the release Secrets, as k8s.helm_history).
        "k8s.rollout_undo": (
            *_LWS_READ,
            _p(LWS, "leaderworkersets", "get", "patch"),
            _p(CORE, "secrets", "list"),
        ),
    },
    "Rollout": {
        "k8s.get_pods": (*_RO_READ, *_PODS_READ),
        "k8s.logs": (*_RO_READ, *_PODS_READ),
        "k8s.delete_pods": (*_RO_READ, *_PODS_DELETE),
        "k8s.rollout_status": (*_RO_READ, _p(APPS, "replicasets", "list"), _p(ARGO, "analysisruns", "list")),
        "k8s.rollout_history": (*_RO_READ, _p(APPS, "replicasets", "list")),
        "k8s.suggest_rollback": (*_RO_READ, _p(APPS, "replicasets", "list")),
        "k8s.helm_history": _RO_READ,
        "k8s.scale": (*_RO_READ, _p(ARGO, "rollouts/scale", "get", "patch")),
        "k8s.rollout_restart": (_p(ARGO, "rollouts", "get", "patch"),),
        "k8s.rollout_undo": (
            _p(ARGO, "rollouts", "get", "patch"),
            _p(APPS, "replicasets", "list"),
            _p(APPS, "deployments", "get", "patch"),
        ),
    },
}

#: Target discovery (bot/runbook/targets.py), read only, in the namespaces the bot manages: a pod and its
#: owner ReplicaSet (pod_owner), pods by llm-d's labels or a pool's selector (pod_owners), an InferencePool.
DISCOVERY_PERMISSIONS: tuple[Permission, ...] = (
    _p(CORE, "pods", "get", "list"),
    _p(APPS, "replicasets", "get"),
    _p("inference.networking.k8s.io", "inferencepools", "get"),
)

# Verbs that change cluster state; never granted cluster-wide, never on secrets.
#: Workload kinds the steps accept (``kind``); Deployment's verbs are in STEP_PERMISSIONS itself.
WORKLOAD_KINDS = ("Deployment", *KIND_PERMISSIONS)
MUTATING_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection", "escalate", "bind"})


def required_rules(
    step_types: Iterable[str] | None = None, kinds: Iterable[str] | None = None
) -> dict[tuple[str, str], frozenset[str]]:
    """(apiGroup, resource) -> verbs needed by the given step types on the given workload kinds (default:
    all k8s steps on every kind, and discovery)."""
    names = list(STEP_PERMISSIONS.keys() if step_types is None else step_types)
    perms = [perm for name in names for perm in STEP_PERMISSIONS[name]]
    for kind in WORKLOAD_KINDS if kinds is None else kinds:
        by_step = KIND_PERMISSIONS.get(kind, {})
        perms.extend(perm for name in names for perm in by_step.get(name, ()))
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
