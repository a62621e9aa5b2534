"""Controllers that give the emulator's StatefulSets and LeaderWorkerSets life (Cluster.register_controller).

Both record their template in ControllerRevisions as the real controllers do and roll pods one unit at a
time, highest index first, waiting for the updated units to be ready (so a broken image stalls the update
after the first unit, as it does on a real cluster):

* StatefulSet: pods ``<name>-<ordinal>`` labelled ``controller-revision-hash``; ControllerRevisions
  ``<name>-<hash>`` whose ``data`` is ``{"spec":{"template":{…,"$patch":"replace"}}}``; status with
  ``currentRevision``/``updateRevision`` (equal once the update completes); history is kept.
* LeaderWorkerSet: per group ``i`` a leader ``<name>-<i>`` and workers ``<name>-<i>-<j>`` (j < size), labelled
  ``leaderworkerset.sigs.k8s.io/{name,group-index,worker-index,template-revision-hash}``; ControllerRevisions
  whose ``data`` is ``{"spec":{"networkConfig":…,"leaderWorkerTemplate":…,"$patch":"replace"}}``; status
  ``replicas``/``readyReplicas``/``updatedReplicas`` and conditions Available/Progressing/UpdateInProgress;
  once an update completes every other revision is deleted (the real controller's truncateHistory).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from bot.sandbox.cluster import Cluster, selector_matches, template_hash

JSON = dict[str, Any]
LWS = "LeaderWorkerSet"
STS = "StatefulSet"
CR = "ControllerRevision"
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER = "leaderworkerset.sigs.k8s.io/worker-index"
LWS_HASH = "leaderworkerset.sigs.k8s.io/template-revision-hash"
STS_HASH = "controller-revision-hash"
STS_POD_NAME = "statefulset.kubernetes.io/pod-name"


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = owner["metadata"]["uid"]
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def _owner_ref(owner: Mapping[str, Any]) -> JSON:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


class _Revisioned:
    """ControllerRevision bookkeeping shared by both controllers."""

    kind = ""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def revisions(self, owner: JSON) -> list[JSON]:
        """The owner's ControllerRevisions, oldest first."""
        ns = owner["metadata"]["namespace"]
        items = [cr for cr in self.cluster.list_objects(CR, ns) if _owned_by(cr, owner)]
        return sorted(items, key=lambda cr: int(cr.get("revision", 0)))

    renumber = False
    """StatefulSet: going back to an equal template gives that revision the next number (as kube does)."""

    def ensure_revision(self, owner: JSON, digest: str, labels: Mapping[str, str], data: JSON) -> JSON:
        """The revision for ``digest``, created (revision = newest + 1) when the template is new."""
        existing = self.revisions(owner)
        name = f"{owner['metadata']['name']}-{digest}"
        for cr in existing:
            if cr["metadata"]["name"] == name:
                if self.renumber and cr is not existing[-1]:
                    cr["revision"] = int(existing[-1].get("revision", 0)) + 1
                    return self.cluster.store_object(CR, cr)
                return cr
        ns = owner["metadata"]["namespace"]
        meta = self.cluster.new_meta(CR, ns, name)
        meta["labels"] = dict(labels)
        meta["ownerReferences"] = [_owner_ref(owner)]
        revision = max((int(cr.get("revision", 0)) for cr in existing), default=0) + 1
        cr = {"apiVersion": "apps/v1", "kind": CR, "metadata": meta, "data": data, "revision": revision}
        return self.cluster.store_object(CR, cr, created=True)

    def write_status(self, owner: JSON, status: JSON) -> None:
        """Store the status only when it changed (reconcile runs until nothing changes)."""
        if owner.get("status") != status:
            fresh = copy.deepcopy(owner)
            fresh["status"] = status
            self.cluster.store_object(self.kind, fresh)


class StatefulSetController(_Revisioned):
    """Ordinal pods, ControllerRevisions and a RollingUpdate for StatefulSets."""

    kind = STS
    renumber = True

    def __call__(self, key: tuple[str, str]) -> None:
        sts = self.cluster.get(STS, *key)
        ns, name = key
        spec = sts.get("spec") or {}
        template = copy.deepcopy(spec.get("template") or {})
        replicas = int(spec.get("replicas", 1))
        digest = template_hash(template)
        labels = {**((template.get("metadata") or {}).get("labels") or {}), STS_HASH: f"{name}-{digest}"}
        data = {"spec": {"template": {**template, "$patch": "replace"}}}
        update = self.ensure_revision(sts, digest, labels, data)
        pods = {
            p["metadata"]["name"]: p
            for p in self.cluster.list_objects("Pod", ns)
            if _owned_by(p, sts) and selector_matches(spec.get("selector"), p["metadata"].get("labels") or {})
        }
        for pod_name in [n for n in pods if int(n.rsplit("-", 1)[-1]) >= replicas]:
            self.cluster.remove_pod(ns, pod_name)
            pods.pop(pod_name)
        for ordinal in range(replicas):
            pod_name = f"{name}-{ordinal}"
            if pod_name not in pods:
                extra = {STS_HASH: update["metadata"]["name"], STS_POD_NAME: pod_name}
                pods[pod_name] = self.cluster.spawn_pod(sts, pod_name, template, extra)
        self._roll(sts, pods, template, update["metadata"]["name"])
        self._status(sts, replicas, update["metadata"]["name"])

    def _roll(self, sts: JSON, pods: dict[str, JSON], template: JSON, revision: str) -> None:
        def on(p: JSON) -> bool:
            return (p["metadata"].get("labels") or {}).get(STS_HASH) == revision

        if any(on(p) and not _ready(p) for p in pods.values()):
            return
        old = sorted((n for n, p in pods.items() if not on(p)), key=lambda n: -int(n.rsplit("-", 1)[-1]))
        if old:
            ns = sts["metadata"]["namespace"]
            self.cluster.remove_pod(ns, old[0])
            extra = {STS_HASH: revision, STS_POD_NAME: old[0]}
            pods[old[0]] = self.cluster.spawn_pod(sts, old[0], template, extra)

    def _status(self, sts: JSON, replicas: int, revision: str) -> None:
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        pods = [p for p in self.cluster.list_objects("Pod", ns) if _owned_by(p, sts)]
        updated = [p for p in pods if (p["metadata"].get("labels") or {}).get(STS_HASH) == revision]
        ready = sum(1 for p in pods if _ready(p))
        previous = (sts.get("status") or {}).get("currentRevision") or revision
        done = len(updated) == replicas == len(pods)
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": len(pods) if done else len(pods) - len(updated),
            "updatedReplicas": len(updated),
            "currentRevision": revision if done else previous,
            "updateRevision": revision,
            "collisionCount": 0,
        }
        self.write_status(self.cluster.get(STS, ns, name), status)


class LeaderWorkerSetController(_Revisioned):
    """Groups of a leader and workers, ControllerRevisions (pruned after an update) and a rolling update."""

    kind = LWS

    def __call__(self, key: tuple[str, str]) -> None:
        lws = self.cluster.get(LWS, *key)
        ns, name = key
        spec = lws.get("spec") or {}
        lwt = copy.deepcopy(spec.get("leaderWorkerTemplate") or {})
        replicas, size = int(spec.get("replicas", 1)), int(lwt.get("size", 1) or 1)
        digest = template_hash(lwt)
        network = spec.get("networkConfig") or {"subdomainPolicy": "Shared"}
        data = {"spec": {"networkConfig": network, "leaderWorkerTemplate": lwt, "$patch": "replace"}}
        self.ensure_revision(lws, digest, {LWS_NAME: name, LWS_HASH: digest}, data)
        groups = self._groups(lws)
        for index in [i for i in groups if i >= replicas]:
            for pod in groups.pop(index):
                self.cluster.remove_pod(ns, pod["metadata"]["name"])
        for index in range(replicas):
            if len(groups.get(index, [])) < size:
                groups[index] = self._spawn_group(lws, index, lwt, digest, groups.get(index, []))
        self._roll(lws, groups, lwt, digest)
        self._status(lws, replicas, digest)

    def _groups(self, lws: JSON) -> dict[int, list[JSON]]:
        ns, name = lws["metadata"]["namespace"], lws["metadata"]["name"]
        groups: dict[int, list[JSON]] = {}
        for pod in self.cluster.list_objects("Pod", ns):
            labels = pod["metadata"].get("labels") or {}
            if labels.get(LWS_NAME) == name and _owned_by(pod, lws):
                groups.setdefault(int(labels.get(LWS_GROUP, 0)), []).append(pod)
        return groups

    def _spawn_group(self, lws: JSON, index: int, lwt: JSON, digest: str, existing: list[JSON]) -> list[JSON]:
        ns, name = lws["metadata"]["namespace"], lws["metadata"]["name"]
        have = {p["metadata"]["name"] for p in existing}
        pods = list(existing)
        for worker in range(int(lwt.get("size", 1) or 1)):
            pod_name = f"{name}-{index}" if worker == 0 else f"{name}-{index}-{worker}"
            if pod_name in have:
                continue
            template = (lwt.get("leaderTemplate") if worker == 0 else None) or lwt.get("workerTemplate") or {}
            labels = {LWS_NAME: name, LWS_GROUP: str(index), LWS_WORKER: str(worker), LWS_HASH: digest}
            pods.append(self.cluster.spawn_pod(lws, pod_name, template, labels))
        del ns
        return pods

    def _roll(self, lws: JSON, groups: dict[int, list[JSON]], lwt: JSON, digest: str) -> None:
        def updated(pods: list[JSON]) -> bool:
            return all((p["metadata"].get("labels") or {}).get(LWS_HASH) == digest for p in pods)

        if any(updated(pods) and not all(_ready(p) for p in pods) for pods in groups.values()):
            return
        old = sorted((i for i, pods in groups.items() if not updated(pods)), reverse=True)
        if old:
            ns = lws["metadata"]["namespace"]
            for pod in groups[old[0]]:
                self.cluster.remove_pod(ns, pod["metadata"]["name"])
            groups[old[0]] = self._spawn_group(lws, old[0], lwt, digest, [])

    def _status(self, lws: JSON, replicas: int, digest: str) -> None:
        ns, name = lws["metadata"]["namespace"], lws["metadata"]["name"]
        groups = self._groups(lws)
        ready = sum(1 for pods in groups.values() if pods and all(_ready(p) for p in pods))
        updated = sum(
            1
            for pods in groups.values()
            if all(p["metadata"]["labels"].get(LWS_HASH) == digest for p in pods)
        )
        rolling = updated < replicas
        if not rolling:  # truncateHistory: only the current revision survives a completed update
            for cr in self.revisions(lws):
                if (cr["metadata"].get("labels") or {}).get(LWS_HASH) != digest:
                    self.cluster.remove_object(CR, ns, cr["metadata"]["name"])
        current = self.cluster.get(LWS, ns, name)
        status: JSON = {
            "replicas": len(groups),
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "hpaPodSelector": f"{LWS_NAME}={name},{LWS_WORKER}=0",
            "conditions": [
                _condition("Available", ready >= replicas, "AllGroupsReady", "All replicas are ready"),
                _condition(
                    "Progressing",
                    rolling or ready < replicas,
                    "GroupsProgressing",
                    "Replicas are progressing",
                ),
                _condition("UpdateInProgress", rolling, "GroupsUpdating", "Rolling Upgrade is in progress"),
            ],
        }
        old = current.get("status") or {}
        for cond, before in zip(status["conditions"], old.get("conditions") or [], strict=False):
            if before.get("type") == cond["type"] and before.get("status") == cond["status"]:
                cond["lastTransitionTime"] = before.get("lastTransitionTime")
        for cond in status["conditions"]:
            cond.setdefault("lastTransitionTime", None)
            if cond["lastTransitionTime"] is None:
                cond["lastTransitionTime"] = self.cluster.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        self.write_status(current, status)


def _condition(kind: str, ok: bool, reason: str, message: str) -> JSON:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def install(cluster: Cluster) -> None:
    """Register both controllers on a cluster."""
    cluster.register_controller(STS, StatefulSetController(cluster))
    cluster.register_controller(LWS, LeaderWorkerSetController(cluster))


def vllm_leaderworkerset(
    name: str,
    *,
    image: str = "vllm/vllm-openai:v0.8.5",
    groups: int = 2,
    size: int = 2,
    model: str = "meta-llama/Llama-3.1-70B-Instruct",
) -> JSON:
    """A multi-node vLLM LeaderWorkerSet as llm-d-modelservice renders one (leader serves, workers join)."""
    labels = {"app.kubernetes.io/name": name, "llm-d.ai/role": "decode", "llm-d.ai/inferenceServing": "true"}

    def pod(role: str) -> JSON:
        args = ["--model", model, "--tensor-parallel-size", "8", "--pipeline-parallel-size", str(size)]
        container = {
            "name": "vllm",
            "image": image,
            "args": args if role == "leader" else ["--headless", *args],
            "resources": {"limits": {"nvidia.com/gpu": "1"}},
        }
        return {
            "metadata": {"labels": {**labels, "llm-d.ai/lws-role": role}},
            "spec": {"containers": [container]},
        }

    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "replicas": groups,
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0},
            },
            "leaderWorkerTemplate": {
                "size": size,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": pod("leader"),
                "workerTemplate": pod("worker"),
            },
        },
    }


def vllm_statefulset(name: str, *, image: str = "vllm/vllm-openai:v0.8.5", replicas: int = 2) -> JSON:
    """A StatefulSet running vLLM (one pod per ordinal)."""
    labels = {"app.kubernetes.io/name": name, "llm-d.ai/role": "prefill"}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": "vllm", "image": image}]},
            },
        },
    }
