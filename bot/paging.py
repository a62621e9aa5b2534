"""Two-way PagerDuty sync: page P0/P1 incidents, mirror acks and resolves, take PagerDuty's webhooks in.

State per incident lives in Redis (bot/storage/paging.py: what PagerDuty was last told or told us, and
the PagerDuty incident id once a webhook names it). `reconcile` compares it with the incident and sends only
the difference, so a redelivered task, a duplicate alert group or an ack that came *from* PagerDuty sends
nothing (no echo loops). Which levels page is the severity policy's `page` flag. An ack or resolve made in
Slack goes through the REST API as the person who made it (`From` = their mapped email, else the service
user); without a known PagerDuty incident id it falls back to the Events API with the same dedup key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.errors import InvalidTransition, PermanentError
from bot.incidents.commands import IncidentCommands
from bot.integrations.pagerduty import Link, PagerDutyClient
from bot.models import AlertStatus, Incident, IncidentStatus
from bot.severity import Severity, SeverityPolicy
from bot.storage.incidents import IncidentNotFound, IncidentStore
from bot.storage.paging import PagingState
from bot.templating import render_json

log = logging.getLogger("incident_bot.paging")

DEDUP_PREFIX = "llmd-incident-bot/"
ACTIVE = ("triggered", "acknowledged")


def dedup_key(incident_id: str) -> str:
    """The Events API dedup key of an incident: stable across every notification about it."""
    return f"{DEDUP_PREFIX}{incident_id}"


def incident_of(dedup: str | None) -> str | None:
    """The incident id in one of our dedup keys, or None for alerts the bot did not open."""
    if dedup and dedup.startswith(DEDUP_PREFIX):
        return dedup[len(DEDUP_PREFIX) :]
    return None


def desired_state(incident: Incident, recorded: str, pages: bool) -> str:
    """What PagerDuty should show for this incident, given what it was last told (`none` if never)."""
    if incident.status is IncidentStatus.RESOLVED:
        return "resolved" if recorded in ACTIVE else recorded
    if recorded in ("none", "resolved"):
        return "triggered" if pages else recorded
    if incident.status in (IncidentStatus.ACKNOWLEDGED, IncidentStatus.MITIGATING):
        return "acknowledged"
    return recorded


@dataclass
class PagerDutySync:
    """Reconciles incidents with PagerDuty and applies PagerDuty webhooks to incidents."""

    store: IncidentStore
    state: PagingState
    commands: IncidentCommands
    policy: SeverityPolicy
    pagerduty: Callable[[Severity], PagerDutyClient]
    templates_dir: Any
    email_by_slack_user: Mapping[str, str]
    links: Callable[[Incident], list[Link]] = lambda _incident: []

    def recorded(self, incident_id: str) -> dict[str, str]:
        """What the bot last told PagerDuty (or learnt from it) about this incident."""
        return self.state.recorded(incident_id)

    def _record(self, incident_id: str, **fields: str) -> None:
        self.state.record(incident_id, **fields)

    # --- bot -> PagerDuty -----------------------------------------------------------------------
    def reconcile(self, incident_id: str) -> str:
        """Bring PagerDuty in line with the incident; returns what was done ("in sync", "triggered", …)."""
        with self.state.locked(incident_id) as held:
            if not held:
                raise PermanentError(f"PagerDuty sync of {incident_id} is busy elsewhere")
            state = self._sync_state(incident_id)
            changes = self._send_change_events(incident_id)
            return f"{state}; {changes} change event(s)" if changes else state

    def _send_change_events(self, incident_id: str) -> int:
        """A change event for each real (not dry-run) change a runbook step made, each sent once."""
        sent = 0
        timeline = self.store.timeline(incident_id)
        # an `approval` step gates the steps after it: its approver approved the run's later changes
        approvers: dict[str, str] = {}
        for entry in timeline:
            d = entry.data
            if entry.kind == "runbook_step" and d.get("approved_by"):
                approvers[str(d.get("run_id"))] = str(d["approved_by"])
            if entry.kind != "runbook_step" or not (
                d.get("mutating") and d.get("changed") and not d.get("dry_run")
            ):
                continue
            if self.state.change_sent(incident_id, entry.id):
                continue
            incident = self.store.get(incident_id)
            raw_inputs = d.get("inputs")
            inputs: dict[str, Any] = raw_inputs if isinstance(raw_inputs, dict) else {}
            target = "/".join(str(inputs.get(k)) for k in ("namespace", "deployment") if inputs.get(k))
            self.pagerduty(incident.severity).change_event(
                summary=f"{d.get('type')} on {target or 'the cluster'} by runbook {d.get('runbook')} "
                f"for {incident_id}: {entry.message}",
                source="llmd-incident-bot",
                custom_details={
                    "incident": incident_id,
                    "runbook": d.get("runbook"),
                    "step": d.get("step"),
                    "action": d.get("type"),
                    "target": target,
                    "approved_by": d.get("approved_by")
                    or approvers.get(str(d.get("run_id")))
                    or "automatic (no approval required)",
                    "output": d.get("output"),
                },
                links=self.links(incident),
            )
            self.state.mark_change_sent(incident_id, entry.id)
            sent += 1
        return sent

    def _sync_state(self, incident_id: str) -> str:
        """The paging part of reconcile: trigger, acknowledge or resolve as the incident requires."""
        incident = self.store.get(incident_id)
        state = self.recorded(incident_id)
        recorded = state.get("state", "none")
        pages = self.policy.level(incident.severity).page and not getattr(incident, "in_maintenance", False)
        want = desired_state(incident, recorded, pages)
        if want == recorded:
            return "in sync"
        client = self.pagerduty(incident.severity)
        key = dedup_key(incident.id)
        if want == "triggered":
            body = render_json(
                self.templates_dir,
                "pagerduty/trigger.json.j2",
                {
                    "incident": incident,
                    "source": incident.common_labels.get("namespace", "llmd-incident-bot"),
                    "firing": sorted(
                        a.name for a in incident.alerts.values() if a.status is AlertStatus.FIRING
                    ),
                },
            )
            client.trigger(
                dedup_key=key,
                summary=body["summary"],
                source=body["source"],
                severity=incident.severity,
                custom_details=body["custom_details"],
                links=self.links(incident),
            )
            how = f"paged PagerDuty ({incident.severity.value}, dedup key {key})"
        else:
            how = self._mirror(client, incident, state, want)
        self._record(incident.id, state=want)
        self.store.append_timeline(
            incident.id, f"pagerduty_{want}", how[0].upper() + how[1:] + ".", {"dedup_key": key}
        )
        log.info("pagerduty sync %s: %s -> %s (%s)", incident.id, recorded, want, how)
        return want

    def _mirror(self, client: PagerDutyClient, incident: Incident, state: dict[str, str], want: str) -> str:
        """Send an ack or resolve made in the bot (or Slack) to PagerDuty, as the person where possible."""
        actor = self._last_actor(incident.id, "acknowledged" if want == "acknowledged" else "resolved")
        pd_id = state.get("pd_incident_id")
        if actor.startswith("slack:") and pd_id:
            email = self.email_by_slack_user.get(actor.removeprefix("slack:"))
            client.set_incident_status(pd_id, want, from_email=email)
            return f"{want} PagerDuty incident {pd_id} via REST as {email or 'the service user'}"
        if want == "acknowledged":
            client.acknowledge(dedup_key(incident.id))
        else:
            client.resolve(dedup_key(incident.id))
        return f"{want} the PagerDuty alert via the Events API"

    def _last_actor(self, incident_id: str, kind: str) -> str:
        for entry in reversed(self.store.timeline(incident_id)):
            if entry.kind == kind:
                return str(entry.data.get("actor", ""))
        return ""

    # --- PagerDuty -> bot -----------------------------------------------------------------------
    def handle_webhook(self, event: Mapping[str, Any], webhook_id: str) -> tuple[str, str | None]:
        """Apply one webhook v3 event; returns (outcome, incident id). Redeliveries do nothing."""
        if self.state.webhook_handled(webhook_id):
            return "duplicate", None
        outcome, incident_id = self._apply_webhook(event)
        self.state.mark_webhook(webhook_id, outcome)
        return outcome, incident_id

    def _apply_webhook(self, event: Mapping[str, Any]) -> tuple[str, str | None]:
        data = event.get("data") or {}
        event_type = str(event.get("event_type", ""))
        pd_id = str(data.get("id", ""))
        incident_id = incident_of(data.get("incident_key"))
        if incident_id is None and pd_id:
            incident_id = self.state.incident_of(pd_id)
        try:
            incident = self.store.get(incident_id) if incident_id else None
        except IncidentNotFound:
            incident = None
        if incident is None:
            self.state.ignored(event_type, pd_id, str(data.get("incident_key")))
            log.info(
                "pagerduty webhook %s about %s ignored: not an incident the bot opened", event_type, pd_id
            )
            return "ignored", None
        if pd_id:
            self._record(incident.id, pd_incident_id=pd_id)
            self.state.link(pd_id, incident.id)
        agent = event.get("agent") or {}
        who = str(agent.get("email") or agent.get("summary") or "someone")
        actor = f"pagerduty:{who}"
        try:
            if event_type == "incident.acknowledged":
                self._record(incident.id, state="acknowledged")
                self.commands.ack(incident.id, actor)
                return "acknowledged", incident.id
            if event_type == "incident.resolved":
                self._record(incident.id, state="resolved")
                self.commands.resolve(incident.id, actor, "resolved in PagerDuty")
                return "resolved", incident.id
        except InvalidTransition:
            return "already", incident.id  # the change is already true here: nothing to do
        if event_type == "incident.triggered":
            return "linked", incident.id
        title = event_type.removeprefix("incident.").replace("_", " ")
        self.store.append_timeline(
            incident.id,
            "pagerduty_" + event_type.removeprefix("incident."),
            f"PagerDuty: {title} by {who}.",
            {"actor": actor, "pd_incident": pd_id},
        )
        return "recorded", incident.id
