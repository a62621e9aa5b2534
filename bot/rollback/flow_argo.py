"""The ChatOps rollback of an Argo Rollout: what :class:`bot.rollback.flow.RollbackFlow` does differently.

A request names a workload; when no Deployment of that name exists the flow previews the Rollout of that
name instead (``bot.rollback.preview_argo``: ``abort`` while a canary is in progress, else ``undo``), and the
stored preview says ``kind: Rollout``. Approval, lock, cooldown and the vLLM checks are the flow's own; this
mixin supplies the three steps that differ:

* **execute**: refuse when the Rollout was paused or changed (generation) after the preview, then send the
  plugin's patch: ``status.abort: true`` for an abort, the ``/spec/template`` JSON patch for an undo;
* **recover** (a worker died mid-execution): an abort is in place when ``status.abort`` is set (re-sent while
  the generation is unchanged: setting a flag twice is harmless); an undo when the target template runs;
* **verify**: after an abort, the canary has no weight and the stable ReplicaSet serves every replica (the
  Rollout reads ``Degraded``, as Argo reports any aborted update); after an undo, the Rollout is fully
  promoted, ``Healthy`` and available, within ROLLBACK_ROLLOUT_TIMEOUT_SECONDS.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from bot.integrations.argo import ArgoRollouts, RolloutState, RolloutWorkload
from bot.integrations.kube import KubeClient, same_template
from bot.rollback.state import RollbackRequest, RollbackRequests, State
from bot.settings import Settings


def is_rollout(req: RollbackRequest) -> bool:
    """Whether the request's preview is of an Argo Rollout."""
    return req.preview.get("kind") == "Rollout"


class RolloutRollbacks:
    """Mixin of RollbackFlow: previews, executes, recovers and verifies rollbacks of Argo Rollouts."""

    settings: Settings
    requests: RollbackRequests
    clock: Callable[[], datetime]
    sleep: Callable[[float], None]

    @property
    def kube(self) -> KubeClient:  # provided by RollbackFlow
        raise NotImplementedError

    def _refuse(self, req: RollbackRequest, code: str, reason: str, *, post: bool) -> RollbackRequest:
        raise NotImplementedError  # provided by RollbackFlow

    def _execute_rollout(self, req: RollbackRequest) -> tuple[RollbackRequest | None, str]:
        """Send the approved abort/undo: (a refused request, "") or (None, the note)."""
        argo = ArgoRollouts(self.kube)
        state = argo.status(req.namespace, req.deployment)
        if state.paused:
            return self._refuse(req, "paused", f"{req.target} was paused after the preview", post=True), ""
        if state.generation != req.preview.get("generation"):
            return self._refuse(
                req,
                "changed_since_preview",
                f"{req.target} changed after the preview (generation {req.preview.get('generation')} -> "
                f"{state.generation}); request the rollback again to see the new diff",
                post=True,
            ), ""
        moved = self.requests.move(
            req.id,
            State.EXECUTING,
            req.approved_by or "?",
            at=self.clock(),
            started_at=self.clock(),
            intent_generation=state.generation,
        )
        return None, self._send(argo, moved)

    def _send(self, argo: ArgoRollouts, req: RollbackRequest) -> str:
        if (req.preview.get("argo") or {}).get("action") == "abort":
            argo.abort(req.namespace, req.deployment)
            return "abort sent: status.abort true (back to the stable ReplicaSet)"
        undo = argo.undo(req.namespace, req.deployment, req.to_revision)
        return f"undo sent: revision {undo.from_revision} -> {undo.to_revision}"

    def _recover_rollout(self, req: RollbackRequest) -> str:
        """After a worker restart mid-execution: did the abort/undo land?"""
        argo = ArgoRollouts(self.kube)
        state = argo.status(req.namespace, req.deployment)
        if (req.preview.get("argo") or {}).get("action") == "abort":
            if state.aborted:
                return "recovered: the abort is in place"
        else:
            history = {r.revision: r for r in argo.history(req.namespace, req.deployment)}
            live = (argo.rollout_json(req.namespace, req.deployment).get("spec") or {}).get("template") or {}
            target = history.get(req.to_revision or -1)
            if target is not None and same_template(target.template, live):
                return "recovered: the target template is already in place"
        if state.generation == req.intent_generation:
            return "recovered: " + self._send(argo, req)
        return f"unknown: {req.target} changed after the intent"

    def _rollout_checks(self, req: RollbackRequest, check: Callable[[str, bool | None, str], None]) -> None:
        """The Rollout's own checks: back on stable (abort) or fully rolled out (undo), pods ready."""
        argo = ArgoRollouts(self.kube)
        abort = (req.preview.get("argo") or {}).get("action") == "abort"
        deadline = self.clock().timestamp() + self.settings.rollback_rollout_timeout_seconds
        while True:
            state = argo.status(req.namespace, req.deployment)
            ok, detail = _settled(state, abort)
            if ok or self.clock().timestamp() >= deadline:
                break
            self.sleep(2.0)
        check("rollout", ok, detail)
        pods = RolloutWorkload(self.kube).pods(req.namespace, req.deployment)
        ready = sum(1 for p in pods if p.ready)
        check("pods", state.replicas > 0 and ready >= state.replicas, f"{ready}/{state.replicas} pods ready")


def _settled(state: RolloutState, abort: bool) -> tuple[bool, str]:
    if abort:
        ok = state.aborted and state.canary_weight == 0 and state.available_replicas >= state.replicas
        return ok, (
            f"aborted: canary weight {state.canary_weight}%, stable {', '.join(state.stable_images)} "
            f"{state.available_replicas}/{state.replicas} available ({state.phase})"
        )
    ok = state.fully_promoted and state.phase == "Healthy" and state.available_replicas >= state.replicas
    return ok, f'rollout "{state.name}" is {state.phase}' + (f": {state.message}" if state.message else "")
