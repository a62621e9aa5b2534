"""Argo Rollouts adapter: ``kubectl argo rollouts`` semantics through the ``kubernetes`` client.

Every call goes through :class:`~bot.integrations.kube.KubeClient` (its error mapping, namespace allow-list,
field manager, timeouts and dry-run flag) and ``CustomObjectsApi``; the patches are the plugin's
(pkg/kubectl-argo-rollouts/cmd/{abort,retry,promote,pause,undo,restart}):

==============  ==========================================================================================
abort           merge ``{"status":{"abort":true}}`` to ``/status``; to the main resource only on a 404
retry           merge ``{"status":{"abort":false}}`` the same way
pause           merge ``{"spec":{"paused":true}}`` (main resource)
restart         merge ``{"spec":{"restartAt":"<RFC 3339 UTC>"}}`` (main resource)
promote         after a GET: ``{"spec":{"paused":false}}`` if paused; ``{"status":{"pauseConditions":null}}``
                if any; else (canary) ``{"status":{"pauseConditions":null,"currentStepIndex":N+1}}``
                (capped at the step count); status patch first, then spec; one unified patch on a 404
promote --full  ``{"status":{"promoteFull":true}}`` only when ``currentPodHash != stableRS``
undo            the Rollout's ReplicaSets by ``rollout.argoproj.io/revision``; N or the second highest; drop
                ``rollouts-pod-template-hash``; JSON patch ``replace /spec/template``; no-op when equal;
                ``spec.workloadRef`` → the referenced Deployment is patched instead
==============  ==========================================================================================
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from bot.integrations.kube import (
    JSON,
    DeploymentSummary,
    KubeClient,
    KubeNotFound,
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
    same_template,
    summarize_pod,
)

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"
REVISION = "rollout.argoproj.io/revision"
HASH_LABEL = "rollouts-pod-template-hash"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


# --- value objects ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisRunSummary:
    """One AnalysisRun of a Rollout and its result."""

    name: str
    phase: str
    """Pending | Running | Successful | Failed | Error | Inconclusive."""
    message: str
    pod_hash: str | None
    failed_metrics: tuple[str, ...]
    created: dt.datetime | None


@dataclass(frozen=True)
class RolloutState:
    """What ``kubectl argo rollouts get rollout`` shows, in the terms a runbook needs."""

    name: str
    namespace: str
    strategy: str
    """canary | blueGreen."""
    phase: str
    """Healthy | Progressing | Paused | Degraded (as the controller reports it)."""
    message: str
    aborted: bool
    paused: bool
    """spec.paused (a person paused it)."""
    pause_reasons: tuple[str, ...]
    step_index: int | None
    step_count: int
    canary_weight: int
    stable_hash: str | None
    canary_hash: str | None
    stable_images: tuple[str, ...]
    canary_images: tuple[str, ...]
    replicas: int
    ready_replicas: int
    available_replicas: int
    updated_replicas: int
    generation: int
    observed_generation: int
    current_step_analysis: str | None
    """The phase of the current step's AnalysisRun (canary.currentStepAnalysisRunStatus.status)."""
    analysis_runs: tuple[AnalysisRunSummary, ...]
    workload_ref: Mapping[str, str] | None
    revision: int | None

    @property
    def fully_promoted(self) -> bool:
        """The stable ReplicaSet is the current one."""
        return bool(self.stable_hash) and self.stable_hash == self.canary_hash

    @property
    def canary_in_progress(self) -> bool:
        """A canary (or preview) ReplicaSet differs from stable and the update has not been aborted."""
        return bool(self.canary_hash) and not self.fully_promoted and not self.aborted

    @property
    def failed_analysis(self) -> AnalysisRunSummary | None:
        """The newest AnalysisRun that ended Failed, Error or Inconclusive."""
        bad = [a for a in self.analysis_runs if a.phase in ("Failed", "Error", "Inconclusive")]
        return bad[-1] if bad else None

    def as_output(self) -> dict[str, Any]:
        """JSON-able, for step outputs and previews."""
        failed = self.failed_analysis
        return {
            "kind": "Rollout",
            "strategy": self.strategy,
            "phase": self.phase,
            "message": self.message,
            "aborted": self.aborted,
            "paused": self.paused,
            "pause_reasons": list(self.pause_reasons),
            "step_index": self.step_index,
            "step_count": self.step_count,
            "canary_weight": self.canary_weight,
            "stable_hash": self.stable_hash,
            "canary_hash": self.canary_hash,
            "stable_images": list(self.stable_images),
            "canary_images": list(self.canary_images),
            "fully_promoted": self.fully_promoted,
            "canary_in_progress": self.canary_in_progress,
            "replicas": self.replicas,
            "ready_replicas": self.ready_replicas,
            "revision": self.revision,
            "current_step_analysis": self.current_step_analysis,
            "analysis_runs": [
                {
                    "name": a.name,
                    "phase": a.phase,
                    "message": a.message,
                    "failed_metrics": list(a.failed_metrics),
                }
                for a in self.analysis_runs[-5:]
            ],
            "failed_analysis": failed.name if failed else None,
            "failed_analysis_message": failed.message if failed else None,
        }


@dataclass(frozen=True)
class PatchSent:
    """One patch the adapter sent (or would send, in a dry run)."""

    subresource: str | None
    content_type: str
    body: Any


@dataclass(frozen=True)
class ActionResult:
    """Outcome of abort / retry / pause / promote / restart."""

    name: str
    namespace: str
    action: str
    changed: bool
    dry_run: bool
    patches: tuple[PatchSent, ...]
    detail: str


# --- summaries -----------------------------------------------------------------------------------


def _steps(obj: Mapping[str, Any]) -> list[Any]:
    canary = ((obj.get("spec") or {}).get("strategy") or {}).get("canary") or {}
    return list(canary.get("steps") or [])


def _strategy(obj: Mapping[str, Any]) -> str:
    strategy = (obj.get("spec") or {}).get("strategy") or {}
    return "blueGreen" if "blueGreen" in strategy else "canary"


def _canary_weight(obj: Mapping[str, Any]) -> int:
    """``status.canary.weights.canary.weight`` (traffic routing); without a traffic router Argo writes no
    weights, and the weight is the plugin's "SetWeight": the last ``setWeight`` step before
    ``currentStepIndex`` while an update is in progress (0 once aborted or fully promoted)."""
    status = obj.get("status") or {}
    weights = (status.get("canary") or {}).get("weights") or {}
    if weights:
        return _int((weights.get("canary") or {}).get("weight"))
    if (
        status.get("abort")
        or not status.get("currentPodHash")
        or status.get("currentPodHash") == status.get("stableRS")
    ):
        return 0
    weight = 0
    for step in _steps(obj)[: _int(status.get("currentStepIndex"))]:
        if isinstance(step, Mapping) and "setWeight" in step:
            weight = _int(step["setWeight"])
    return weight


def summarize_analysis_run(obj: Mapping[str, Any]) -> AnalysisRunSummary:
    """Build an AnalysisRunSummary from an AnalysisRun's JSON."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    failed = tuple(
        str(m.get("name", ""))
        for m in status.get("metricResults") or []
        if m.get("phase") in ("Failed", "Error", "Inconclusive")
    )
    return AnalysisRunSummary(
        name=str(meta.get("name", "")),
        phase=str(status.get("phase") or "Pending"),
        message=str(status.get("message") or ""),
        pod_hash=(meta.get("labels") or {}).get(HASH_LABEL),
        failed_metrics=failed,
        created=_parse_time(meta.get("creationTimestamp")),
    )


def summarize_rollout(
    obj: Mapping[str, Any],
    replicasets: list[JSON] | None = None,
    analysis_runs: list[JSON] | None = None,
) -> RolloutState:
    """Build a RolloutState from a Rollout's JSON (plus its ReplicaSets and AnalysisRuns when known)."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    by_hash = {(rs.get("metadata") or {}).get("labels", {}).get(HASH_LABEL): rs for rs in replicasets or []}
    stable, canary = status.get("stableRS"), status.get("currentPodHash")

    def images(pod_hash: str | None) -> tuple[str, ...]:
        rs = by_hash.get(pod_hash)
        return _images(((rs or {}).get("spec") or {}).get("template") or {}) if rs else ()

    steps = _steps(obj)
    index = status.get("currentStepIndex")
    runs = sorted(
        (summarize_analysis_run(a) for a in analysis_runs or []),
        key=lambda a: (a.created or dt.datetime.min.replace(tzinfo=dt.UTC), a.name),
    )
    revision = (meta.get("annotations") or {}).get(REVISION)
    ref = spec.get("workloadRef")
    return RolloutState(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        strategy=_strategy(obj),
        phase=str(status.get("phase") or "Progressing"),
        message=str(status.get("message") or ""),
        aborted=bool(status.get("abort")),
        paused=bool(spec.get("paused")),
        pause_reasons=tuple(str(p.get("reason", "")) for p in status.get("pauseConditions") or []),
        step_index=_int(index) if index is not None and steps else None,
        step_count=len(steps),
        canary_weight=_canary_weight(obj),
        stable_hash=stable,
        canary_hash=canary,
        stable_images=images(stable),
        canary_images=images(canary),
        replicas=_int(spec.get("replicas", 1)),
        ready_replicas=_int(status.get("readyReplicas")),
        available_replicas=_int(status.get("availableReplicas")),
        updated_replicas=_int(status.get("updatedReplicas")),
        generation=_int(meta.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        current_step_analysis=((status.get("canary") or {}).get("currentStepAnalysisRunStatus") or {}).get(
            "status"
        ),
        analysis_runs=tuple(runs),
        workload_ref={k: str(v) for k, v in ref.items()} if isinstance(ref, Mapping) else None,
        revision=_int(revision) if revision is not None else None,
    )


def promote_patches(obj: Mapping[str, Any], *, full: bool = False) -> tuple[JSON | None, JSON | None]:
    """(spec patch, status patch) that ``kubectl argo rollouts promote [--full]`` sends for this Rollout."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if full:
        if status.get("currentPodHash") != status.get("stableRS"):
            return None, {"status": {"promoteFull": True}}
        return None, None
    spec_patch: JSON | None = {"spec": {"paused": False}} if spec.get("paused") else None
    steps = _steps(obj)
    canary = _strategy(obj) == "canary"
    index = min(_int(status.get("currentStepIndex")) + 1, len(steps))
    inconclusive = (
        canary
        and ((status.get("canary") or {}).get("currentStepAnalysisRunStatus") or {}).get("status")
        == "Inconclusive"
    )
    status_patch: JSON | None = None
    if inconclusive and status.get("pauseConditions") and status.get("controllerPause") and steps:
        status_patch = {
            "status": {"pauseConditions": None, "controllerPause": False, "currentStepIndex": index}
        }
    elif status.get("pauseConditions"):
        status_patch = {"status": {"pauseConditions": None}}
    elif canary and steps:
        status_patch = {"status": {"pauseConditions": None, "currentStepIndex": index}}
    return spec_patch, status_patch


# --- the adapter ---------------------------------------------------------------------------------


class ArgoRollouts:
    """Rollout status and the plugin's actions, over a :class:`KubeClient`'s connection and policy."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    # -- plumbing ---------------------------------------------------------------------------------

    def _read(self, namespace: str, name: str) -> JSON:
        self.kube._check_namespace(namespace)
        result: JSON = self.kube._raw(
            f"get rollout {namespace}/{name}",
            lambda api: k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, **self.kube._opts()
            ),
        )
        return result

    def _patch(
        self,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        content_type: str = MERGE,
        dry_run: bool = False,
    ) -> JSON:
        self.kube._check_namespace(namespace)
        crd = k8s.CustomObjectsApi
        opts = {**self.kube._mutating(dry_run), "_content_type": content_type}
        what = f"patch rollout {namespace}/{name}" + (f"/{subresource}" if subresource else "")
        if subresource == "status":
            result: JSON = self.kube._raw(
                what,
                lambda api: crd(api).patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, name, body, **opts
                ),
            )
        else:
            result = self.kube._raw(
                what,
                lambda api: crd(api).patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, body, **opts
                ),
            )
        return result

    def _status_then_main(
        self, namespace: str, name: str, body: JSON, *, dry_run: bool
    ) -> tuple[PatchSent, ...]:
        """The plugin's abort/retry: the status subresource, the main resource only when it is 404."""
        try:
            self._patch(namespace, name, body, subresource="status", dry_run=dry_run)
            return (PatchSent("status", MERGE, body),)
        except KubeNotFound:
            self._patch(namespace, name, body, dry_run=dry_run)
            return (PatchSent("status", MERGE, body), PatchSent(None, MERGE, body))

    def _list(self, namespace: str, plural: str, selector: str | None) -> list[JSON]:
        if plural == "replicasets":
            listing: JSON = self.kube._raw(
                f"list replicasets in {namespace}",
                lambda api: k8s.AppsV1Api(api).list_namespaced_replica_set(
                    namespace, label_selector=selector, **self.kube._opts()
                ),
            )
        else:
            listing = self.kube._raw(
                f"list {plural} in {namespace}",
                lambda api: k8s.CustomObjectsApi(api).list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, label_selector=selector, **self.kube._opts()
                ),
            )
        return list(listing.get("items") or [])

    def _owned(self, rollout: JSON, plural: str) -> list[JSON]:
        meta = rollout["metadata"]
        selector = label_selector_string((rollout.get("spec") or {}).get("selector")) or None
        items = self._list(meta["namespace"], plural, selector if plural == "replicasets" else None)
        return [
            item
            for item in items
            if any(
                ref.get("uid") == meta.get("uid") and ref.get("controller")
                for ref in (item.get("metadata") or {}).get("ownerReferences") or []
            )
        ]

    # -- reads ------------------------------------------------------------------------------------

    def rollout_json(self, namespace: str, name: str) -> JSON:
        """The Rollout as the server returned it."""
        return self._read(namespace, name)

    def status(self, namespace: str, name: str) -> RolloutState:
        """Phase, step, weights, stable vs canary ReplicaSet and image, analysis runs."""
        rollout = self._read(namespace, name)
        return summarize_rollout(
            rollout, self._owned(rollout, "replicasets"), self._owned(rollout, "analysisruns")
        )

    def history(self, namespace: str, name: str) -> list[RevisionInfo]:
        """The Rollout's revisions (its ReplicaSets by ``rollout.argoproj.io/revision``), oldest first."""
        rollout = self._read(namespace, name)
        out = []
        for rs in self._owned(rollout, "replicasets"):
            meta = rs["metadata"]
            template = (rs.get("spec") or {}).get("template") or {}
            out.append(
                RevisionInfo(
                    revision=_int((meta.get("annotations") or {}).get(REVISION)),
                    replicaset=str(meta["name"]),
                    created=_parse_time(meta.get("creationTimestamp")),
                    images=_images(template),
                    change_cause=(meta.get("annotations") or {}).get("kubernetes.io/change-cause"),
                    replicas=_int((rs.get("spec") or {}).get("replicas")),
                    template=template,
                )
            )
        return sorted(out, key=lambda r: r.revision)

    # -- actions ----------------------------------------------------------------------------------

    def abort(self, namespace: str, name: str, *, dry_run: bool = False) -> ActionResult:
        """``kubectl argo rollouts abort``: back to the stable ReplicaSet."""
        body = {"status": {"abort": True}}
        sent = self._status_then_main(namespace, name, body, dry_run=dry_run)
        return ActionResult(name, namespace, "abort", True, dry_run, sent, "abort requested")

    def retry(self, namespace: str, name: str, *, dry_run: bool = False) -> ActionResult:
        """``kubectl argo rollouts retry rollout``: clear the abort so the update starts over."""
        body = {"status": {"abort": False}}
        sent = self._status_then_main(namespace, name, body, dry_run=dry_run)
        return ActionResult(name, namespace, "retry", True, dry_run, sent, "retry requested")

    def pause(self, namespace: str, name: str, *, dry_run: bool = False) -> ActionResult:
        """``kubectl argo rollouts pause``."""
        body = {"spec": {"paused": True}}
        self._patch(namespace, name, body, dry_run=dry_run)
        return ActionResult(
            name, namespace, "pause", True, dry_run, (PatchSent(None, MERGE, body),), "paused"
        )

    def restart(
        self, namespace: str, name: str, *, dry_run: bool = False, now: dt.datetime | None = None
    ) -> ActionResult:
        """``kubectl argo rollouts restart``: set ``spec.restartAt`` (the controller restarts the pods)."""
        stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"restartAt": stamp}}
        self._patch(namespace, name, body, dry_run=dry_run)
        return ActionResult(
            name, namespace, "restart", True, dry_run, (PatchSent(None, MERGE, body),), f"restartAt {stamp}"
        )

    def promote(
        self, namespace: str, name: str, *, full: bool = False, dry_run: bool = False
    ) -> ActionResult:
        """``kubectl argo rollouts promote [--full]``: status patch first, then spec (unified on a 404)."""
        rollout = self._read(namespace, name)
        spec_patch, status_patch = promote_patches(rollout, full=full)
        action = "promote --full" if full else "promote"
        sent: list[PatchSent] = []
        if status_patch is not None:
            try:
                self._patch(namespace, name, status_patch, subresource="status", dry_run=dry_run)
                sent.append(PatchSent("status", MERGE, status_patch))
            except KubeNotFound:
                sent.append(PatchSent("status", MERGE, status_patch))
                spec_patch = {**(spec_patch or {}), **status_patch}
        if spec_patch is not None:
            self._patch(namespace, name, spec_patch, dry_run=dry_run)
            sent.append(PatchSent(None, MERGE, spec_patch))
        detail = "already fully promoted" if not sent else "promoted"
        return ActionResult(name, namespace, action, bool(sent), dry_run, tuple(sent), detail)

    def undo(
        self, namespace: str, name: str, to_revision: int | None = None, *, dry_run: bool = False
    ) -> UndoResult:
        """``kubectl argo rollouts undo [--to-revision N]``: JSON patch of ``/spec/template``."""
        rollout = self._read(namespace, name)
        by_revision = {
            _int((rs["metadata"].get("annotations") or {}).get(REVISION)): rs
            for rs in self._owned(rollout, "replicasets")
        }
        current = _int((rollout["metadata"].get("annotations") or {}).get(REVISION)) or max(
            by_revision, default=0
        )
        if to_revision:
            if to_revision not in by_revision:
                raise NoRolloutHistory(f"unable to find specified revision {to_revision} in history")
        else:
            ordered = sorted(by_revision)
            if len(ordered) < 2:
                raise NoRolloutHistory(f"no revision found for rollout {namespace}/{name}")
            to_revision = ordered[-2]
        template = json.loads(json.dumps(by_revision[to_revision]["spec"]["template"]))
        ((template.get("metadata") or {}).get("labels") or {}).pop(HASH_LABEL, None)
        ref = (rollout.get("spec") or {}).get("workloadRef")
        if ref:
            return self._undo_workload(rollout, ref, template, current, to_revision, dry_run)
        changed = not same_template(template, (rollout.get("spec") or {}).get("template") or {})
        if changed:
            patch = [{"op": "replace", "path": "/spec/template", "value": template}]
            self._patch(namespace, name, patch, content_type=JSON_PATCH, dry_run=dry_run)
        return UndoResult(name, namespace, current, to_revision, changed, dry_run, _images(template))

    def _undo_workload(
        self, rollout: JSON, ref: Mapping[str, Any], template: JSON, current: int, to: int, dry_run: bool
    ) -> UndoResult:
        meta = rollout["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if ref.get("kind") != "Deployment":
            raise KubeRejected(
                f"undo {namespace}/{name}: workloadRef kind {ref.get('kind')!r} is not supported"
            )
        target = str(ref.get("name"))
        workload = self.kube.deployment_json(namespace, target)
        changed = not same_template(template, (workload.get("spec") or {}).get("template") or {})
        if changed:
            patch = [{"op": "replace", "path": "/spec/template", "value": template}]
            self.kube._raw(
                f"undo rollout {namespace}/{name} via deployment {target}",
                lambda api: k8s.AppsV1Api(api).patch_namespaced_deployment(
                    target,
                    namespace,
                    patch,
                    _content_type=JSON_PATCH,
                    **self.kube._mutating(dry_run),
                ),
            )
        return UndoResult(name, namespace, current, to, changed, dry_run, _images(template))


# --- the Workload protocol (H16b's bot.integrations.workloads) ---------------------------------------


class RolloutWorkload:
    """An Argo Rollout behind the generic Workload methods (get, scale, restart, status, undo, pods …)."""

    kind = "Rollout"

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.argo = ArgoRollouts(kube)

    def get(self, namespace: str, name: str) -> DeploymentSummary:
        """The Rollout summarised like a Deployment (images of spec.template, replica counts)."""
        obj = self.argo.rollout_json(namespace, name)
        state = summarize_rollout(obj)
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        return DeploymentSummary(
            name=state.name,
            namespace=state.namespace,
            replicas=state.replicas,
            ready_replicas=state.ready_replicas,
            available_replicas=state.available_replicas,
            updated_replicas=state.updated_replicas,
            total_replicas=_int(status.get("replicas")),
            unavailable_replicas=max(0, _int(status.get("replicas")) - state.available_replicas),
            paused=state.paused,
            revision=state.revision,
            generation=state.generation,
            observed_generation=state.observed_generation,
            images=_images(spec.get("template") or {}),
            selector=label_selector_string(spec.get("selector")),
            progressing_reason=state.phase,
            resource_version=str((obj.get("metadata") or {}).get("resourceVersion", "")),
        )

    def scale(self, namespace: str, name: str, replicas: int, *, dry_run: bool = False) -> ScaleResult:
        """Set spec.replicas through the Rollout's scale subresource (merge patch)."""
        if replicas < 0:
            raise KubeRejected(f"scale {namespace}/{name}: replicas must be >= 0, got {replicas}")
        self.kube._check_namespace(namespace)
        crd = k8s.CustomObjectsApi
        before: JSON = self.kube._raw(
            f"get scale rollout {namespace}/{name}",
            lambda api: crd(api).get_namespaced_custom_object_scale(
                GROUP, VERSION, namespace, PLURAL, name, **self.kube._opts()
            ),
        )
        after: JSON = self.kube._raw(
            f"scale rollout {namespace}/{name}",
            lambda api: crd(api).patch_namespaced_custom_object_scale(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"spec": {"replicas": replicas}},
                _content_type=MERGE,
                **self.kube._mutating(dry_run),
            ),
        )
        return ScaleResult(
            name,
            namespace,
            _int(before["spec"].get("replicas")),
            _int(after["spec"].get("replicas")),
            dry_run,
        )

    def restart(
        self, namespace: str, name: str, *, dry_run: bool = False, now: dt.datetime | None = None
    ) -> DeploymentSummary:
        """``kubectl argo rollouts restart``."""
        self.argo.restart(namespace, name, dry_run=dry_run, now=now)
        return self.get(namespace, name)

    def rollout_status(self, namespace: str, name: str) -> RolloutStatus:
        """Complete when fully promoted, healthy and every replica available."""
        s = self.argo.status(namespace, name)
        complete = s.fully_promoted and s.phase == "Healthy" and s.available_replicas >= s.replicas
        message = (
            f'rollout "{s.name}" successfully rolled out'
            if complete
            else f'rollout "{s.name}" is {s.phase}' + (f": {s.message}" if s.message else "")
        )
        return RolloutStatus(
            name=s.name,
            namespace=s.namespace,
            complete=complete,
            deadline_exceeded=s.phase == "Degraded",
            message=message,
            generation=s.generation,
            observed_generation=s.observed_generation,
            replicas=s.replicas,
            updated_replicas=s.updated_replicas,
            available_replicas=s.available_replicas,
            total_replicas=s.replicas,
        )

    def history(self, namespace: str, name: str) -> list[RevisionInfo]:
        """Revisions from the Rollout's ReplicaSets, oldest first."""
        return self.argo.history(namespace, name)

    def undo(
        self, namespace: str, name: str, to_revision: int | None = None, *, dry_run: bool = False
    ) -> UndoResult:
        """``kubectl argo rollouts undo``."""
        return self.argo.undo(namespace, name, to_revision, dry_run=dry_run)

    def pods(self, namespace: str, name: str) -> list[PodSummary]:
        """Pods matching the Rollout's selector."""
        obj = self.argo.rollout_json(namespace, name)
        selector = label_selector_string((obj.get("spec") or {}).get("selector"))
        listing: JSON = self.kube._raw(
            f"list pods of rollout {namespace}/{name}",
            lambda api: k8s.CoreV1Api(api).list_namespaced_pod(
                namespace, label_selector=selector, **self.kube._opts()
            ),
        )
        return [summarize_pod(p) for p in listing.get("items") or []]
