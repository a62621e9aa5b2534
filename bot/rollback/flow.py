"""The ChatOps rollback flow: request -> preview -> approval -> execution -> verification -> outcome.

`RollbackFlow` is what the Celery tasks (workers/rollback_tasks.py), the Slack buttons and the CLI call.

* **request**: refuse early (kill switch, another open request of the Deployment, whatever
  `build_preview` refuses), otherwise store the preview and post it to Slack with Approve / Cancel.
* **decide**: approvers only; the two-person rule (ROLLBACK_TWO_PERSON_NAMESPACES) refuses the
  requester's own approval; an approval after ROLLBACK_APPROVAL_TIMEOUT_SECONDS expires the request.
  The first decision wins (the state move is WATCHed). Approval queues `execute`.
* **execute**: takes the runbook guards' per-Deployment lock (``guard:lock:<ns>/<name>``), so a runbook
  step and a rollback never act on one Deployment at once; re-checks that nothing changed since the
  preview; undoes with the Kubernetes adapter (kubectl's algorithm); waits for the rollout; verifies
  (pods ready, vLLM /health, a warmup completion, optionally a PromQL check); starts the runbooks'
  `k8s.rollout_undo` cooldown on the target, so an automatic runbook does not undo the rollback.
* **outcome**: a channel message, a timeline entry (the incident thread shows it), an audit record and a
  PagerDuty change event. A failed verification is loud: the approvers are mentioned, the incident gets an
  ``escalate`` entry, and the next steps are offered, not taken.

A worker that dies while executing leaves the request ``executing``; the redelivered task re-reads the
Deployment: the target template already there -> it goes on to wait and verify; generation unchanged
since the intent -> it undoes; anything else -> failed, for a person to look at.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bot import tasknames
from bot.errors import IncidentBotError, PermanentError
from bot.integrations.helm import lws_template_fallback
from bot.integrations.kube import KubeClient, same_template
from bot.integrations.pagerduty import PagerDutyClient
from bot.integrations.prometheus import PrometheusClient
from bot.integrations.slack import SlackWeb
from bot.integrations.vllm import run_sync
from bot.integrations.workloads import workload_for
from bot.rollback.diff import Change, summary
from bot.rollback.flow_argo import RolloutRollbacks, is_rollout
from bot.rollback.preview import Preview, Refused, age_text, argo_lines, revision_label
from bot.rollback.preview_argo import preview_workload
from bot.rollback.state import Busy, InvalidMove, RollbackRequest, RollbackRequests, State
from bot.settings import Settings
from bot.severity import load_policy
from bot.slack.authz import Authorizer
from bot.slack.commands import Role
from bot.slack.mrkdwn import escape, slack_date
from bot.slack.render import (
    ACTION_ROLLBACK_APPROVE,
    ACTION_ROLLBACK_CANCEL,
    Message,
    SlackRenderer,
    actor_mention,
)
from bot.storage.audit import AuditLog
from bot.storage.controls import Controls
from bot.storage.incidents import IncidentStore
from bot.tasknames import TaskSender

log = logging.getLogger("incident_bot.rollback")

#: Celery task names (routing: workers.tasks.runbook.* -> runbooks, workers.tasks.notify.* -> notifications).
#: The runbook step type whose cooldown a manual rollback starts.
UNDO_ACTION = "k8s.rollout_undo"
STATE_EMOJI = {
    State.PREVIEWED: ":rewind:",
    State.APPROVED: ":hourglass_flowing_sand:",
    State.EXECUTING: ":hourglass_flowing_sand:",
    State.VERIFIED: ":white_check_mark:",
    State.FAILED: ":rotating_light:",
    State.CANCELLED: ":no_entry_sign:",
    State.EXPIRED: ":alarm_clock:",
    State.REFUSED: ":no_entry:",
}


def _now() -> datetime:
    return datetime.now(UTC)


def _mention_group(entry: str) -> str:
    return f"<!subteam^{entry}>" if entry.startswith("S") else f"<@{entry}>"


def lock_ttl_seconds(settings: Settings) -> int:
    """How long a rollback holds its Deployment's lock: the rollout and verify budgets, plus slack."""
    return settings.rollback_rollout_timeout_seconds + settings.rollback_verify_timeout_seconds + 120


class TargetGuards(Protocol):
    """What the flow needs of the runbook guards (bot.runbook.guards.Guards): the lock and the cooldown."""

    def acquire(self, target: str, ttl_seconds: float) -> str | None:
        """Take the target's lock; a token, or None when another holds it."""

    def release(self, target: str, token: str) -> None:
        """Release the lock if this token still holds it."""

    def holder(self, target: str) -> bool:
        """Whether someone holds the target's lock."""

    def start_cooldown(self, action: str, target: str, by: str) -> None:
        """Start the action's cooldown on the target."""


class RollbackFlow(RolloutRollbacks):
    """Requests, approvals, execution and outcome of ChatOps rollbacks."""

    def __init__(
        self,
        settings: Settings,
        store: IncidentStore,
        *,
        requests: RollbackRequests,
        guards: TargetGuards,
        controls: Controls,
        audit: AuditLog,
        sender: TaskSender,
        web: SlackWeb | None = None,
        renderer: SlackRenderer | None = None,
        authorizer: Authorizer | None = None,
        kube: KubeClient | None = None,
        prometheus: PrometheusClient | None = None,
        pagerduty: Callable[[], PagerDutyClient | None] | None = None,
        clock: Callable[[], datetime] = _now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sender = sender
        self.web = web
        self.renderer = renderer
        self.authorizer = authorizer
        self._kube = kube
        self._prometheus = prometheus
        self._pagerduty = pagerduty
        self.controls = controls
        self.clock = clock
        self.sleep = sleep
        self.lock_ttl = lock_ttl_seconds(settings)
        self.requests = requests
        self.guards = guards
        self.audit = audit

    @property
    def kube(self) -> KubeClient:
        """The Kubernetes adapter (built from settings on first use)."""
        if self._kube is None:
            self._kube = KubeClient.from_settings(self.settings)
        return self._kube

    # --- request ---------------------------------------------------------------------------------
    def request(
        self,
        namespace: str,
        deployment: str,
        *,
        actor: str,
        to_revision: int | None = None,
        incident_id: str | None = None,
        dry_run: bool = False,
        post: bool = True,
        kind: str | None = None,
    ) -> RollbackRequest:
        """File a request and preview it (posted to Slack); refusals end the request with the reason.

        ``kind``: Deployment or Rollout; None previews the Deployment, else the Rollout of that name."""
        if incident_id:
            self.store.get(incident_id)  # IncidentNotFound: a readable PermanentError
        now = self.clock()
        fields: dict[str, Any] = {
            "namespace": namespace,
            "deployment": deployment,
            "requested_revision": to_revision,
            "incident_id": incident_id,
            "requester": actor,
            "dry_run": dry_run,
            "kind": kind or "Deployment",
        }
        try:
            req = self.requests.create(**fields, now=now, claim=not dry_run)
        except Busy as busy:
            if self._stale(busy.holder):
                self.requests.release_stale(namespace, deployment, busy.holder)
                return self.request(
                    namespace,
                    deployment,
                    actor=actor,
                    to_revision=to_revision,
                    incident_id=incident_id,
                    dry_run=dry_run,
                    post=post,
                    kind=kind,
                )
            return self._refuse_busy(fields, now, busy.holder, post=post)
        refusal = None if dry_run else self._preflight(req)
        if refusal is not None:
            return self._refuse(req, *refusal, post=post)
        try:
            preview = preview_workload(self.kube, namespace, deployment, to_revision, now=now, kind=kind)
        except Refused as exc:
            return self._refuse(req, exc.code, str(exc), post=post)
        return self._previewed(req, preview, now, post=post)

    def _refuse_busy(
        self, fields: dict[str, Any], now: datetime, holder_id: str, *, post: bool
    ) -> RollbackRequest:
        """File the request unclaimed and refuse it: another request of the Deployment is open."""
        req = self.requests.create(**fields, now=now, claim=False)
        try:
            holder = self.requests.get(holder_id)
            what = f"{holder.state.value} (requested by {holder.requester})"
        except PermanentError:  # claimed a moment ago; its record is still being written
            what = "being requested right now"
        reason = (
            f"rollback {holder_id} of {req.target} is already {what}; one rollback per deployment at a time"
        )
        return self._refuse(req, "busy", reason, post=post)

    def _preflight(self, req: RollbackRequest) -> tuple[str, str] | None:
        """Why a real (not dry-run) request must be refused before its preview: (code, reason), or None."""
        if not self.controls.automation_enabled():
            return "kill_switch", "the automation kill switch is on; turn it off first"
        if self.guards.holder(req.target):
            return (
                "rollout_in_progress",
                f"a runbook step or another rollback is acting on {req.target} right now",
            )
        return None

    def _previewed(
        self, req: RollbackRequest, preview: Preview, now: datetime, *, post: bool
    ) -> RollbackRequest:
        """Store the preview, refuse a failed server-side dry run, record and post the rest."""
        dry_run = req.dry_run
        expires = (
            None if dry_run else now + timedelta(seconds=self.settings.rollback_approval_timeout_seconds)
        )
        req = self.requests.move(
            req.id,
            State.PREVIEWED,
            req.requester,
            at=now,
            note=preview.dry_run_message,
            preview=preview.to_dict(),
            expires_at=expires,
            two_person=req.namespace in self.settings.rollback_two_person_namespaces,
            from_revision=preview.current.revision,
            to_revision=preview.target.revision,
        )
        if not preview.dry_run_ok and not dry_run:
            return self._refuse(req, "dry_run_failed", preview.dry_run_message, post=post)
        self._audit(req, "previewed", summary(preview.changes))
        mode = " (dry run: preview only)" if dry_run else ""
        self._timeline(
            req,
            "rollback_previewed",
            f"Rollback {req.id} of {req.target} from revision {req.from_revision} to {req.to_revision} "
            f"previewed{mode}: {summary(preview.changes)}.",
        )
        if post:
            self._post_request_message(req)
        return self.requests.get(req.id)

    def _stale(self, holder_id: str) -> bool:
        try:
            holder = self.requests.get(holder_id)
        except PermanentError:
            return False  # the claim is set before the record is written: a request in the making
        if holder.state.terminal:
            return True
        if holder.state is State.PREVIEWED and holder.expires_at and self.clock() >= holder.expires_at:
            self._expire(holder)
            return True
        return False

    def _refuse(self, req: RollbackRequest, code: str, reason: str, *, post: bool) -> RollbackRequest:
        req = self.requests.move(
            req.id, State.REFUSED, req.requester, at=self.clock(), note=code, reason=reason
        )
        log.warning("rollback %s of %s refused (%s): %s", req.id, req.target, code, reason)
        self._audit(req, "refused", reason)
        self._timeline(req, "rollback_refused", f"Rollback {req.id} of {req.target} refused: {reason}")
        if post:
            self._post_request_message(req)
        return req

    # --- decisions -------------------------------------------------------------------------------
    def decide(
        self,
        request_id: str,
        user_id: str,
        approve: bool,
        *,
        team_id: str = "",
    ) -> tuple[str, str]:
        """A Slack user's Approve/Cancel click: (outcome, reply for the clicker)."""
        actor = f"slack:{user_id}"
        req = self.requests.get(request_id)
        verb = "approve" if approve else "cancel"
        label = f"rollback {verb} {req.id}"
        allowed = self.authorizer.has_role(user_id, Role.APPROVER) if self.authorizer else False
        if not allowed and not (not approve and actor == req.requester):
            reason = f"only approvers may {verb} rollback {req.id}"
            self.audit.record(
                actor=actor,
                team_id=team_id,
                action=label,
                outcome="refused",
                reason=reason,
                source="rollback",
            )
            return "refused", f":no_entry: Refused: {reason}. Nothing was changed."
        if req.state is not State.PREVIEWED:
            by = req.approved_by or req.decided_by or req.requester
            return "failed", f":warning: Rollback {req.id} is already {req.state.value} ({by})."
        now = self.clock()
        if req.dry_run:
            return "failed", f":warning: {req.id} is a dry-run preview; request it again without --dry-run."
        if approve and req.expires_at and now >= req.expires_at:
            self._expire(req)
            return "refused", f":alarm_clock: Rollback {req.id} expired; nothing was done. Request it again."
        if approve and req.two_person and actor == req.requester:
            reason = (
                f"two-person rule for namespace {req.namespace}: the requester cannot approve their own "
                "rollback; another approver must"
            )
            self.audit.record(
                actor=actor,
                team_id=team_id,
                action=label,
                outcome="refused",
                args={"request_id": req.id},
                reason=reason,
                source="rollback",
            )
            return "refused", f":no_entry: Refused: {reason}."
        try:
            if approve:
                req = self.requests.move(
                    req.id, State.APPROVED, actor, at=now, approved_by=actor, decided_by=actor
                )
            else:
                req = self.requests.move(
                    req.id, State.CANCELLED, actor, at=now, decided_by=actor, reason=f"cancelled by {actor}"
                )
        except InvalidMove as exc:
            return "failed", f":warning: {escape(str(exc))}"
        self.audit.record(
            actor=actor,
            team_id=team_id,
            action=label,
            outcome="accepted",
            args={"request_id": req.id, "target": req.target},
            source="rollback",
        )
        self._update_request_message(req)
        if approve:
            self._timeline(
                req, "rollback_approved", f"Rollback {req.id} of {req.target} approved by {actor}."
            )
            self.sender.send(tasknames.ROLLBACK_EXECUTE, args=(req.id,))
            return "accepted", f":white_check_mark: Rollback {req.id} approved; rolling back {req.target}."
        self._timeline(req, "rollback_cancelled", f"Rollback {req.id} of {req.target} cancelled by {actor}.")
        self._audit(req, "cancelled", req.reason)
        return "accepted", f":no_entry_sign: Rollback {req.id} cancelled."

    def _expire(self, req: RollbackRequest) -> None:
        try:
            req = self.requests.move(
                req.id, State.EXPIRED, "incident-bot", at=self.clock(), reason="approval window passed"
            )
        except InvalidMove:
            return
        self._audit(req, "expired", "no approval within the approval window")
        self._timeline(req, "rollback_expired", f"Rollback {req.id} of {req.target} expired unapproved.")
        self._update_request_message(req)

    # --- execution -------------------------------------------------------------------------------
    def execute(self, request_id: str) -> RollbackRequest:
        """Roll back an approved request under the Deployment's lock, wait, verify, announce."""
        req = self.requests.get(request_id)
        if req.state not in (State.APPROVED, State.EXECUTING):
            return req
        token = self.guards.acquire(req.target, self.lock_ttl)
        if token is None:
            if req.state is State.EXECUTING:
                return req  # the first delivery is still at work
            return self._refuse(
                req,
                "rollout_in_progress",
                f"a runbook step or another rollback is acting on {req.target}; nothing was changed",
                post=True,
            )
        try:
            req = self._execute_locked(req)
        finally:
            self.guards.release(req.target, token)
        if req.state.terminal:
            self._announce(req)
        return req

    def _workload(self, req: RollbackRequest) -> Any:
        return workload_for(self.kube, req.kind, fallback=lws_template_fallback(self.kube))

    def _execute_locked(self, req: RollbackRequest) -> RollbackRequest:
        workload = self._workload(req)
        try:
            if req.state is State.APPROVED and not self.controls.automation_enabled():
                return self._refuse(req, "kill_switch", "the automation kill switch was turned on", post=True)
            if is_rollout(req):
                refused, note = (
                    self._execute_rollout(req)
                    if req.state is State.APPROVED
                    else (None, self._recover_rollout(req))
                )
                if refused is not None:
                    return refused
                req = self.requests.get(req.id)
                if note.startswith("unknown"):
                    return self._end(req, State.FAILED, note, {"ok": False, "checks": []})
            elif req.state is State.APPROVED:
                dep = workload.get(req.namespace, req.deployment)
                if dep.paused:
                    return self._refuse(
                        req, "paused", f"{req.target} was paused after the preview", post=True
                    )
                if dep.generation != req.preview.get("generation"):
                    return self._refuse(
                        req,
                        "changed_since_preview",
                        f"{req.target} changed after the preview (generation {req.preview.get('generation')} "
                        f"-> {dep.generation}); request the rollback again to see the new diff",
                        post=True,
                    )
                req = self.requests.move(
                    req.id,
                    State.EXECUTING,
                    req.approved_by or "?",
                    at=self.clock(),
                    started_at=self.clock(),
                    intent_generation=dep.generation,
                )
                undo = workload.undo(req.namespace, req.deployment, req.to_revision or None)
                note = f"undo sent: revision {undo.from_revision} -> {undo.to_revision}" + (
                    f" ({undo.source})" if undo.to_revision == 0 else ""
                )
            else:
                note = self._recover(req)
                if note.startswith("unknown"):
                    return self._end(req, State.FAILED, note, {"ok": False, "checks": []})
            self.guards.start_cooldown(UNDO_ACTION, req.target, req.id)
            verification = self._verify(req)
            state = State.VERIFIED if verification["ok"] else State.FAILED
            return self._end(req, state, note, verification)
        except IncidentBotError as exc:
            if req.state is State.APPROVED:
                return self._refuse(req, "error", f"{type(exc).__name__}: {exc}", post=True)
            return self._end(req, State.FAILED, f"{type(exc).__name__}: {exc}", {"ok": False, "checks": []})

    def _recover(self, req: RollbackRequest) -> str:
        """After a worker restart mid-execution: decide whether the undo landed."""
        if req.kind != "Deployment":
            return self._recover_workload(req)
        kube = self.kube
        history = {r.revision: r for r in kube.rollout_history(req.namespace, req.deployment)}
        live = (kube.deployment_json(req.namespace, req.deployment).get("spec") or {}).get("template") or {}
        target = history.get(req.to_revision or -1)
        if target is not None and same_template(target.template, live):
            return "recovered: the target template is already in place"
        dep = kube.get_deployment(req.namespace, req.deployment)
        if dep.generation == req.intent_generation:
            undo = kube.rollout_undo(req.namespace, req.deployment, to_revision=req.to_revision)
            return f"recovered: undo re-sent (revision {undo.from_revision} -> {undo.to_revision})"
        return f"unknown: {req.target} changed after the intent but not to revision {req.to_revision}"

    def _recover_workload(self, req: RollbackRequest) -> str:
        """The same decision for another kind: target images running, or unchanged since the intent."""
        workload = self._workload(req)
        live = workload.get(req.namespace, req.deployment)
        wanted = list((req.preview.get("target") or {}).get("images") or [])
        if wanted and list(live.images) == wanted and live.generation != req.intent_generation:
            return "recovered: the target template is already in place"
        if live.generation == req.intent_generation:
            undo = workload.undo(req.namespace, req.deployment, req.to_revision or None)
            return f"recovered: undo re-sent (revision {undo.from_revision} -> {undo.to_revision})"
        return f"unknown: {req.target} changed after the intent but not to revision {req.to_revision}"

    def _wait_rollout(self, req: RollbackRequest) -> Any:
        timeout = self.settings.rollback_rollout_timeout_seconds
        if req.kind == "Deployment":
            return self.kube.wait_for_rollout(
                req.namespace,
                req.deployment,
                timeout=timeout,
                interval=2.0,
                sleep=self.sleep,
                clock=lambda: self.clock().timestamp(),
            )
        workload = self._workload(req)
        deadline = self.clock().timestamp() + timeout
        while True:
            status = workload.rollout_status(req.namespace, req.deployment)
            left = deadline - self.clock().timestamp()
            if status.complete or status.deadline_exceeded or left <= 0:
                return status
            self.sleep(min(2.0, max(0.0, left)))

    def _end(
        self, req: RollbackRequest, state: State, note: str, verification: dict[str, Any]
    ) -> RollbackRequest:
        reason = note if state is State.VERIFIED else (verification.get("failed") or note)
        return self.requests.move(
            req.id,
            state,
            "incident-bot",
            at=self.clock(),
            note=note,
            verification=verification,
            finished_at=self.clock(),
            reason=str(reason),
        )

    # --- verification ----------------------------------------------------------------------------
    def _verify(self, req: RollbackRequest) -> dict[str, Any]:
        """Rollout complete, pods ready, vLLM /health, a warmup completion, optional PromQL."""
        s = self.settings
        checks: list[dict[str, Any]] = []

        def check(name: str, ok: bool | None, detail: str) -> None:
            checks.append({"name": name, "ok": ok, "detail": detail})

        if is_rollout(req):
            self._rollout_checks(req, check)
        else:
            self._workload_checks(req, check)
        endpoints = list(s.vllm_endpoints)
        if endpoints:
            deadline = self.clock() + timedelta(seconds=s.rollback_verify_timeout_seconds)
            while True:
                reports = run_sync(lambda c: c.health_all(endpoints), s)
                healthy = sum(1 for r in reports if r.ok)
                if healthy == len(reports) or self.clock() >= deadline:
                    break
                self.sleep(2.0)
            check(
                "vllm_health", healthy == len(reports), f"{healthy}/{len(reports)} vLLM servers /health 200"
            )
            results = run_sync(lambda c: c.warmup_all(endpoints, None), s)
            done = [r.value for r in results if r.value is not None]
            errors = [f"{r.url}: {r.error}" for r in results if r.error is not None][:3]
            ttft = max((w.ttft_s for w in done), default=None)
            check(
                "warmup",
                len(done) == len(results),
                f"{len(done)}/{len(results)} warmup completions"
                + (f", TTFT max {ttft:.3f}s" if ttft is not None else "")
                + (f"; errors: {'; '.join(errors)}" if errors else ""),
            )
        else:
            check("vllm_health", None, "skipped: VLLM_ENDPOINTS not set")
        query = s.rollback_verify_promql
        if query and s.prometheus_url:
            check("prometheus", *self._prometheus_check(query))
        ok = all(c["ok"] is not False for c in checks)
        failed = "; ".join(f"{c['name']}: {c['detail']}" for c in checks if c["ok"] is False)
        return {"ok": ok, "checks": checks, "failed": failed}

    def _workload_checks(self, req: RollbackRequest, check: Callable[[str, bool | None, str], None]) -> None:
        """The workload's rollout finished and its pods are ready (any kind but a Rollout)."""
        status = self._wait_rollout(req)
        check("rollout", status.complete, status.message)
        pods = self._workload(req).pods(req.namespace, req.deployment)
        ready = sum(1 for p in pods if p.ready)
        bad = [f"{p.name} {p.status}" for p in pods if not p.ready][:5]
        check(
            "pods",
            status.replicas > 0 and ready >= status.replicas and not bad,
            f"{ready}/{status.replicas} pods ready" + (f"; not ready: {', '.join(bad)}" if bad else ""),
        )

    def _prometheus_check(self, query: str) -> tuple[bool, str]:
        s = self.settings
        if self._prometheus is None:
            self._prometheus = PrometheusClient.from_settings(s)
        deadline = self.clock() + timedelta(seconds=s.rollback_verify_window_seconds)
        while True:
            try:
                samples = self._prometheus.query(query)
            except IncidentBotError as exc:
                samples, error = [], str(exc)
            else:
                error = ""
            if samples or self.clock() >= deadline:
                break
            self.sleep(5.0)
        if samples:
            return True, f"{query} holds ({len(samples)} series)"
        return False, f"{query} returned nothing within {s.rollback_verify_window_seconds}s {error}".strip()

    # --- outcome ---------------------------------------------------------------------------------
    def _announce(self, req: RollbackRequest) -> None:
        if req.state in (State.VERIFIED, State.FAILED):
            checks = "; ".join(
                f"{c['name']} {'ok' if c['ok'] else 'skipped' if c['ok'] is None else 'FAILED'}"
                for c in req.verification.get("checks", [])
            )
            word = "verified" if req.state is State.VERIFIED else "FAILED verification"
            self._timeline(
                req,
                f"rollback_{req.state.value}",
                f"Rollback {req.id} of {req.target} from revision {req.from_revision} to {req.to_revision} "
                f"{word} ({checks}).",
            )
            if req.state is State.FAILED and req.incident_id:
                self._timeline(
                    req,
                    "escalate",
                    f"Rollback {req.id} did not restore {req.target}: {req.reason}. A person must decide the "
                    "next step.",
                )
            self._audit(req, req.state.value, req.reason)
            if self.settings.pagerduty_configured or self._pagerduty is not None:
                self.sender.send(tasknames.ROLLBACK_CHANGE_EVENT, args=(req.id,))
            self._post_result_message(req)
        self._update_request_message(req)

    def change_event(self, request_id: str) -> bool:
        """Send the PagerDuty change event of a finished rollback (False when PagerDuty is off)."""
        req = self.requests.get(request_id)
        client = self._pagerduty() if self._pagerduty is not None else None
        if client is None:
            return False
        changes = [Change(**c) for c in req.preview.get("changes", [])]
        client.change_event(
            summary=(
                f"Rollback of {req.target} from revision {req.from_revision} to {req.to_revision}: "
                f"{req.state.value}"
            ),
            source=f"llmd-incident-bot/{req.namespace}",
            custom_details={
                "request_id": req.id,
                "namespace": req.namespace,
                "deployment": req.deployment,
                "from_revision": req.from_revision,
                "to_revision": req.to_revision,
                "requested_by": req.requester,
                "approved_by": req.approved_by,
                "outcome": req.state.value,
                "incident_id": req.incident_id,
                "changes": summary(changes),
                "duration_s": req.duration_s,
            },
        )
        return True

    def _audit(self, req: RollbackRequest, outcome: str, reason: str) -> None:
        changes = [Change(**c) for c in req.preview.get("changes", [])]
        self.audit.record(
            actor=req.requester,
            team_id="",
            action="rollback",
            outcome=outcome,
            args={
                "request_id": req.id,
                "namespace": req.namespace,
                "deployment": req.deployment,
                "incident_id": req.incident_id,
                "requested_by": req.requester,
                "approved_by": req.approved_by,
                "from_revision": req.from_revision,
                "to_revision": req.to_revision,
                "diff": summary(changes) if changes else "",
                "duration_s": req.duration_s,
                "dry_run": req.dry_run,
            },
            reason=reason,
            source="rollback",
        )

    def _timeline(self, req: RollbackRequest, kind: str, message: str) -> None:
        if not req.incident_id:
            return
        data: dict[str, object] = {
            "request_id": req.id,
            "namespace": req.namespace,
            "deployment": req.deployment,
            "state": req.state.value,
            "from_revision": req.from_revision,
            "to_revision": req.to_revision,
            "actor": req.approved_by or req.requester,
        }
        if req.approved_by:
            data["approved_by"] = req.approved_by
        self.store.append_timeline(req.incident_id, kind, message, data)
        if self.settings.slack_configured:
            from bot.tasknames import change_notifications

            for name, args in change_notifications(self.settings, req.incident_id, f"rollback:{req.id}"):
                self.sender.send(name, args=args)

    # --- Slack -----------------------------------------------------------------------------------
    def channel_for(self, req: RollbackRequest) -> str:
        """The incident's severity channel, else ROLLBACK_SLACK_CHANNEL, else the default level's."""
        if req.incident_id:
            return self.settings.slack_channels[self.store.get(req.incident_id).severity.value]
        if self.settings.rollback_slack_channel:
            return self.settings.rollback_slack_channel
        level = load_policy(self.settings.severity_policy).default_level
        return self.settings.slack_channels[str(getattr(level, "value", level))]

    def render_request(self, req: RollbackRequest) -> Message | None:
        """The preview message in its current state (buttons only while it awaits a decision)."""
        if self.renderer is None:
            return None
        return self.renderer.render("rollback.json.j2", request_context(req, self.clock()))

    def _post_request_message(self, req: RollbackRequest) -> None:
        if req.slack_channel and req.slack_ts:  # refused after its preview was posted: update that one
            self._update_request_message(req)
            return
        message = self.render_request(req)
        if self.web is None or message is None:
            return
        try:
            channel, ts = self.web.post_message(self.channel_for(req), message.text, message.blocks)
        except IncidentBotError as exc:
            log.error("rollback %s: preview not posted to Slack: %s", req.id, exc)
            return
        self.requests.update(req.id, slack_channel=channel, slack_ts=ts)

    def _update_request_message(self, req: RollbackRequest) -> None:
        req = self.requests.get(req.id)
        message = self.render_request(req)
        if self.web is None or message is None or not (req.slack_channel and req.slack_ts):
            return
        try:
            self.web.update_message(req.slack_channel, req.slack_ts, message.text, message.blocks)
        except IncidentBotError as exc:
            log.error("rollback %s: preview not updated: %s", req.id, exc)

    def _post_result_message(self, req: RollbackRequest) -> None:
        if self.web is None or self.renderer is None:
            return
        approvers = [_mention_group(e) for e in sorted(self.settings.slack_approver_ids)]
        message = self.renderer.render("rollback_result.json.j2", result_context(req, approvers))
        try:
            self.web.post_message(self.channel_for(req), message.text, message.blocks)
        except IncidentBotError as exc:
            log.error("rollback %s: outcome not posted to Slack: %s", req.id, exc)


# --- template contexts (pure) ---------------------------------------------------------------------
def _revision(view: dict[str, Any], source: str = "", kind: str = "Deployment") -> dict[str, Any]:
    return {
        "revision": view.get("revision"),
        "label": escape(revision_label(view, source, kind), 200),
        "age": age_text(view.get("age_s")),
        "images": escape(", ".join(view.get("images") or []), 500),
    }


def request_context(req: RollbackRequest, now: datetime) -> dict[str, Any]:
    """What rollback.json.j2 shows, every untrusted string escaped."""
    p = req.preview
    changes = [
        "• " + escape((f"[{c['container']}] " if c.get("container") else "") + str(c.get("text", "")), 300)
        for c in p.get("changes", [])
    ]
    awaiting = req.state is State.PREVIEWED and not req.dry_run
    return {
        "id": req.id,
        "target": escape(req.target, 300),
        "state": req.state.value,
        "emoji": STATE_EMOJI.get(req.state, ":rewind:"),
        "incident_id": req.incident_id,
        "requester": actor_mention(req.requester),
        "decided_by": actor_mention(req.decided_by) if req.decided_by else None,
        "approved_by": actor_mention(req.approved_by) if req.approved_by else None,
        "reason": escape(req.reason, 1000),
        "has_preview": bool(p),
        "argo": [escape(line.strip(), 400) for line in argo_lines(p["argo"])] if p.get("argo") else [],
        "current": _revision(p.get("current") or {}, "", req.kind),
        "target_rev": _revision(p.get("target") or {}, str(p.get("source") or ""), req.kind),
        "kind": escape(str(p.get("kind") or req.kind), 40),
        "helm_lines": _helm_lines(p.get("helm")),
        "changes": changes[:25],
        "more_changes": max(0, len(changes) - 25),
        "dry_run_ok": bool(p.get("dry_run_ok")),
        "dry_run_message": escape(str(p.get("dry_run_message", "")), 500),
        "dry_run": req.dry_run,
        "two_person": req.two_person,
        "expires": slack_date(req.expires_at) if req.expires_at else "",
        "awaiting": awaiting,
        "value": json.dumps({"request_id": req.id}),
        "action_approve": ACTION_ROLLBACK_APPROVE,
        "action_cancel": ACTION_ROLLBACK_CANCEL,
    }


def _helm_lines(helm: dict[str, Any] | None) -> list[str]:
    """The Helm release facts and the warning, escaped (release names come from the cluster)."""
    if not helm:
        return []
    lines = [escape(f"Helm: {helm['change']}", 300)] if helm.get("change") else []
    lines.append(":warning: " + escape(str(helm.get("warning", "")), 600))
    return lines


def result_context(req: RollbackRequest, approvers: list[str]) -> dict[str, Any]:
    """What rollback_result.json.j2 shows: outcome, checks, and on failure who is called and what next."""
    ok = req.state is State.VERIFIED
    older = [r for r in req.preview.get("revisions", []) if req.to_revision and r < req.to_revision]
    next_steps = []
    if not ok:
        if older:
            next_steps.append(
                f"`/incident rollback {req.target} --to-revision {older[-1]}"
                + (f" --incident {req.incident_id}`" if req.incident_id else "`")
                + f" (revision {older[-1]}, older)"
            )
        if req.incident_id:
            next_steps.append(f"`/incident runbook {req.incident_id} service-down` (diagnose and restart)")
        next_steps.append(
            f"`kubectl -n {req.namespace} describe {req.kind.lower()} {req.deployment}` and the pod logs"
        )
    return {
        "id": req.id,
        "ok": ok,
        "target": escape(req.target, 300),
        "from_revision": req.from_revision,
        "to_revision": req.to_revision,
        "incident_id": req.incident_id,
        "requester": actor_mention(req.requester),
        "approved_by": actor_mention(req.approved_by) if req.approved_by else "?",
        "duration": f"{req.duration_s:.1f}s" if req.duration_s is not None else "?",
        "checks": [
            (":white_check_mark: " if c["ok"] else ":white_circle: " if c["ok"] is None else ":x: ")
            + escape(f"{c['name']}: {c['detail']}", 400)
            for c in req.verification.get("checks", [])
        ],
        "reason": escape(req.reason, 800),
        "approvers": " ".join(approvers) if not ok else "",
        "next_steps": ["• " + escape(s, 300) for s in next_steps],
    }
