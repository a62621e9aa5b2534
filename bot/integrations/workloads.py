"""One interface over the workload kinds llm-d runs: Deployment, StatefulSet, LeaderWorkerSet, Argo Rollout.

Each kind answers the same questions and takes the same actions, with the semantics of its own tooling:

=================  ====================================================================================
Deployment         :class:`~bot.integrations.kube.KubeClient` as it is (kubectl rollout …)
StatefulSet        scale subresource; restart = the restartedAt annotation on ``spec.template`` (kubectl
                   rollout restart); history = its ControllerRevisions (``data`` is a strategic-merge patch
                   ``{"spec":{"template":{…,"$patch":"replace"}}}``); undo = JSON patch of ``/spec/template``
                   with the chosen revision's template; status as ``kubectl rollout status sts``
LeaderWorkerSet    leaderworkerset.x-k8s.io/v1: ``spec.replicas`` counts groups (leader + size-1 workers);
                   scale subresource; restart = restartedAt on the leader and worker templates (a rolling
                   update of every group); history = ControllerRevisions labelled
                   ``leaderworkerset.sigs.k8s.io/name`` (``data.spec.leaderWorkerTemplate``); undo = JSON
                   patch of ``/spec/leaderWorkerTemplate``. LWS itself has no rollback and deletes every
                   revision but the current one once an update completes, so when no previous revision is left
                   the undo falls back to the template in the previous Helm release's manifest (and says so)
Rollout            :class:`~bot.integrations.argo.RolloutWorkload` (``kubectl argo rollouts``)
=================  ====================================================================================
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kubernetes import client as k8s

from bot.integrations.argo import RolloutWorkload
from bot.integrations.kube import (
    JSON,
    RESTARTED_AT,
    DeploymentSummary,
    KubeClient,
    KubeRejected,
    NoRolloutHistory,
    PodSummary,
    RevisionInfo,
    RolloutStatus,
    ScaleResult,
    UndoResult,
    _images,
    _int,
    _parse_time,
    label_selector_string,
    summarize_deployment,
    summarize_pod,
)

KINDS = ("Deployment", "StatefulSet", "LeaderWorkerSet", "Rollout")
LWS_GROUP, LWS_VERSION, LWS_PLURAL = "leaderworkerset.x-k8s.io", "v1", "leaderworkersets"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
LWS_REVISION_LABEL = "leaderworkerset.sigs.k8s.io/template-revision-hash"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
#: Given the previous template a Helm release recorded (release name, revision) -> leaderWorkerTemplate.
TemplateFallback = Callable[[JSON], tuple[JSON, str] | None]


class Workload(Protocol):
    """What the steps and the rollback flow need from a workload, whatever its kind."""

    kind: str

    def get(self, namespace: str, name: str) -> DeploymentSummary:
        """The workload summarised (replicas, readiness, images, generation)."""

    def scale(self, namespace: str, name: str, replicas: int, *, dry_run: bool = False) -> ScaleResult:
        """Set the replicas (groups for a LeaderWorkerSet) through the scale subresource."""

    def restart(
        self, namespace: str, name: str, *, dry_run: bool = False, now: dt.datetime | None = None
    ) -> DeploymentSummary:
        """A rolling restart."""

    def rollout_status(self, namespace: str, name: str) -> RolloutStatus:
        """Whether the last change has rolled out."""

    def history(self, namespace: str, name: str) -> list[RevisionInfo]:
        """Revisions, oldest first."""

    def undo(
        self, namespace: str, name: str, to_revision: int | None = None, *, dry_run: bool = False
    ) -> UndoResult:
        """Back to the previous (or the given) revision."""

    def pods(self, namespace: str, name: str) -> list[PodSummary]:
        """The workload's pods."""


# --- Deployment ----------------------------------------------------------------------------------


class DeploymentWorkload:
    """A Deployment: the KubeClient's kubectl-compatible operations."""

    kind = "Deployment"

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    def get(self, namespace: str, name: str) -> DeploymentSummary:
        """Read and summarise."""
        return self.kube.get_deployment(namespace, name)

    def raw(self, namespace: str, name: str) -> JSON:
        """The object as served."""
        return self.kube.deployment_json(namespace, name)

    def scale(self, namespace: str, name: str, replicas: int, *, dry_run: bool = False) -> ScaleResult:
        """kubectl scale."""
        return self.kube.scale(namespace, name, replicas, dry_run=dry_run)

    def restart(
        self, namespace: str, name: str, *, dry_run: bool = False, now: dt.datetime | None = None
    ) -> DeploymentSummary:
        """kubectl rollout restart."""
        return self.kube.rollout_restart(namespace, name, dry_run=dry_run, now=now)

    def restart_marker(self, namespace: str, name: str) -> str | None:
        """The restartedAt stamp of the pod template."""
        return self.kube.template_annotations(namespace, name).get(RESTARTED_AT)

    def rollout_status(self, namespace: str, name: str) -> RolloutStatus:
        """kubectl rollout status (one poll)."""
        return self.kube.rollout_status(namespace, name)

    def history(self, namespace: str, name: str) -> list[RevisionInfo]:
        """kubectl rollout history."""
        return self.kube.rollout_history(namespace, name)

    def undo(
        self, namespace: str, name: str, to_revision: int | None = None, *, dry_run: bool = False
    ) -> UndoResult:
        """kubectl rollout undo."""
        return self.kube.rollout_undo(namespace, name, to_revision=to_revision, dry_run=dry_run)

    def pods(self, namespace: str, name: str) -> list[PodSummary]:
        """Pods matching the Deployment's selector."""
        return self.kube.list_pods(namespace, deployment=name)


# --- shared plumbing for the ControllerRevision-backed kinds -------------------------------------


def _stamp(now: dt.datetime | None) -> str:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean(template: Mapping[str, Any]) -> JSON:
    copy: JSON = json.loads(json.dumps(template))
    copy.pop("$patch", None)
    return copy


class _RevisionedWorkload:
    """Reads, scale, pods and history/undo over owned ControllerRevisions; subclasses say where things are."""

    kind = ""
    template_path = "/spec/template"

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    # -- what differs between kinds ------------------------------------------------------------------

    def raw(self, namespace: str, name: str) -> JSON:
        """The object as served."""
        raise NotImplementedError

    def _patch(self, namespace: str, name: str, body: Any, content_type: str, dry_run: bool) -> JSON:
        raise NotImplementedError

    def _scale_read(self, namespace: str, name: str) -> JSON:
        raise NotImplementedError

    def _scale_write(self, namespace: str, name: str, replicas: int, dry_run: bool) -> JSON:
        raise NotImplementedError

    def _template(self, obj: Mapping[str, Any]) -> JSON:
        """The part of the spec a revision records."""
        raise NotImplementedError

    def _revision_template(self, revision: Mapping[str, Any]) -> JSON:
        raise NotImplementedError

    def _pod_selector(self, obj: Mapping[str, Any]) -> str:
        return label_selector_string((obj.get("spec") or {}).get("selector"))

    def _revision_selector(self, obj: Mapping[str, Any]) -> str:
        return self._pod_selector(obj)

    def _pod_templates(self, template: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [template]

    def _no_history(self, namespace: str, name: str, obj: JSON) -> tuple[JSON, int, str] | None:
        return None

    # -- shared ---------------------------------------------------------------------------------

    def images_of(self, template: Mapping[str, Any]) -> tuple[str, ...]:
        """Container images of the recorded template, deduplicated in order."""
        found: list[str] = []
        for pod_template in self._pod_templates(template):
            found.extend(i for i in _images(pod_template) if i not in found)
        return tuple(found)

    def scale(self, namespace: str, name: str, replicas: int, *, dry_run: bool = False) -> ScaleResult:
        """Merge-patch ``spec.replicas`` on the scale subresource, like kubectl scale."""
        if replicas < 0:
            raise KubeRejected(f"scale {namespace}/{name}: replicas must be >= 0, got {replicas}")
        self.kube._check_namespace(namespace)
        before = self._scale_read(namespace, name)
        after = self._scale_write(namespace, name, replicas, dry_run)
        return ScaleResult(
            name,
            namespace,
            _int(before["spec"].get("replicas")),
            _int(after["spec"].get("replicas")),
            dry_run,
        )

    def restart_marker(self, namespace: str, name: str) -> str | None:
        """The restartedAt stamp this kind's restart writes."""
        for pod_template in self._pod_templates(self._template(self.raw(namespace, name))):
            stamp = ((pod_template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
            if stamp:
                return str(stamp)
        return None

    def pods(self, namespace: str, name: str) -> list[PodSummary]:
        """Pods matching the workload's selector."""
        selector = self._pod_selector(self.raw(namespace, name))
        listing: JSON = self.kube._raw(
            f"list pods of {self.kind} {namespace}/{name}",
            lambda api: k8s.CoreV1Api(api).list_namespaced_pod(
                namespace, label_selector=selector, **self.kube._opts()
            ),
        )
        return [summarize_pod(p) for p in listing.get("items") or []]

    def _revisions(self, obj: JSON) -> list[JSON]:
        meta = obj["metadata"]
        namespace, uid = meta["namespace"], meta.get("uid")
        selector = self._revision_selector(obj)
        listing: JSON = self.kube._raw(
            f"list controllerrevisions of {self.kind} {namespace}/{meta['name']}",
            lambda api: k8s.AppsV1Api(api).list_namespaced_controller_revision(
                namespace, label_selector=selector, **self.kube._opts()
            ),
        )
        owned = [
            cr
            for cr in listing.get("items") or []
            if any(
                ref.get("controller") and ref.get("uid") == uid
                for ref in (cr.get("metadata") or {}).get("ownerReferences") or []
            )
        ]
        return sorted(owned, key=lambda cr: _int(cr.get("revision")))

    def history(self, namespace: str, name: str) -> list[RevisionInfo]:
        """The ControllerRevisions the workload owns, oldest first."""
        obj = self.raw(namespace, name)
        out = []
        for cr in self._revisions(obj):
            template = self._revision_template(cr)
            meta = cr.get("metadata") or {}
            out.append(
                RevisionInfo(
                    revision=_int(cr.get("revision")),
                    replicaset=str(meta.get("name", "")),
                    created=_parse_time(meta.get("creationTimestamp")),
                    images=self.images_of(template),
                    change_cause=(meta.get("annotations") or {}).get("kubernetes.io/change-cause"),
                    replicas=0,
                    template=template,
                )
            )
        return out

    def _current_revision(self, obj: JSON, revisions: list[JSON]) -> int | None:
        current = self._template(obj)
        matching = [cr for cr in revisions if self._revision_template(cr) == current]
        chosen = matching[-1] if matching else (revisions[-1] if revisions else None)
        return _int(chosen.get("revision")) if chosen else None

    def _target(
        self, namespace: str, name: str, obj: JSON, to_revision: int | None
    ) -> tuple[JSON, int, str, int | None]:
        revisions = self._revisions(obj)
        current = self._current_revision(obj, revisions)
        by_revision = {_int(cr.get("revision")): cr for cr in revisions}
        if to_revision:
            if to_revision not in by_revision:
                raise NoRolloutHistory(
                    f"unable to find specified revision {to_revision} in history of "
                    f"{self.kind} {namespace}/{name}"
                )
            return (
                self._revision_template(by_revision[to_revision]),
                to_revision,
                "controllerrevision",
                current,
            )
        older = [r for r in sorted(by_revision) if current is None or r < current]
        if older:
            return self._revision_template(by_revision[older[-1]]), older[-1], "controllerrevision", current
        fallback = self._no_history(namespace, name, obj)
        if fallback is None:
            raise NoRolloutHistory(f"no rollout history found for {self.kind} {namespace}/{name}")
        template, revision, source = fallback
        return template, revision, source, current

    def undo(
        self, namespace: str, name: str, to_revision: int | None = None, *, dry_run: bool = False
    ) -> UndoResult:
        """Re-apply the previous (or the given) revision's template; a no-op when it is already current."""
        obj = self.raw(namespace, name)
        template, revision, source, current = self._target(namespace, name, obj, to_revision)
        images = self.images_of(template)
        if template == self._template(obj):
            return UndoResult(name, namespace, current, revision, False, dry_run, images, source)
        patch = [{"op": "replace", "path": self.template_path, "value": template}]
        self._patch(namespace, name, patch, JSON_PATCH, dry_run)
        return UndoResult(name, namespace, current, revision, True, dry_run, images, source)


# --- StatefulSet ---------------------------------------------------------------------------------


class StatefulSetWorkload(_RevisionedWorkload):
    """An apps/v1 StatefulSet, with kubectl's rollout semantics."""

    kind = "StatefulSet"

    def raw(self, namespace: str, name: str) -> JSON:
        """The StatefulSet as served."""
        self.kube._check_namespace(namespace)
        result: JSON = self.kube._raw(
            f"get statefulset {namespace}/{name}",
            lambda api: k8s.AppsV1Api(api).read_namespaced_stateful_set(name, namespace, **self.kube._opts()),
        )
        return result

    def _patch(self, namespace: str, name: str, body: Any, content_type: str, dry_run: bool) -> JSON:
        self.kube._check_namespace(namespace)
        result: JSON = self.kube._raw(
            f"patch statefulset {namespace}/{name}",
            lambda api: k8s.AppsV1Api(api).patch_namespaced_stateful_set(
                name, namespace, body, _content_type=content_type, **self.kube._mutating(dry_run)
            ),
        )
        return result

    def _scale_read(self, namespace: str, name: str) -> JSON:
        result: JSON = self.kube._raw(
            f"get scale statefulset {namespace}/{name}",
            lambda api: k8s.AppsV1Api(api).read_namespaced_stateful_set_scale(
                name, namespace, **self.kube._opts()
            ),
        )
        return result

    def _scale_write(self, namespace: str, name: str, replicas: int, dry_run: bool) -> JSON:
        result: JSON = self.kube._raw(
            f"scale statefulset {namespace}/{name}",
            lambda api: k8s.AppsV1Api(api).patch_namespaced_stateful_set_scale(
                name,
                namespace,
                {"spec": {"replicas": replicas}},
                _content_type=MERGE,
                **self.kube._mutating(dry_run),
            ),
        )
        return result

    def _template(self, obj: Mapping[str, Any]) -> JSON:
        return _clean((obj.get("spec") or {}).get("template") or {})

    def _revision_template(self, revision: Mapping[str, Any]) -> JSON:
        return _clean(((revision.get("data") or {}).get("spec") or {}).get("template") or {})

    def get(self, namespace: str, name: str) -> DeploymentSummary:
        """Replicas and readiness of the StatefulSet (its revision is the newest ControllerRevision's)."""
        obj = self.raw(namespace, name)
        summary = summarize_deployment(obj)
        revision = self._current_revision(obj, self._revisions(obj))
        return _with(summary, revision=revision, progressing_reason=None)

    def restart(
        self, namespace: str, name: str, *, dry_run: bool = False, now: dt.datetime | None = None
    ) -> DeploymentSummary:
        """``kubectl rollout restart statefulset``: restartedAt on the pod template (strategic merge)."""
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: _stamp(now)}}}}}
        self._patch(namespace, name, body, "application/strategic-merge-patch+json", dry_run)
        return self.get(namespace, name)

    def rollout_status(self, namespace: str, name: str) -> RolloutStatus:
        """``kubectl rollout status statefulset`` (RollingUpdate strategy), one poll."""
        obj = self.raw(namespace, name)
        return statefulset_status(obj)


def _with(summary: DeploymentSummary, **changes: Any) -> DeploymentSummary:
    values = {**summary.__dict__, **changes}
    return DeploymentSummary(**values)


def statefulset_status(obj: Mapping[str, Any]) -> RolloutStatus:
    """Decide whether a StatefulSet's rolling update is complete, with kubectl's wording."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    name = str(meta.get("name", ""))
    replicas = _int(spec.get("replicas", 1))
    ready, updated = _int(status.get("readyReplicas")), _int(status.get("updatedReplicas"))
    generation, observed = _int(meta.get("generation")), _int(status.get("observedGeneration"))
    rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate")
    complete = False
    if observed == 0 or generation > observed:
        message = "Waiting for statefulset spec update to be observed..."
    elif ready < replicas:
        message = f"Waiting for {replicas - ready} pods to be ready..."
    elif isinstance(rolling, dict):  # kubectl: a rollingUpdate block means a partitioned roll out
        partition = _int(rolling.get("partition"))
        if "partition" in rolling and updated < replicas - partition:
            message = (
                f"Waiting for partitioned roll out to finish: {updated} out of {replicas - partition} "
                "new pods have been updated..."
            )
        else:
            complete = True
            message = f"partitioned roll out complete: {updated} new pods have been updated..."
    elif status.get("updateRevision") != status.get("currentRevision"):
        message = (
            f"waiting for statefulset rolling update to complete {updated} pods at revision "
            f"{status.get('updateRevision')}..."
        )
    else:
        complete = True
        message = (
            f"statefulset rolling update complete {status.get('currentReplicas', updated)} pods at revision "
            f"{status.get('updateRevision')}..."
        )
    return RolloutStatus(
        name, str(meta.get("namespace", "")), complete, False, message, generation, observed,
        replicas, updated, _int(status.get("availableReplicas")), _int(status.get("replicas")),
    )  # fmt: skip


# --- LeaderWorkerSet -----------------------------------------------------------------------------


class LeaderWorkerSetWorkload(_RevisionedWorkload):
    """A LeaderWorkerSet (leaderworkerset.x-k8s.io/v1): groups of one leader and ``size - 1`` workers."""

    kind = "LeaderWorkerSet"
    template_path = "/spec/leaderWorkerTemplate"

    def __init__(self, kube: KubeClient, *, fallback: TemplateFallback | None = None) -> None:
        super().__init__(kube)
        self.fallback = fallback

    def _crd(self) -> Any:
        return k8s.CustomObjectsApi

    def raw(self, namespace: str, name: str) -> JSON:
        """The LeaderWorkerSet as served."""
        self.kube._check_namespace(namespace)
        result: JSON = self.kube._raw(
            f"get leaderworkerset {namespace}/{name}",
            lambda api: self._crd()(api).get_namespaced_custom_object(
                LWS_GROUP, LWS_VERSION, namespace, LWS_PLURAL, name, **self.kube._opts()
            ),
        )
        return result

    def _patch(self, namespace: str, name: str, body: Any, content_type: str, dry_run: bool) -> JSON:
        self.kube._check_namespace(namespace)
        opts = {**self.kube._mutating(dry_run), "_content_type": content_type}
        result: JSON = self.kube._raw(
            f"patch leaderworkerset {namespace}/{name}",
            lambda api: self._crd()(api).patch_namespaced_custom_object(
                LWS_GROUP, LWS_VERSION, namespace, LWS_PLURAL, name, body, **opts
            ),
        )
        return result

    def _scale_read(self, namespace: str, name: str) -> JSON:
        result: JSON = self.kube._raw(
            f"get scale leaderworkerset {namespace}/{name}",
            lambda api: self._crd()(api).get_namespaced_custom_object_scale(
                LWS_GROUP, LWS_VERSION, namespace, LWS_PLURAL, name, **self.kube._opts()
            ),
        )
        return result

    def _scale_write(self, namespace: str, name: str, replicas: int, dry_run: bool) -> JSON:
        opts = {**self.kube._mutating(dry_run), "_content_type": MERGE}
        result: JSON = self.kube._raw(
            f"scale leaderworkerset {namespace}/{name}",
            lambda api: self._crd()(api).patch_namespaced_custom_object_scale(
                LWS_GROUP, LWS_VERSION, namespace, LWS_PLURAL, name, {"spec": {"replicas": replicas}}, **opts
            ),
        )
        return result

    def _template(self, obj: Mapping[str, Any]) -> JSON:
        return _clean((obj.get("spec") or {}).get("leaderWorkerTemplate") or {})

    def _revision_template(self, revision: Mapping[str, Any]) -> JSON:
        return _clean(((revision.get("data") or {}).get("spec") or {}).get("leaderWorkerTemplate") or {})

    def _pod_templates(self, template: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [t for t in (template.get("leaderTemplate"), template.get("workerTemplate")) if t]

    def _pod_selector(self, obj: Mapping[str, Any]) -> str:
        return f"{LWS_NAME_LABEL}={obj['metadata']['name']}"

    def _no_history(self, namespace: str, name: str, obj: JSON) -> tuple[JSON, int, str] | None:
        if self.fallback is None:
            return None
        found = self.fallback(obj)
        if found is None:
            return None
        template, source = found
        return _clean(template), 0, source

    def get(self, namespace: str, name: str) -> DeploymentSummary:
        """Groups (spec.replicas), ready and updated groups, the images of leader and workers."""
        obj = self.raw(namespace, name)
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        progressing = conditions.get("Progressing") or {}
        replicas, ready = _int(spec.get("replicas", 1)), _int(status.get("readyReplicas"))
        return DeploymentSummary(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            replicas=replicas,
            ready_replicas=ready,
            available_replicas=ready,
            updated_replicas=_int(status.get("updatedReplicas")),
            total_replicas=_int(status.get("replicas")),
            unavailable_replicas=max(0, replicas - ready),
            paused=False,
            revision=self._current_revision(obj, self._revisions(obj)),
            generation=_int(meta.get("generation")),
            observed_generation=_int(status.get("observedGeneration", meta.get("generation"))),
            images=self.images_of(self._template(obj)),
            selector=self._pod_selector(obj),
            progressing_reason=progressing.get("reason"),
            resource_version=str(meta.get("resourceVersion", "")),
        )

    def group_size(self, namespace: str, name: str) -> int:
        """Pods per group (leader included)."""
        spec = self.raw(namespace, name).get("spec") or {}
        return _int((spec.get("leaderWorkerTemplate") or {}).get("size", 1)) or 1

    def restart(
        self, namespace: str, name: str, *, dry_run: bool = False, now: dt.datetime | None = None
    ) -> DeploymentSummary:
        """Stamp restartedAt on the worker (and leader) template: LWS rolls every group."""
        obj = self.raw(namespace, name)
        lwt = (obj.get("spec") or {}).get("leaderWorkerTemplate") or {}
        stamp = {"metadata": {"annotations": {RESTARTED_AT: _stamp(now)}}}
        body: JSON = {"spec": {"leaderWorkerTemplate": {"workerTemplate": stamp}}}
        if lwt.get("leaderTemplate"):
            body["spec"]["leaderWorkerTemplate"]["leaderTemplate"] = stamp
        self._patch(namespace, name, body, MERGE, dry_run)
        return self.get(namespace, name)

    def rollout_status(self, namespace: str, name: str) -> RolloutStatus:
        """Complete when every group is updated and ready and no update is in progress."""
        obj = self.raw(namespace, name)
        return leaderworkerset_status(obj)


def leaderworkerset_status(obj: Mapping[str, Any]) -> RolloutStatus:
    """Rolled out: generation observed, no UpdateInProgress, every group updated and ready."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    name = str(meta.get("name", ""))
    replicas = _int(spec.get("replicas", 1))
    ready, updated = _int(status.get("readyReplicas")), _int(status.get("updatedReplicas"))
    generation = _int(meta.get("generation"))
    observed = _int(status.get("observedGeneration", generation))
    in_progress = any(
        c.get("type") == "UpdateInProgress" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    complete = False
    if generation > observed:
        message = "Waiting for leaderworkerset spec update to be observed..."
    elif updated < replicas or in_progress:
        message = (
            f'Waiting for leaderworkerset "{name}" rollout to finish: {updated} out of {replicas} '
            "groups have been updated..."
        )
    elif ready < replicas:
        message = (
            f'Waiting for leaderworkerset "{name}" rollout to finish: {ready} of {replicas} groups ready...'
        )
    else:
        complete = True
        message = f'leaderworkerset "{name}" successfully rolled out'
    return RolloutStatus(
        name, str(meta.get("namespace", "")), complete, False, message, generation, observed,
        replicas, updated, ready, _int(status.get("replicas")),
    )  # fmt: skip


# --- Argo Rollout --------------------------------------------------------------------------------


class ArgoRolloutWorkload(RolloutWorkload):
    """The Argo adapter's Rollout workload, plus what the generic steps read back (raw, restart stamp)."""

    def raw(self, namespace: str, name: str) -> JSON:
        """The Rollout as served."""
        return self.argo.rollout_json(namespace, name)

    def restart_marker(self, namespace: str, name: str) -> str | None:
        """``spec.restartAt`` (what ``kubectl argo rollouts restart`` sets)."""
        value = (self.raw(namespace, name).get("spec") or {}).get("restartAt")
        return str(value) if value else None


# --- the registry --------------------------------------------------------------------------------


def workload_for(kube: KubeClient, kind: str | None, *, fallback: TemplateFallback | None = None) -> Any:
    """The implementation for ``kind`` (None or empty means Deployment); KubeRejected for an unknown kind."""
    kind = kind or "Deployment"
    if kind == "Deployment":
        return DeploymentWorkload(kube)
    if kind == "StatefulSet":
        return StatefulSetWorkload(kube)
    if kind == "LeaderWorkerSet":
        return LeaderWorkerSetWorkload(kube, fallback=fallback)
    if kind == "Rollout":
        return ArgoRolloutWorkload(kube)
    raise KubeRejected(f"unknown workload kind {kind!r} (known: {', '.join(KINDS)})")
