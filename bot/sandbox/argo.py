"""An Argo Rollouts controller for the emulated cluster (``argoproj.io/v1alpha1`` Rollout and AnalysisRun).

Registered with :meth:`Cluster.register_controller`, it runs on every reconcile pass and does, in miniature,
what argo-rollouts' controller does for the fields the bot reads and the patches ``kubectl argo rollouts``
sends:

* one ReplicaSet per pod template, labelled ``rollouts-pod-template-hash`` and annotated
  ``rollout.argoproj.io/revision`` (the Rollout carries the current revision too); the first template
  becomes ``status.stableRS``;
* **canary**: walks ``spec.strategy.canary.steps`` from ``status.currentStepIndex`` — ``setWeight`` (canary
  replicas ``ceil(replicas * weight / 100)``; the stable keeps the rest, or every replica with
  ``trafficRouting``), ``pause`` (indefinite, or ``duration`` on the cluster clock: a ``CanaryPauseStep``
  pause condition with ``controllerPause``), ``analysis`` (an AnalysisRun owned by the Rollout); at the end
  the canary becomes stable and the old ReplicaSets scale to 0;
* **analysis** fails when a canary pod is not Ready (the sandbox marks a broken image with
  :meth:`Cluster.script_pods`, as for Deployments) or runs one of ``bad_images``; a failed run aborts the
  update as Argo does: ``status.abort``, weight 0, the canary scaled to 0, phase ``Degraded``,
  ``RolloutAborted: …`` message;
* the plugin's patches: ``status.abort`` (back to stable; clearing it — retry — restarts at step 0),
  ``spec.paused``, ``status.pauseConditions: null`` with ``controllerPause`` (promote past a pause),
  ``status.currentStepIndex`` (promote past any step), ``status.promoteFull``, ``spec.restartAt`` (pods
  created before it are replaced), a template equal to the stable one (undo: back to stable at once);
* **blue-green**: a preview ReplicaSet at full size next to the active one, ``BlueGreenPause`` when
  ``autoPromotionEnabled: false``, promotion swaps ``stableRS``; ``status.blueGreen`` selectors;
* status as the real controller reports it: phase/message (Healthy, Progressing, Paused, Degraded),
  ``currentPodHash``, ``stableRS``, ``currentStepIndex``, ``canary.weights``,
  ``canary.currentStepAnalysisRunStatus``, replica counts, ``selector``, ``observedGeneration`` (a string,
  as Argo writes it) and Available/Progressing/Healthy/Paused conditions.

Not emulated: experiments, traffic routers, scale-down delays, AnalysisTemplates (an analysis step's
templates name the run's metrics), anti-affinity, HPA.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from bot.sandbox.cluster import Cluster, _pod_ready, _strip_hash, selector_string, template_hash

JSON = dict[str, Any]
HASH = "rollouts-pod-template-hash"
REVISION = "rollout.argoproj.io/revision"
COMPONENT = "rollouts-controller"
API_VERSION = "argoproj.io/v1alpha1"
_DURATION = re.compile(r"^(\d+)(s|m|h)?$")

#: An analysis decision for a canary: (phase, message) from the Rollout and the canary's pods.
Analysis = Callable[[JSON, list[JSON]], tuple[str, str]]


def parse_duration(value: Any) -> float:
    """Seconds of an Argo pause duration: an int (seconds) or ``"30s"``, ``"5m"``, ``"1h"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError(f"invalid pause duration {value!r}")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]


def canary_rollout(
    name: str,
    template: JSON,
    *,
    replicas: int,
    steps: Iterable[JSON],
    selector: JSON | None = None,
    traffic_routing: bool = False,
) -> JSON:
    """A canary Rollout body (the shape of the guide's "Canary Deployment with Traffic Splitting")."""
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    canary: JSON = {"steps": list(steps)}
    if traffic_routing:
        canary["trafficRouting"] = {"nginx": {"stableIngress": f"{name}-stable"}}
        canary["canaryService"], canary["stableService"] = f"{name}-canary", f"{name}-stable"
    return {
        "apiVersion": API_VERSION,
        "kind": "Rollout",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 10,
            "selector": selector or {"matchLabels": labels},
            "template": copy.deepcopy(template),
            "strategy": {"canary": canary},
        },
    }


class RolloutController:
    """The emulated argo-rollouts controller; ``RolloutController(cluster)`` registers it."""

    def __init__(
        self, cluster: Cluster, *, bad_images: Iterable[str] = (), analysis: Analysis | None = None
    ) -> None:
        self.cluster = cluster
        self.bad_images = set(bad_images)
        self.analysis = analysis
        cluster.register_controller("Rollout", self.sync)

    # -- one pass over one Rollout ----------------------------------------------------------------

    def sync(self, key: tuple[str, str]) -> None:
        """Reconcile one Rollout (called with the cluster lock held)."""
        c = self.cluster
        ro = copy.deepcopy(c._objects["Rollout"][key])
        template = self._template(ro)
        if template is None:
            return
        pod_hash = template_hash(_strip_hash(template))
        rs = self._ensure_replicaset(ro, template, pod_hash)
        revision = (rs["metadata"].get("annotations") or {}).get(REVISION, "1")
        ro = self._annotate(ro, revision)
        status = copy.deepcopy(ro.get("status") or {})
        self._track_update(ro, status, pod_hash)
        strategy = (ro.get("spec") or {}).get("strategy") or {}
        if "blueGreen" in strategy:
            counts = self._blue_green(ro, status, pod_hash, strategy["blueGreen"] or {})
        else:
            counts = self._canary(ro, status, pod_hash)
        self._restart(ro, status)
        self._finish_status(ro, status, pod_hash, counts, revision)
        if status != (ro.get("status") or {}):
            ro["status"] = status
            c._put("Rollout", ro)

    def _template(self, ro: JSON) -> JSON | None:
        spec = ro.get("spec") or {}
        ref = spec.get("workloadRef")
        if ref and ref.get("kind") == "Deployment":
            dep = self.cluster._objects["Deployment"].get((ro["metadata"]["namespace"], str(ref.get("name"))))
            return copy.deepcopy(dep["spec"]["template"]) if dep else None
        template = spec.get("template")
        return copy.deepcopy(template) if isinstance(template, dict) else None

    def _annotate(self, ro: JSON, revision: str) -> JSON:
        annotations = ro["metadata"].setdefault("annotations", {})
        if annotations.get(REVISION) != revision:
            annotations[REVISION] = revision
            ro = self.cluster._put("Rollout", ro)
            ro = copy.deepcopy(ro)
        return ro

    def _track_update(self, ro: JSON, status: JSON, pod_hash: str) -> None:
        """A new template (or a retry) starts the steps over; the first template is stable at once."""
        steps = _steps(ro)
        if not status.get("stableRS"):
            status["stableRS"] = pod_hash
        if status.get("currentPodHash") != pod_hash:
            status["currentPodHash"] = pod_hash
            for field in ("abort", "abortedAt", "pauseConditions", "controllerPause", "promoteFull"):
                status.pop(field, None)
            status.get("canary", {}).pop("currentStepAnalysisRunStatus", None)
            status["currentStepIndex"] = len(steps) if pod_hash == status["stableRS"] else 0
            self._event(ro, "Normal", "RolloutUpdated", f"Rollout updated to revision {_rev(ro)}")
        elif status.get("abort") and not status.get("abortedAt") and pod_hash != status["stableRS"]:
            # ``kubectl argo rollouts abort``: back to stable, the steps start over on a retry
            status["abortedAt"] = self.cluster._ts()
            status["currentStepIndex"] = 0
            status.pop("pauseConditions", None)
            status.pop("controllerPause", None)
            self._event(ro, "Warning", "RolloutAborted", f"Rollout aborted update to revision {_rev(ro)}")
        elif not status.get("abort") and status.get("abortedAt"):
            # retry: ``status.abort`` cleared by a person
            status.pop("abortedAt", None)
            status.get("canary", {}).pop("currentStepAnalysisRunStatus", None)
            status["currentStepIndex"] = 0
            self._event(ro, "Normal", "RolloutRetried", "Rollout retried")
        if pod_hash == status["stableRS"]:
            status["currentStepIndex"] = len(steps)
            status.pop("abort", None)
            status.pop("abortedAt", None)
            status.pop("pauseConditions", None)
            status.pop("controllerPause", None)
        if status.get("promoteFull") and not status.get("abort"):
            status["stableRS"] = pod_hash
            status["currentStepIndex"] = len(steps)
            for field in ("promoteFull", "pauseConditions", "controllerPause"):
                status.pop(field, None)
            self._event(ro, "Normal", "RolloutCompleted", f"Rollout fully promoted to revision {_rev(ro)}")

    # -- canary -----------------------------------------------------------------------------------

    def _canary(self, ro: JSON, status: JSON, pod_hash: str) -> dict[str, int]:
        steps, spec = _steps(ro), ro.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        stable = status["stableRS"]
        if pod_hash != stable and not status.get("abort") and not spec.get("paused"):
            self._walk(ro, status, pod_hash, steps)
            if status["currentStepIndex"] >= len(steps) and not status.get("abort"):
                status["stableRS"] = stable = pod_hash
                self._event(
                    ro, "Normal", "RolloutCompleted", f"Rollout completed update to revision {_rev(ro)}"
                )
        canary = (status.get("canary") or {}).copy()
        weight = (
            0 if pod_hash == stable or status.get("abort") else _weight(steps, status["currentStepIndex"])
        )
        routed = "trafficRouting" in ((spec.get("strategy") or {}).get("canary") or {})
        canary_replicas = 0 if pod_hash == stable else math.ceil(replicas * weight / 100)
        stable_replicas = replicas if routed or pod_hash == stable else replicas - canary_replicas
        if routed:  # Argo writes weights only through a traffic router; else the replicas are the split
            canary["weights"] = {
                "canary": {"podTemplateHash": pod_hash, "weight": weight},
                "stable": {"podTemplateHash": stable, "weight": 100 - weight},
            }
        status["canary"] = canary
        wanted = {pod_hash: canary_replicas, stable: stable_replicas}
        return self._scale(ro, wanted, others=0)

    def _walk(self, ro: JSON, status: JSON, pod_hash: str, steps: list[JSON]) -> None:
        index = min(int(status.get("currentStepIndex") or 0), len(steps))
        while index < len(steps):
            step = steps[index]
            if "pause" in step:
                if not self._pause(status, step["pause"] or {}, "CanaryPauseStep"):
                    break
            elif "analysis" in step:
                # the canary needs its pods at this step's weight before it is measured
                status["currentStepIndex"] = index
                replicas = int(ro["spec"].get("replicas", 1))
                self._scale(ro, {pod_hash: math.ceil(replicas * _weight(steps, index) / 100)}, others=None)
                phase = self._analysis(ro, status, pod_hash, index, step["analysis"] or {})
                if phase != "Successful":
                    break
            index += 1
            status["currentStepIndex"] = index
            self._event(ro, "Normal", "RolloutStepCompleted", f"Rollout step {index}/{len(steps)} completed")
        status["currentStepIndex"] = 0 if status.get("abort") else index

    def _pause(self, status: JSON, pause: JSON, reason: str) -> bool:
        """Whether the pause is over: promoted (pause conditions cleared) or its duration has passed."""
        conditions = status.get("pauseConditions") or []
        if status.get("controllerPause") and not conditions:
            status.pop("controllerPause", None)
            status.pop("pauseConditions", None)
            return True
        if not conditions:
            status["pauseConditions"] = [{"reason": reason, "startTime": self.cluster._ts()}]
            status["controllerPause"] = True
            conditions = status["pauseConditions"]
        duration = pause.get("duration")
        if duration is None:
            return False
        started = _parse_ts(conditions[0].get("startTime"))
        if started is not None and (self.cluster.now().timestamp() - started) >= parse_duration(duration):
            status.pop("pauseConditions", None)
            status.pop("controllerPause", None)
            return True
        return False

    # -- analysis ---------------------------------------------------------------------------------

    def _analysis(self, ro: JSON, status: JSON, pod_hash: str, index: int, analysis: JSON) -> str:
        c, ns = self.cluster, ro["metadata"]["namespace"]
        base = f"{ro['metadata']['name']}-{pod_hash}-{_rev(ro)}-{index}"
        current = ((status.get("canary") or {}).get("currentStepAnalysisRunStatus") or {}).get("name")
        name, run = base, None
        if current and (current == base or current.startswith(base + ".")):
            name, run = current, c._objects["AnalysisRun"].get((ns, current))
        else:
            # a retried update measures afresh: base, base.1, base.2, ...
            attempt = 0
            while (ns, name) in c._objects["AnalysisRun"]:
                attempt += 1
                name = f"{base}.{attempt}"
        if run is None:
            pods = self._pods(ns, pod_hash)
            if not pods:
                return "Running"
            phase, message = self._judge(ro, pods)
            run = self._create_run(ro, name, pod_hash, index, analysis, phase, message)
        phase = str((run.get("status") or {}).get("phase", "Running"))
        message = str((run.get("status") or {}).get("message", ""))
        canary = status.setdefault("canary", {})
        canary["currentStepAnalysisRunStatus"] = {"name": name, "status": phase, "message": message}
        if phase in ("Failed", "Error") and not status.get("abort"):
            status["abort"] = True
            status["abortedAt"] = c._ts()
            status.pop("pauseConditions", None)
            status.pop("controllerPause", None)
            status["message"] = f"RolloutAborted: Rollout aborted update to revision {_rev(ro)}: {message}"
            self._event(ro, "Warning", "AnalysisRunFailed", f"Analysis Run '{name}' Status New: '{phase}'")
            self._event(ro, "Warning", "RolloutAborted", status["message"])
        return phase

    def _judge(self, ro: JSON, pods: list[JSON]) -> tuple[str, str]:
        if self.analysis is not None:
            return self.analysis(ro, pods)
        images = {c.get("image") for p in pods for c in p["spec"].get("containers") or []}
        bad = sorted(i for i in images if i in self.bad_images)
        failed = sum(1 for p in pods if not _pod_ready(p)) + (len(pods) if bad else 0)
        if failed:
            return (
                "Failed",
                f'Metric "success-rate" assessed Failed due to failed ({failed}) > failureLimit (0)',
            )
        return "Successful", ""

    def _create_run(
        self, ro: JSON, name: str, pod_hash: str, index: int, analysis: JSON, phase: str, message: str
    ) -> JSON:
        c, meta = self.cluster, ro["metadata"]
        metrics = [
            str(t.get("templateName")) for t in analysis.get("templates") or [] if t.get("templateName")
        ]
        metrics = metrics or ["success-rate"]
        run_meta = c._new_meta("AnalysisRun", meta["namespace"], name)
        run_meta["generation"] = 1
        run_meta["labels"] = {
            HASH: pod_hash,
            "rollout-type": "Step",
            "step-index": str(index),
            "rollouts-pod-template-hash": pod_hash,
        }
        run_meta["annotations"] = {REVISION: _rev(ro)}
        run_meta["ownerReferences"] = [_owner(ro)]
        now = c._ts()
        results = [
            {
                "name": m,
                "phase": phase,
                "count": 1,
                "successful": 1 if phase == "Successful" else 0,
                "failed": 1 if phase == "Failed" else 0,
                "measurements": [
                    {
                        "phase": phase,
                        "startedAt": now,
                        "finishedAt": now,
                        "value": "[0.42]" if phase == "Failed" else "[0.99]",
                    }
                ],
                **({"message": message} if message else {}),
            }
            for m in metrics
        ]
        run: JSON = {
            "apiVersion": API_VERSION,
            "kind": "AnalysisRun",
            "metadata": run_meta,
            "spec": {
                "metrics": [
                    {"name": m, "failureLimit": 0, "successCondition": "result[0] >= 0.95"} for m in metrics
                ]
            },
            "status": {"phase": phase, "message": message, "metricResults": results, "startedAt": now},
        }
        return c._put("AnalysisRun", run, created=True)

    # -- blue-green -------------------------------------------------------------------------------

    def _blue_green(self, ro: JSON, status: JSON, pod_hash: str, bg: JSON) -> dict[str, int]:
        spec = ro.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        stable = status["stableRS"]
        preview = 0
        if pod_hash != stable and not status.get("abort"):
            preview = replicas
            ready = sum(1 for p in self._pods(ro["metadata"]["namespace"], pod_hash) if _pod_ready(p))
            auto = bg.get("autoPromotionEnabled", True)
            promoted = (auto and ready >= replicas) or (
                not auto and self._pause(status, {}, "BlueGreenPause")
            )
            if promoted and not spec.get("paused"):
                status["stableRS"] = stable = pod_hash
                self._event(
                    ro, "Normal", "RolloutCompleted", f"Rollout completed update to revision {_rev(ro)}"
                )
        status["blueGreen"] = {"activeSelector": stable, **({"previewSelector": pod_hash} if preview else {})}
        return self._scale(ro, {pod_hash: preview, stable: replicas}, others=0)

    # -- replica sets and pods --------------------------------------------------------------------

    def _owned(self, ro: JSON) -> list[JSON]:
        uid, ns = ro["metadata"]["uid"], ro["metadata"]["namespace"]
        return [
            rs
            for (rs_ns, _), rs in sorted(self.cluster._objects["ReplicaSet"].items())
            if rs_ns == ns and any(r.get("uid") == uid for r in rs["metadata"].get("ownerReferences") or [])
        ]

    def _ensure_replicaset(self, ro: JSON, template: JSON, pod_hash: str) -> JSON:
        owned = self._owned(ro)
        top = max((_rs_revision(r) for r in owned), default=0)
        for rs in owned:
            if rs["metadata"]["labels"].get(HASH) == pod_hash:
                if _rs_revision(rs) < top:
                    # an old template again (undo, or back to stable): it becomes the newest revision
                    rs = copy.deepcopy(rs)
                    rs["metadata"].setdefault("annotations", {})[REVISION] = str(top + 1)
                    rs = self.cluster._put("ReplicaSet", rs)
                return rs
        c, ns = self.cluster, ro["metadata"]["namespace"]
        revision = top + 1
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH] = pod_hash
        selector = copy.deepcopy((ro.get("spec") or {}).get("selector") or {"matchLabels": {}})
        selector.setdefault("matchLabels", {})[HASH] = pod_hash
        meta = c._new_meta("ReplicaSet", ns, f"{ro['metadata']['name']}-{pod_hash}")
        meta["generation"] = 1
        meta["labels"] = dict(template["metadata"]["labels"])
        meta["annotations"] = {REVISION: str(revision)}
        meta["ownerReferences"] = [_owner(ro)]
        new: JSON = {
            "kind": "ReplicaSet",
            "apiVersion": "apps/v1",
            "metadata": meta,
            "spec": {"replicas": 0, "selector": selector, "template": template},
            "status": {"replicas": 0},
        }
        self._event(
            ro, "Normal", "NewReplicaSetCreated", f"Created ReplicaSet {meta['name']} (revision {revision})"
        )
        return c._put("ReplicaSet", new, created=True)

    def _scale(self, ro: JSON, wanted: dict[str, int], *, others: int | None) -> dict[str, int]:
        """Scale the owned ReplicaSets (hash -> replicas; the others to ``others``, or left when None).

        Returns the ready pods by hash."""
        c, ready = self.cluster, {}
        for rs in self._owned(ro):
            pod_hash = rs["metadata"]["labels"].get(HASH)
            want = wanted.get(pod_hash, rs["spec"]["replicas"] if others is None else others)
            if rs["spec"]["replicas"] != want:
                rs = copy.deepcopy(rs)
                old, rs["spec"]["replicas"] = rs["spec"]["replicas"], want
                rs["metadata"]["generation"] += 1
                c._put("ReplicaSet", rs)
                verb = "up" if want > old else "down"
                self._event(
                    ro,
                    "Normal",
                    "ScalingReplicaSet",
                    f"Scaled {verb} ReplicaSet {rs['metadata']['name']} from {old} to {want}",
                )
            c._sync_replicaset(rs)
            ready[str(pod_hash)] = sum(1 for p in c._owned_pods(rs) if _pod_ready(p))
        return ready

    def _pods(self, namespace: str, pod_hash: str) -> list[JSON]:
        return [
            p
            for (ns, _), p in sorted(self.cluster._objects["Pod"].items())
            if ns == namespace and (p["metadata"].get("labels") or {}).get(HASH) == pod_hash
        ]

    def _restart(self, ro: JSON, status: JSON) -> None:
        """``spec.restartAt``: replace the pods created before it (once)."""
        restart_at = (ro.get("spec") or {}).get("restartAt")
        if not restart_at or status.get("restartedAt") == restart_at:
            return
        cutoff = _parse_ts(restart_at)
        if cutoff is None or cutoff > self.cluster.now().timestamp():
            return
        for rs in self._owned(ro):
            for pod in self.cluster._owned_pods(rs):
                created = _parse_ts(pod["metadata"].get("creationTimestamp"))
                if created is not None and created <= cutoff:
                    self.cluster._delete_pod(pod)
            self.cluster._sync_replicaset(rs)
        status["restartedAt"] = restart_at
        self._event(ro, "Normal", "RolloutRestarted", f"Rollout restarted at {restart_at}")

    # -- status -----------------------------------------------------------------------------------

    def _finish_status(
        self, ro: JSON, status: JSON, pod_hash: str, ready: dict[str, int], revision: str
    ) -> None:
        spec, c = ro.get("spec") or {}, self.cluster
        replicas = int(spec.get("replicas", 1))
        pods = [p for rs in self._owned(ro) for p in c._owned_pods(rs)]
        updated = [p for p in pods if (p["metadata"].get("labels") or {}).get(HASH) == pod_hash]
        available = sum(1 for p in pods if _pod_ready(p))
        status.update(
            {
                "replicas": len(pods),
                "updatedReplicas": len(updated),
                "readyReplicas": available,
                "availableReplicas": available,
                "selector": selector_string(spec.get("selector")),
                "observedGeneration": str(ro["metadata"].get("generation", 1)),
                "currentStepHash": template_hash({"steps": _steps(ro)}),
            }
        )
        if not _steps(ro):
            status.pop("currentStepIndex", None)
        phase, message = self._phase(ro, status, pod_hash, len(updated), ready.get(pod_hash, 0))
        if status.get("abort") and status.get("message", "").startswith("RolloutAborted"):
            message = status["message"]
        status["phase"], status["message"] = phase, message
        status["conditions"] = self._conditions(status, phase, message, available >= replicas)

    def _phase(
        self, ro: JSON, status: JSON, pod_hash: str, updated: int, updated_ready: int
    ) -> tuple[str, str]:
        spec = ro.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        if status.get("abort"):
            return "Degraded", f"RolloutAborted: Rollout aborted update to revision {_rev(ro)}"
        if spec.get("paused"):
            return "Paused", "manually paused"
        if status.get("pauseConditions"):
            return "Paused", str(status["pauseConditions"][0].get("reason", ""))
        if pod_hash != status.get("stableRS"):
            return "Progressing", "more replicas need to be updated"
        if updated < replicas:
            return "Progressing", "more replicas need to be updated"
        if updated_ready < replicas:
            return "Progressing", "updated replicas are still becoming available"
        if status["replicas"] > replicas:
            return "Progressing", "old replicas are pending termination"
        return "Healthy", ""

    def _conditions(self, status: JSON, phase: str, message: str, available: bool) -> list[JSON]:
        old = {c.get("type"): c for c in status.get("conditions") or []}
        progressing = {
            "Degraded": ("False", "RolloutAborted"),
            "Paused": ("Unknown", "RolloutPaused"),
            "Progressing": ("True", "ReplicaSetUpdated"),
            "Healthy": ("True", "NewReplicaSetAvailable"),
        }[phase]
        wanted = [
            (
                "Available",
                "True" if available else "False",
                "AvailableReason",
                "Rollout has minimum availability"
                if available
                else "Rollout does not have minimum availability",
            ),
            ("Progressing", progressing[0], progressing[1], message or "Rollout has successfully progressed"),
            (
                "Healthy",
                "True" if phase == "Healthy" else "False",
                "RolloutHealthy",
                "Rollout is healthy" if phase == "Healthy" else "Rollout is not healthy",
            ),
            (
                "Paused",
                "True" if phase == "Paused" else "False",
                "RolloutPaused" if phase == "Paused" else "RolloutResumed",
                "Rollout is paused" if phase == "Paused" else "Rollout is resumed",
            ),
        ]
        out = []
        now = self.cluster._ts()
        for type_, value, reason, text in wanted:
            prev = old.get(type_) or {}
            same = (
                prev.get("status") == value and prev.get("reason") == reason and prev.get("message") == text
            )
            out.append(
                {
                    "type": type_,
                    "status": value,
                    "reason": reason,
                    "message": text,
                    "lastTransitionTime": prev.get("lastTransitionTime", now)
                    if prev.get("status") == value
                    else now,
                    "lastUpdateTime": prev.get("lastUpdateTime", now) if same else now,
                }
            )
        return out

    def _event(self, ro: JSON, type_: str, reason: str, message: str) -> None:
        self.cluster._event(ro, type_, reason, message, COMPONENT)


# --- helpers -------------------------------------------------------------------------------------


def _steps(ro: JSON) -> list[JSON]:
    canary = ((ro.get("spec") or {}).get("strategy") or {}).get("canary") or {}
    return [s for s in canary.get("steps") or [] if isinstance(s, dict)]


def _weight(steps: list[JSON], index: int) -> int:
    """The canary weight once the steps before ``index`` have run (the last setWeight; 0 before any)."""
    weight = 0
    for step in steps[:index]:
        if "setWeight" in step:
            weight = int(step["setWeight"])
    return max(0, min(100, weight))


def _rs_revision(rs: JSON) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, 0))
    except (TypeError, ValueError):
        return 0


def _rev(ro: JSON) -> str:
    return str((ro["metadata"].get("annotations") or {}).get(REVISION, "1"))


def _owner(ro: JSON) -> JSON:
    meta = ro["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "Rollout",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _parse_ts(value: Any) -> float | None:
    import datetime as dt

    if not value:
        return None
    try:
        return dt.datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None
