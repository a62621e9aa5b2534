"""The worker side of Slack interactions: authorize, act, audit, reply.

The web side only verifies, parses and queues (Slack wants an answer within 3 s); everything that talks
to Slack or changes state happens here, in a Celery task. Collaborators that other issues build are
Protocols with honest "not configured" defaults: `TierStatusSource` (vLLM adapter), `AutomationControl`
(kill switch), `MaintenanceWindows` (maintenance store). Runbooks, rollbacks and approval decisions are
sent as Celery tasks by name (bot/tasknames.py) for the runbook engine.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from bot import tasknames
from bot.errors import PermanentError
from bot.incidents.commands import IncidentCommands
from bot.integrations.slack import SlackWeb
from bot.models import Incident, Severity
from bot.slack.authz import Authorizer
from bot.slack.commands import USAGE, Command, Role, UsageError, incident_id, parse
from bot.slack.mrkdwn import escape, mention, slack_date
from bot.slack.render import (
    ACTION_ACK,
    ACTION_APPROVE,
    ACTION_DENY,
    ACTION_RESOLVE,
    ACTION_ROLLBACK_APPROVE,
    ACTION_ROLLBACK_CANCEL,
    ACTION_ROLLBACK_SUGGESTED,
    ACTION_RUN_RUNBOOK,
    STATUS_LABEL,
    SlackRenderer,
)
from bot.storage.audit import AuditLog
from bot.storage.incidents import IncidentStore
from bot.storage.markers import Markers
from bot.tasknames import TaskSender

log = logging.getLogger("incident_bot.slack.service")


# --- collaborators built elsewhere ----------------------------------------------------------------
class NotConfigured(PermanentError):
    """A collaborator this command needs is not wired into this deployment yet."""


@dataclass(frozen=True)
class TierComponent:
    """One part of the serving tier (a model server pool, the router, …)."""

    name: str
    healthy: bool | None
    detail: str = ""


@dataclass(frozen=True)
class TierStatus:
    """The serving tier at a glance."""

    configured: bool
    summary: str
    components: list[TierComponent] = field(default_factory=list)


class TierStatusSource(Protocol):
    """Reports the serving tier's state (implemented by the vLLM/Prometheus adapter)."""

    def snapshot(self) -> TierStatus:
        """The current state of the serving tier."""


class NoTierStatus:
    """Default TierStatusSource until the vLLM adapter is wired in."""

    def snapshot(self) -> TierStatus:
        """Say that no source is configured."""
        return TierStatus(False, "serving-tier status source not configured")


@dataclass(frozen=True)
class AutomationState:
    """Whether automated actions may run."""

    enabled: bool
    detail: str = ""


class AutomationControl(Protocol):
    """The global automation kill switch (built with the runbook engine)."""

    def status(self) -> AutomationState:
        """The switch's current state."""

    def set_enabled(self, enabled: bool, actor: str, reason: str) -> AutomationState:
        """Turn automation on or off."""


class NoAutomationControl:
    """Default AutomationControl: refuses honestly instead of pretending to flip a switch."""

    def status(self) -> AutomationState:
        """Raise NotConfigured."""
        raise NotConfigured("the automation kill switch is not wired into this deployment yet")

    def set_enabled(self, enabled: bool, actor: str, reason: str) -> AutomationState:
        """Raise NotConfigured."""
        raise NotConfigured("the automation kill switch is not wired into this deployment yet")


@dataclass(frozen=True)
class MaintenanceWindow:
    """A period during which automation leaves a target alone."""

    id: str
    namespace: str
    deployment: str | None
    ends_at: datetime
    actor: str
    reason: str = ""


class MaintenanceWindows(Protocol):
    """The maintenance window store (built with the runbook engine's guards)."""

    def list(self) -> list[MaintenanceWindow]:
        """Windows in force now."""

    def start(
        self, namespace: str, deployment: str | None, seconds: int, actor: str, reason: str
    ) -> MaintenanceWindow:
        """Open a window."""

    def end(self, window_id: str, actor: str) -> MaintenanceWindow:
        """Close a window early."""


class NoMaintenanceWindows:
    """Default MaintenanceWindows: refuses honestly."""

    def list(self) -> list[MaintenanceWindow]:
        """Raise NotConfigured."""
        raise NotConfigured("the maintenance window store is not wired into this deployment yet")

    def start(
        self, namespace: str, deployment: str | None, seconds: int, actor: str, reason: str
    ) -> MaintenanceWindow:
        """Raise NotConfigured."""
        raise NotConfigured("the maintenance window store is not wired into this deployment yet")

    def end(self, window_id: str, actor: str) -> MaintenanceWindow:
        """Raise NotConfigured."""
        raise NotConfigured("the maintenance window store is not wired into this deployment yet")


class RollbackDecisions(Protocol):
    """Approve / Cancel of a rollback preview (bot.rollback.flow.RollbackFlow)."""

    def decide(self, request_id: str, user_id: str, approve: bool, *, team_id: str = "") -> tuple[str, str]:
        """Record the click; returns (outcome, reply for the clicker)."""


class NoRollbacks:
    """Default RollbackDecisions: refuses honestly."""

    def decide(self, request_id: str, user_id: str, approve: bool, *, team_id: str = "") -> tuple[str, str]:
        """Raise NotConfigured."""
        raise NotConfigured("the rollback flow is not wired into this deployment")


# --- replies --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What handling one interaction did: outcome (accepted|refused|failed|usage|duplicate) and reply."""

    outcome: str
    reply: str


@dataclass
class SlackService:
    """Runs slash commands and button clicks for the Celery tasks."""

    store: IncidentStore
    commands: IncidentCommands
    web: SlackWeb
    authorizer: Authorizer
    audit: AuditLog
    sender: TaskSender
    renderer: SlackRenderer
    markers: Markers
    notify: Callable[[str], None]
    tier: TierStatusSource = field(default_factory=NoTierStatus)
    automation: AutomationControl = field(default_factory=NoAutomationControl)
    maintenance: MaintenanceWindows = field(default_factory=NoMaintenanceWindows)
    rollbacks: RollbackDecisions = field(default_factory=NoRollbacks)
    done_ttl: int = 3600

    # --- slash commands -------------------------------------------------------------------------
    def handle_command(self, form: dict[str, Any]) -> Outcome:
        """Run one `/incident` command (form fields as Slack sent them) and reply via response_url."""
        user, team = str(form.get("user_id", "")), str(form.get("team_id", ""))
        request_id = str(form.get("trigger_id", ""))
        if request_id and self.markers.handled(request_id):
            return Outcome("duplicate", "")
        try:
            command = parse(str(form.get("text", "")))
        except UsageError as exc:
            outcome = Outcome("usage", f":warning: {escape(str(exc))}\n\n{USAGE}")
        else:
            outcome = self._run(command, user, team)
        response_url = str(form.get("response_url", ""))
        if response_url and outcome.reply:
            self.web.respond(response_url, outcome.reply)
        elif form.get("thread_ts") and form.get("channel_id") and outcome.reply:  # an @-mention
            self.web.post_message(
                str(form["channel_id"]), outcome.reply, [], thread_ts=str(form["thread_ts"])
            )
        if request_id:
            self.markers.mark_handled(request_id, outcome.outcome, self.done_ttl)
        return outcome

    def _run(self, command: Command, user: str, team: str) -> Outcome:
        actor = f"slack:{user}"
        decision = self.authorizer.check(user, command.role, f"/incident {command.label}")
        if not decision.allowed:
            self.audit.record(
                actor=actor,
                team_id=team,
                action=command.label,
                outcome="refused",
                args=command.args,
                reason=decision.reason,
            )
            log.warning("slack command refused: %s by %s (%s)", command.label, actor, team)
            return Outcome("refused", f":no_entry: {decision.reason}")
        try:
            reply = self._execute(command, actor)
        except PermanentError as exc:
            self.audit.record(
                actor=actor,
                team_id=team,
                action=command.label,
                outcome="failed",
                args=command.args,
                reason=str(exc),
            )
            return Outcome("failed", f":warning: Could not `{command.label}`: {escape(str(exc))}")
        self.audit.record(
            actor=actor, team_id=team, action=command.label, outcome="accepted", args=command.args
        )
        return Outcome("accepted", reply)

    def _execute(self, command: Command, actor: str) -> str:
        a = command.args
        match command.name:
            case "help":
                return USAGE
            case "list":
                return self._list()
            case "show":
                return self._show(a["incident_id"])
            case "status":
                return self._status()
            case "ack":
                inc = self.commands.ack(a["incident_id"], actor)
                self.notify(inc.id)
                return f":white_check_mark: {inc.id} acknowledged."
            case "resolve":
                inc = self.commands.resolve(a["incident_id"], actor, a["note"])
                self.notify(inc.id)
                return f":white_check_mark: {inc.id} resolved."
            case "sev":
                inc = self.commands.set_severity(
                    a["incident_id"], Severity(a["severity"]), actor, a["reason"]
                )
                self.notify(inc.id)
                return f":white_check_mark: {inc.id} is now {inc.severity.value}."
            case "commander":
                inc = self.commands.set_commander(a["incident_id"], a["commander"], actor)
                self.notify(inc.id)
                return f":white_check_mark: {mention(inc.commander)} is the incident commander of {inc.id}."
            case "runbook":
                return self._request_runbook(
                    a["incident_id"], a["runbook"], bool(a["dry_run"]), actor, a.get("overrides")
                )
            case "rollback":
                return self._request_rollback(a, actor)
            case "automation":
                return self._automation(a, actor)
            case "maintenance":
                return self._maintenance(a, actor)
        raise UsageError(f"unknown subcommand `{command.name}`")

    # --- read-only ------------------------------------------------------------------------------
    @staticmethod
    def _line(inc: Incident) -> str:
        ic = f" · IC {mention(inc.commander)}" if inc.commander else ""
        return (
            f"• `{inc.id}` {inc.severity.value} {STATUS_LABEL[inc.status]} · {escape(inc.title, 120)}"
            f" · since {slack_date(inc.created_at)}{ic}"
        )

    def _list(self) -> str:
        incidents = self.store.recent(limit=20, open_only=True)
        if not incidents:
            return "No open incidents. :tada:"
        return "*Open incidents*\n" + "\n".join(self._line(i) for i in incidents)

    def _show(self, incident_id: str) -> str:
        inc = self.store.get(incident_id)
        timeline = self.store.timeline(incident_id)[-8:]
        lines = [
            self._line(inc),
            f"*Severity reason:* {escape(inc.severity_reason, 300)}",
            f"*Alerts:* {inc.firing_count} of {len(inc.alerts)} firing",
            "*Latest timeline:*",
            *(f"• {slack_date(e.at)} `{escape(e.kind, 40)}` {escape(e.message, 200)}" for e in timeline),
        ]
        return "\n".join(lines)

    def _status(self) -> str:
        snap = self.tier.snapshot()
        if not snap.configured:
            return f":grey_question: {escape(snap.summary)}"
        icon = {True: ":large_green_circle:", False: ":red_circle:", None: ":white_circle:"}
        rows = [f"{icon[c.healthy]} *{escape(c.name, 80)}* {escape(c.detail, 200)}" for c in snap.components]
        return "\n".join([f"*Serving tier:* {escape(snap.summary, 300)}", *rows])

    # --- actions on systems ---------------------------------------------------------------------
    def _request_runbook(
        self, incident_id: str, runbook: str, dry_run: bool, actor: str, overrides: dict[str, str] | None
    ) -> str:
        self.store.get(incident_id)  # IncidentNotFound is a PermanentError with a readable message
        kwargs: dict[str, Any] = {
            "incident_id": incident_id,
            "runbook": runbook,
            "dry_run": dry_run,
            "trigger": f"requested by {actor}",
        }
        if overrides:
            kwargs["overrides"] = overrides
        task_id = self.sender.send(tasknames.RUNBOOK_RUN, kwargs=kwargs)
        mode = " (dry run)" if dry_run else ""
        given = " with " + " ".join(f"{k}={v}" for k, v in sorted(overrides.items())) if overrides else ""
        self.store.append_timeline(
            incident_id,
            "runbook_requested",
            f"Runbook {runbook}{mode} requested by {actor}{given}.",
            {"actor": actor, "runbook": runbook, "dry_run": dry_run, "task_id": task_id, **kwargs},
        )
        self.notify(incident_id)
        return (
            f":arrow_forward: Runbook `{escape(runbook)}`{mode} for {incident_id} queued (task `{task_id}`)."
        )

    def _request_rollback(self, a: dict[str, Any], actor: str) -> str:
        if a["incident_id"]:
            self.store.get(a["incident_id"])
        kwargs = {**a, "actor": actor}
        task_id = self.sender.send(tasknames.ROLLBACK_REQUEST, kwargs=kwargs)
        target = f"{a['namespace']}/{a['deployment']}"
        if a.get("kind"):
            target = f"{a['kind']} {target}"
        rev = f" to revision {a['to_revision']}" if a["to_revision"] else " to the previous revision"
        if a["incident_id"]:
            self.store.append_timeline(
                a["incident_id"],
                "rollback_requested",
                f"Rollback of {target}{rev} requested by {actor}.",
                {"actor": actor, **a, "task_id": task_id},
            )
            self.notify(a["incident_id"])
        return (
            f":rewind: Rollback of `{target}`{rev} queued (task `{task_id}`); the rollback flow reports back."
        )

    def _automation(self, a: dict[str, Any], actor: str) -> str:
        if a["action"] == "status":
            state = self.automation.status()
        else:
            state = self.automation.set_enabled(a["action"] == "on", actor, a["reason"])
        word = "ON" if state.enabled else "OFF"
        return f"Automation is *{word}*." + (f" {escape(state.detail)}" if state.detail else "")

    def _maintenance(self, a: dict[str, Any], actor: str) -> str:
        if a["action"] == "list":
            windows = self.maintenance.list()
            if not windows:
                return "No maintenance windows in force."
            return "\n".join(
                f"• `{escape(w.id, 64)}` {escape(w.namespace)}"
                f"{'/' + escape(w.deployment) if w.deployment else ''}"
                f" until {slack_date(w.ends_at)} ({escape(w.actor, 60)}: {escape(w.reason, 200)})"
                for w in windows
            )
        if a["action"] == "start":
            w = self.maintenance.start(a["namespace"], a["deployment"], a["seconds"], actor, a["reason"])
            return f":construction: Maintenance window `{escape(w.id, 64)}` until {slack_date(w.ends_at)}."
        w = self.maintenance.end(a["window_id"], actor)
        return f"Maintenance window `{escape(w.id, 64)}` ended."

    # --- buttons --------------------------------------------------------------------------------
    def handle_action(self, payload: dict[str, Any]) -> Outcome:
        """Handle one button click (fields from the block_actions payload) and tell the clicker."""
        user = str(payload.get("user_id", ""))
        team = str(payload.get("team_id", ""))
        action_id = str(payload.get("action_id", ""))
        value = str(payload.get("value", ""))
        request_id = str(payload.get("request_id", ""))
        if request_id and self.markers.handled(request_id, action=True):
            return Outcome("duplicate", "")
        try:
            outcome = self._action(action_id, value, user, team, payload)
        except UsageError as exc:
            outcome = Outcome("usage", f":warning: {escape(str(exc))}")
        response_url = str(payload.get("response_url", ""))
        if response_url and outcome.reply:
            self.web.respond(response_url, outcome.reply, replace_original=False)
        if request_id:
            self.markers.mark_handled(request_id, outcome.outcome, self.done_ttl, action=True)
        return outcome

    def _action(self, action_id: str, value: str, user: str, team: str, payload: dict[str, Any]) -> Outcome:
        if action_id == ACTION_ACK:
            return self._run(Command("ack", {"incident_id": incident_id(value)}, Role.RESPONDER), user, team)
        if action_id == ACTION_RESOLVE:
            command = Command("resolve", {"incident_id": incident_id(value), "note": ""}, Role.RESPONDER)
            return self._run(command, user, team)
        if action_id in (ACTION_ROLLBACK_APPROVE, ACTION_ROLLBACK_CANCEL):
            try:
                request_id = str(json.loads(value)["request_id"])
            except (ValueError, KeyError, TypeError):
                raise UsageError("this button names no rollback request") from None
            try:
                outcome, reply = self.rollbacks.decide(
                    request_id, user, action_id == ACTION_ROLLBACK_APPROVE, team_id=team
                )
            except PermanentError as exc:
                return Outcome("failed", f":warning: {escape(str(exc))}")
            return Outcome(outcome, reply)
        try:
            data = json.loads(value)
            inc_id = incident_id(str(data["incident_id"]))
        except (ValueError, KeyError, TypeError):
            raise UsageError("this button carries no incident; it may come from an old message") from None
        if action_id == ACTION_RUN_RUNBOOK:
            args = {"incident_id": inc_id, "runbook": str(data.get("runbook", "")), "dry_run": False}
            return self._run(Command("runbook", args, Role.APPROVER), user, team)
        if action_id == ACTION_ROLLBACK_SUGGESTED:
            # the suggested revision, not "the previous one": after an undo, the previous one is the bad one
            target = f"{data.get('namespace', '')}/{data.get('deployment', '')}"
            revision = (
                f" --to-revision {shlex.quote(str(data['to_revision']))}" if data.get("to_revision") else ""
            )
            kind = f" --kind {shlex.quote(str(data['kind']))}" if data.get("kind") else ""
            return self._run(
                parse(f"rollback {shlex.quote(target)}{revision}{kind} --incident {inc_id}"), user, team
            )
        if action_id in (ACTION_APPROVE, ACTION_DENY):
            decision = "approve" if action_id == ACTION_APPROVE else "deny"
            return self._decide(inc_id, str(data.get("step_key", "")), decision, user, team, payload)
        raise UsageError(f"unknown button `{escape(action_id, 60)}`")

    def _decide(
        self, inc_id: str, step_key: str, decision: str, user: str, team: str, payload: dict[str, Any]
    ) -> Outcome:
        actor = f"slack:{user}"
        label = f"{decision} {inc_id}/{step_key}"
        args = {"incident_id": inc_id, "step_key": step_key, "decision": decision}
        check = self.authorizer.check(user, Role.APPROVER, label)
        if not check.allowed:
            self.audit.record(
                actor=actor, team_id=team, action=label, outcome="refused", args=args, reason=check.reason
            )
            return Outcome("refused", f":no_entry: {check.reason}")
        if not step_key:
            raise UsageError("this approval button names no step")
        self.store.get(inc_id)  # before recording a decision: IncidentNotFound leaves nothing behind
        request_id = str(payload.get("request_id", ""))
        record = json.dumps({"decision": decision, "actor": actor, "request_id": request_id})
        if not self.markers.claim_approval(inc_id, step_key, record, 30 * 86_400):
            earlier = json.loads(self.markers.approval(inc_id, step_key) or "{}")
            if earlier.get("request_id") != request_id:  # not a redelivery of this very click
                who = earlier.get("actor")
                reason = f"step `{escape(step_key, 100)}` was already {earlier.get('decision')}d by {who}"
                self.audit.record(
                    actor=actor, team_id=team, action=label, outcome="failed", args=args, reason=reason
                )
                return Outcome("failed", f":warning: {reason}")
        task_id = self.sender.send(tasknames.APPROVAL_DECISION, args=(inc_id, step_key, decision, actor))
        self.store.append_timeline(
            inc_id,
            "approval_decided",
            f"Step {step_key} {decision}d by {actor}.",
            {"actor": actor, "step_key": step_key, "decision": decision, "task_id": task_id},
        )
        channel, ts = str(payload.get("channel_id", "")), str(payload.get("message_ts", ""))
        if channel and ts:
            message = self.renderer.decision(inc_id, step_key, decision, actor, datetime.now(UTC))
            self.web.update_message(channel, ts, message.text, message.blocks)
        self.notify(inc_id)
        self.audit.record(actor=actor, team_id=team, action=label, outcome="accepted", args=args)
        return Outcome("accepted", "")
