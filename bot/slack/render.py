"""Block Kit messages from Jinja2 templates in ``templates/slack/``.

Rendering rules that keep alert text inert:

* templates are files in the repository; data is only ever passed as context, never compiled;
* the environment is ``ImmutableSandboxedEnvironment`` with ``StrictUndefined`` (a missing field is an
  error, not an empty string);
* every ``{{ expression }}`` is written as a JSON literal (the environment's ``finalize`` json-encodes it), so
  no value can break out of the JSON document;
* every string that came from alerts, runbooks or people is mrkdwn-escaped while the context is built
  (`bot.slack.mrkdwn.escape`), so ``<!channel>`` or ``<http://x|y>`` show as text.

Context builders are pure functions of an incident, its timeline and the current time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.errors import ConfigError
from bot.models import AlertStatus, Incident, IncidentStatus, Severity, TimelineEntry
from bot.slack.mrkdwn import escape, escape_tree, mention, safe_url, slack_date

#: Status words of the communication template.
STATUS_LABEL = {
    IncidentStatus.TRIGGERED: "INVESTIGATING",
    IncidentStatus.ACKNOWLEDGED: "INVESTIGATING",
    IncidentStatus.MITIGATING: "MITIGATING",
    IncidentStatus.RESOLVED: "RESOLVED",
}
STATUS_EMOJI = {
    "INVESTIGATING": ":mag:",
    "MITIGATING": ":hammer_and_wrench:",
    "RESOLVED": ":white_check_mark:",
}
SEVERITY_EMOJI = {Severity.P0: ":red_circle:", Severity.P1: ":large_orange_circle:"}

#: How often stakeholders are promised an update, per severity.
UPDATE_CADENCE = {
    Severity.P0: timedelta(minutes=15),
    Severity.P1: timedelta(minutes=30),
    Severity.P2: timedelta(hours=1),
    Severity.P3: timedelta(hours=4),
}

#: Timeline kinds that describe what responders or automation are doing ("current actions").
ACTION_KINDS = frozenset(
    {
        "runbook_requested",
        "runbook_started",
        "step_started",
        "step_completed",
        "step_failed",
        "approval_requested",
        "approval_decided",
        "rollback_requested",
        "rollback_previewed",
        "rollback_approved",
        "rollback_verified",
        "rollback_failed",
        "escalated",
    }
)

#: Human labels of timeline kinds shown in thread replies.
KIND_LABEL = {
    "opened": "Incident opened",
    "alerts_changed": "Alerts changed",
    "acknowledged": "Acknowledged",
    "resolved": "Resolved",
    "severity_changed": "Severity changed",
    "commander_set": "Incident commander",
    "runbook_requested": "Runbook requested",
    "runbook_started": "Runbook started",
    "step_started": "Runbook step started",
    "step_completed": "Runbook step done",
    "step_failed": "Runbook step failed",
    "approval_requested": "Approval needed",
    "approval_decided": "Approval decision",
    "rollback_requested": "Rollback requested",
    "rollback_suggested": "Rollback suggested",
    "rollback_previewed": "Rollback preview",
    "rollback_refused": "Rollback refused",
    "rollback_approved": "Rollback approved",
    "rollback_cancelled": "Rollback cancelled",
    "rollback_expired": "Rollback expired",
    "rollback_verified": "Rollback verified",
    "rollback_failed": "Rollback FAILED verification",
    "escalate": "Escalated to a person",
    "escalated": "Escalated",
}

#: Button action_ids (the interactivity handler matches on these).
ACTION_ACK = "incident_ack"
ACTION_RESOLVE = "incident_resolve"
ACTION_APPROVE = "runbook_approve"
ACTION_DENY = "runbook_deny"
ACTION_RUN_RUNBOOK = "runbook_run_suggested"
ACTION_ROLLBACK_APPROVE = "rollback_approve"
ACTION_ROLLBACK_CANCEL = "rollback_cancel"
ACTION_ROLLBACK_SUGGESTED = "rollback_suggested"
LINK_ACTION_PREFIX = "link_"

_IMPACT_KEYS = ("impact", "description", "summary")
_GRAFANA_KEYS = ("grafana_url", "dashboard_url", "dashboard")


@dataclass(frozen=True)
class Message:
    """A rendered message: the notification fallback text and the Block Kit blocks."""

    text: str
    blocks: list[dict[str, Any]]


def _json_literal(value: object) -> str:
    """Jinja finalize hook: every printed expression becomes a JSON literal."""
    return json.dumps(value, ensure_ascii=False)


def actor_mention(actor: object) -> str:
    """`slack:U123` -> `<@U123>`; any other actor escaped as text."""
    text = str(actor or "")
    if text.startswith("slack:"):
        return mention(text.removeprefix("slack:"))
    return escape(text or "automation", 100)


class SlackRenderer:
    """Renders the Slack templates; one instance per process is enough."""

    def __init__(self, templates_dir: Path) -> None:
        directory = templates_dir / "slack"
        if not directory.is_dir():
            raise ConfigError(f"Slack templates not found: {directory} is not a directory")
        self._env = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(str(directory)),
            undefined=StrictUndefined,
            finalize=_json_literal,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, template: str, context: dict[str, Any]) -> Message:
        """Render one template to a Message; the output must be JSON with `text` and `blocks`."""
        source = self._env.get_template(template).render(**context)
        try:
            document = json.loads(source)
        except json.JSONDecodeError as exc:  # a template bug, never data: data is always a JSON literal
            raise ConfigError(f"template slack/{template} did not produce JSON: {exc}") from exc
        return Message(text=str(document["text"]), blocks=list(document["blocks"]))

    def has_template(self, name: str) -> bool:
        """Whether templates/slack/<name> exists."""
        try:
            self._env.get_template(name)
        except TemplateNotFound:
            return False
        return True

    # --- the messages ---------------------------------------------------------------------------
    def root(self, incident: Incident, timeline: list[TimelineEntry], now: datetime) -> Message:
        """The incident's root message (kept current with chat.update)."""
        return self.render("incident_root.json.j2", root_context(incident, timeline, now))

    def event(self, incident: Incident, entry: TimelineEntry) -> Message:
        """A threaded reply for one timeline entry."""
        name = f"event_{entry.kind}.json.j2"
        template = name if self.has_template(name) else "event.json.j2"
        return self.render(template, event_context(incident, entry))

    def digest(self, channel: str, incidents: list[Incident], window_seconds: int, now: datetime) -> Message:
        """One alert-storm digest for a channel, listing the incidents it stands for."""
        return self.render("digest.json.j2", digest_context(channel, incidents, window_seconds, now))

    def decision(self, incident_id: str, step_key: str, decision: str, actor: str, now: datetime) -> Message:
        """What an approval request turns into once someone approved or denied it."""
        context = {
            "incident_id": escape(incident_id, 40),
            "step_key": escape(step_key, 200),
            "approved": decision == "approve",
            "actor": actor_mention(actor),
            "at": slack_date(now),
        }
        return self.render("approval_decided.json.j2", context)


# --- context builders (pure) ---------------------------------------------------------------------
def _first_annotation(incident: Incident, keys: tuple[str, ...]) -> str | None:
    alerts = sorted(incident.alerts.values(), key=lambda a: (a.status is not AlertStatus.FIRING, a.name))
    for key in keys:
        for alert in alerts:
            value = alert.annotations.get(key)
            if value:
                return value
    return None


def _links(incident: Incident) -> list[dict[str, str]]:
    links: list[dict[str, str]] = []
    runbook = safe_url(_first_annotation(incident, ("runbook_url",)))
    if runbook:
        links.append({"text": "Runbook", "url": runbook, "action_id": LINK_ACTION_PREFIX + "runbook"})
    grafana = safe_url(_first_annotation(incident, _GRAFANA_KEYS))
    if grafana:
        links.append({"text": "Grafana", "url": grafana, "action_id": LINK_ACTION_PREFIX + "grafana"})
    am = safe_url(incident.external_url.rstrip("/") + "/#/alerts" if incident.external_url else None)
    if am:
        links.append({"text": "Alertmanager", "url": am, "action_id": LINK_ACTION_PREFIX + "alertmanager"})
    return links


def _latest(timeline: list[TimelineEntry], kind: str) -> TimelineEntry | None:
    for entry in reversed(timeline):
        if entry.kind == kind:
            return entry
    return None


def suggested_runbook(incident: Incident) -> str | None:
    """The runbook name an alert suggests (annotation or label `runbook`), if it is a plain name."""
    name = _first_annotation(incident, ("runbook",)) or incident.common_labels.get("runbook")
    if name and len(name) <= 100 and all(c.isalnum() or c in "-_." for c in name):
        return name
    return None


def root_context(incident: Incident, timeline: list[TimelineEntry], now: datetime) -> dict[str, Any]:
    """Everything the root template shows, with untrusted text escaped."""
    status = STATUS_LABEL[incident.status]
    actions = [e for e in timeline if e.kind in ACTION_KINDS][-3:]
    eta_entry = next((e for e in reversed(timeline) if e.data.get("eta")), None)
    last_update = max([incident.updated_at, *(e.at for e in timeline)])
    acked = _latest(timeline, "acknowledged")
    resolved = _latest(timeline, "resolved")
    runbook = suggested_runbook(incident)
    open_ = incident.status is not IncidentStatus.RESOLVED
    alerts = sorted(incident.alerts.values(), key=lambda a: (a.status is not AlertStatus.FIRING, a.name))
    return {
        "id": escape(incident.id, 40),
        "title": escape(incident.title, 300),
        "status": status,
        "status_emoji": STATUS_EMOJI[status],
        "severity": incident.severity.value,
        "severity_emoji": SEVERITY_EMOJI.get(incident.severity, ":large_yellow_circle:"),
        "severity_reason": escape(incident.severity_reason, 500),
        "impact": escape(_first_annotation(incident, _IMPACT_KEYS) or "not yet assessed", 800),
        "started": slack_date(incident.created_at),
        "resolved": slack_date(incident.resolved_at) if incident.resolved_at else None,
        "current_actions": [f"{escape(e.message, 300)}" for e in actions],
        "eta": escape(str(eta_entry.data["eta"]), 100) if eta_entry else "not estimated yet",
        "next_update": slack_date(last_update + UPDATE_CADENCE[incident.severity]) if open_ else None,
        "commander": mention(incident.commander) if incident.commander else None,
        "acknowledged_by": actor_mention(acked.data.get("actor")) if acked else None,
        "resolved_by": actor_mention(resolved.data.get("actor")) if resolved else None,
        "firing": incident.firing_count,
        "alert_count": len(incident.alerts),
        "alerts": [
            {"name": escape(a.name, 100), "firing": a.status is AlertStatus.FIRING} for a in alerts[:10]
        ],
        "more_alerts": max(0, len(alerts) - 10) + incident.truncated_alerts,
        "links": _links(incident),
        "can_ack": incident.status is IncidentStatus.TRIGGERED,
        "can_resolve": open_,
        "runbook": runbook if open_ else None,
        "runbook_value": json.dumps({"incident_id": incident.id, "runbook": runbook}) if runbook else "",
        "action_ack": ACTION_ACK,
        "action_resolve": ACTION_RESOLVE,
        "action_run_runbook": ACTION_RUN_RUNBOOK,
    }


def event_context(incident: Incident, entry: TimelineEntry) -> dict[str, Any]:
    """What an event reply shows: the entry's message and data (escaped) and who did it."""
    data = escape_tree(entry.data)
    assert isinstance(data, dict)
    step_key = str(entry.data.get("step_key", ""))[:200]
    value = json.dumps({"incident_id": incident.id, "step_key": step_key})
    rollback_value = json.dumps(
        {
            "incident_id": incident.id,
            "namespace": str(entry.data.get("namespace", ""))[:63],
            "deployment": str(entry.data.get("deployment", ""))[:253],
            "to_revision": entry.data.get("to_revision"),
            **(
                {"kind": str(entry.data["kind"])[:40]}
                if entry.data.get("kind", "Deployment") != "Deployment"
                else {}
            ),
        }
    )
    return {
        "id": escape(incident.id, 40),
        "kind": escape(entry.kind, 60),
        "label": KIND_LABEL.get(entry.kind, escape(entry.kind.replace("_", " ").capitalize(), 60)),
        "message": escape(entry.message, 2500),
        "at": slack_date(entry.at),
        "actor": actor_mention(entry.data["actor"]) if entry.data.get("actor") else None,
        "commander": mention(str(entry.data["commander"])) if entry.data.get("commander") else None,
        "data": data,
        "severity": incident.severity.value,
        "approval_value": value,
        "action_approve": ACTION_APPROVE,
        "action_deny": ACTION_DENY,
        "rollback_value": rollback_value,
        "action_rollback": ACTION_ROLLBACK_SUGGESTED,
    }


def digest_context(
    channel: str, incidents: list[Incident], window_seconds: int, now: datetime
) -> dict[str, Any]:
    """The alert-storm digest: counts and the newest incidents, one line each."""
    shown = sorted(incidents, key=lambda i: i.id, reverse=True)[:20]
    counts: dict[str, int] = {}
    for inc in incidents:
        counts[STATUS_LABEL[inc.status]] = counts.get(STATUS_LABEL[inc.status], 0) + 1
    return {
        "channel": escape(channel, 100),
        "count": len(incidents),
        "open": sum(1 for i in incidents if i.status is not IncidentStatus.RESOLVED),
        "by_status": [f"{k}: {v}" for k, v in sorted(counts.items())],
        "window_minutes": max(1, window_seconds // 60),
        "updated": slack_date(now),
        "lines": [
            f"• `{escape(i.id, 40)}` {i.severity.value} {STATUS_LABEL[i.status]} · {escape(i.title, 60)}"
            for i in shown
        ],
        "more": max(0, len(incidents) - len(shown)),
    }
