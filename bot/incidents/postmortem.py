"""Postmortem drafts: a pure context built from an incident and its timeline, rendered from a template.

The template (``templates/postmortem.md.j2``) runs in Jinja2's ``ImmutableSandboxedEnvironment`` with
``StrictUndefined``. Alert-provided text (titles, labels, annotations, timeline messages) only ever enters
as context values, never as template source, so ``{{ 7*7 }}`` in an annotation is printed as written. The
``md`` filter escapes Markdown's active characters in such values, so an annotation cannot add links,
HTML or table cells to the draft.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.models import AlertState, AlertStatus, Incident, TimelineEntry
from bot.severity import LevelSpec, SeverityPolicy

TEMPLATE = "postmortem.md.j2"
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#!])")


def md(value: object) -> str:
    """Inline Markdown-safe text: one line, active characters backslash-escaped."""
    text = " ".join(str(value).split())
    return _MD_SPECIAL.sub(r"\\\1", text)


def human(delta: timedelta | None) -> str:
    """A duration for people: '4 min 30 s', '2 h 5 min', '1 d 3 h'; '-' for None."""
    if delta is None:
        return "-"
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    shown = [f"{n} {unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0 s"


def _actor(entry: TimelineEntry) -> str | None:
    actor = entry.data.get("actor")
    return str(actor) if actor else None


def is_action(entry: TimelineEntry) -> bool:
    """Whether a timeline entry records an action (a runbook step, or anything someone approved)."""
    return entry.kind.startswith("step_") or bool(entry.data.get("approved_by"))


def _open_questions(incident: Incident, timeline: Sequence[TimelineEntry]) -> list[str]:
    kinds = [t.kind for t in timeline]
    questions = ["What was the root cause, and what would have detected it sooner?"]
    if incident.acknowledged_at is None:
        questions.append("Nobody acknowledged this incident: did the page reach the right people?")
    if "escalated" in kinds:
        questions.append("Escalation fired before anyone acknowledged: was on-call reachable?")
    if incident.reopened_count:
        questions.append(
            f"It was reopened {incident.reopened_count} time(s): was the first resolution a real fix?"
        )
    if "flapping" in kinds:
        questions.append("The alert group flapped: is the alert threshold or its `for` duration too tight?")
    if any(t.kind == "severity_changed" for t in timeline):
        questions.append("Severity changed during the incident: did the policy classify it right at first?")
    if incident.in_maintenance:
        questions.append("It fired inside a maintenance window: expected side effect, or a real problem?")
    if incident.truncated_alerts:
        questions.append(
            f"{incident.truncated_alerts} alert(s) were truncated by Alertmanager: is the group too broad?"
        )
    if not any(is_action(t) for t in timeline):
        questions.append("No actions were recorded: which runbook step would have helped?")
    return questions


def _severity_changes(timeline: Sequence[TimelineEntry]) -> list[dict[str, Any]]:
    return [
        {
            "at": t.at,
            "from": t.data.get("from"),
            "to": t.data.get("to"),
            "actor": _actor(t) or "unknown",
            "reason": t.data.get("reason", ""),
            "automatic": bool(t.data.get("automatic")),
        }
        for t in timeline
        if t.kind == "severity_changed"
    ]


def _actions(timeline: Sequence[TimelineEntry]) -> list[dict[str, Any]]:
    return [
        {
            "at": t.at,
            "kind": t.kind,
            "message": t.message,
            "actor": _actor(t) or "incident-bot",
            "approved_by": t.data.get("approved_by"),
            "automatic": _actor(t) in (None, "incident-bot"),
        }
        for t in timeline
        if is_action(t)
    ]


def _incident_fields(incident: Incident, level: LevelSpec | None) -> dict[str, Any]:
    return {
        "id": incident.id,
        "title": incident.title,
        "severity": incident.severity.value,
        "severity_name": level.name if level else "",
        "severity_reason": incident.severity_reason,
        "status": incident.status.value,
        "group_key": incident.group_key,
        "created_at": incident.created_at,
        "acknowledged_at": incident.acknowledged_at,
        "acknowledged_by": incident.acknowledged_by,
        "resolved_at": incident.resolved_at,
        "reopened_count": incident.reopened_count,
        "previous_incident": incident.previous_incident,
        "in_maintenance": incident.in_maintenance,
        "maintenance_reason": incident.maintenance_reason,
        "external_url": incident.external_url,
    }


def _impact(
    incident: Incident, alerts: Sequence[AlertState], first: datetime, last_end: datetime | None
) -> dict[str, Any]:
    return {
        "alerts": [
            {
                "name": a.name,
                "status": a.status.value,
                "namespace": a.labels.get("namespace", ""),
                "summary": a.annotations.get("summary", ""),
                "description": a.annotations.get("description", ""),
                "starts_at": a.starts_at,
                "ends_at": a.ends_at,
            }
            for a in alerts
        ],
        "firing": sum(1 for a in alerts if a.status is AlertStatus.FIRING),
        "truncated": incident.truncated_alerts,
        "namespaces": sorted({a.labels["namespace"] for a in alerts if a.labels.get("namespace")}),
        "duration": human((incident.resolved_at or last_end or incident.updated_at) - first),
    }


def postmortem_context(
    incident: Incident, timeline: Sequence[TimelineEntry], policy: SeverityPolicy | None = None
) -> dict[str, Any]:
    """Everything the postmortem template shows, as plain data (pure)."""
    level = policy.level(incident.severity) if policy is not None else None
    end = incident.resolved_at
    alerts = sorted(incident.alerts.values(), key=lambda a: (a.name, a.starts_at))
    first = min((a.starts_at for a in alerts), default=incident.created_at)
    last_end = max((a.ends_at for a in alerts if a.ends_at is not None), default=None)
    return {
        "incident": _incident_fields(incident, level),
        "times": {
            "to_acknowledge": human(incident.acknowledged_at - incident.created_at)
            if incident.acknowledged_at
            else "not acknowledged",
            "to_resolve": human(end - incident.created_at) if end else "not resolved",
            "alerts_started": first,
            "alerts_ended": last_end,
        },
        "impact": _impact(incident, alerts, first, last_end),
        "timeline": [
            {"at": t.at, "kind": t.kind, "message": t.message, "actor": _actor(t) or ""} for t in timeline
        ],
        "severity_changes": _severity_changes(timeline),
        "actions": _actions(timeline),
        "escalations": sum(1 for t in timeline if t.kind == "escalated"),
        "open_questions": _open_questions(incident, timeline),
    }


def _environment(templates_dir: Path) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md
    env.filters["human"] = human
    env.filters["ts"] = _ts
    return env


def _ts(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_postmortem(
    incident: Incident,
    timeline: Sequence[TimelineEntry],
    *,
    templates_dir: Path,
    policy: SeverityPolicy | None = None,
) -> str:
    """The postmortem draft as Markdown."""
    template = _environment(templates_dir).get_template(TEMPLATE)
    return template.render(postmortem_context(incident, timeline, policy))
