"""The operations report: incidents by severity, MTTA/MTTR, actions, escalations, flapping groups.

Definitions (per incident, counted by its final severity, for incidents opened since the cut-off):

* time to acknowledge = first ``acknowledged_at`` - ``created_at``; MTTA = the mean over acknowledged ones;
* time to resolve = ``resolved_at`` - ``created_at`` (the last resolution, if it was reopened); MTTR = the
  mean over resolved ones;
* an action is a timeline entry whose kind starts with ``step_`` or whose data has ``approved_by``; it is
  automatic when its ``data.actor`` is absent or ``incident-bot``, by hand otherwise;
* escalations = ``escalated`` timeline entries; flapping groups = groups that started flapping since then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from statistics import fmean

from bot.incidents.postmortem import human, is_action
from bot.models import Incident, Severity, TimelineEntry
from bot.storage.incidents import IncidentStore


@dataclass(frozen=True)
class LevelStats:
    """Numbers for one severity."""

    incidents: int = 0
    acknowledged: int = 0
    resolved: int = 0
    mtta_seconds: float | None = None
    mttr_seconds: float | None = None


@dataclass(frozen=True)
class Report:
    """The whole report (JSON-able through :meth:`to_dict`)."""

    since: datetime
    until: datetime
    incidents: int
    by_severity: dict[str, LevelStats]
    actions_automatic: int
    actions_by_hand: int
    actions_approved: int
    escalations: int
    escalated_incidents: int
    reopened_incidents: int
    in_maintenance: int
    flapping_groups: int
    flapping_group_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict (times as ISO 8601)."""
        data = asdict(self)
        data["since"] = self.since.isoformat()
        data["until"] = self.until.isoformat()
        return data


def _mean(values: Sequence[float]) -> float | None:
    return round(fmean(values), 3) if values else None


def build_report(
    incidents: Sequence[Incident],
    timelines: Mapping[str, Sequence[TimelineEntry]],
    *,
    since: datetime,
    until: datetime,
    flapping_group_keys: Sequence[str] = (),
) -> Report:
    """The report over *incidents* (pure: the caller loads incidents and timelines)."""
    by_level: dict[str, LevelStats] = {}
    auto = manual = approved = escalations = escalated = 0
    for level in Severity:
        chosen = [i for i in incidents if i.severity is level]
        ack = [(i.acknowledged_at - i.created_at).total_seconds() for i in chosen if i.acknowledged_at]
        res = [(i.resolved_at - i.created_at).total_seconds() for i in chosen if i.resolved_at]
        by_level[level.value] = LevelStats(len(chosen), len(ack), len(res), _mean(ack), _mean(res))
    for incident in incidents:
        entries = timelines.get(incident.id, ())
        n = sum(1 for t in entries if t.kind == "escalated")
        escalations += n
        escalated += n > 0
        for entry in entries:
            if not is_action(entry):
                continue
            actor = entry.data.get("actor")
            if actor in (None, "", "incident-bot"):
                auto += 1
            else:
                manual += 1
            approved += bool(entry.data.get("approved_by"))
    return Report(
        since=since,
        until=until,
        incidents=len(incidents),
        by_severity=by_level,
        actions_automatic=auto,
        actions_by_hand=manual,
        actions_approved=approved,
        escalations=escalations,
        escalated_incidents=escalated,
        reopened_incidents=sum(1 for i in incidents if i.reopened_count),
        in_maintenance=sum(1 for i in incidents if i.in_maintenance),
        flapping_groups=len(flapping_group_keys),
        flapping_group_keys=sorted(flapping_group_keys),
    )


def collect_report(store: IncidentStore, *, period: timedelta, now: datetime | None = None) -> Report:
    """Load the incidents opened in the last *period* and build the report."""
    until = now or store.now()
    since = until - period
    incidents = store.created_since(since)
    timelines = {i.id: store.timeline(i.id) for i in incidents}
    flapping = [g.group_key for g in store.flapping_groups(since)]
    return build_report(incidents, timelines, since=since, until=until, flapping_group_keys=flapping)


def _secs(value: float | None) -> str:
    return human(timedelta(seconds=value)) if value is not None else "-"


def format_report(report: Report) -> str:
    """The report as text for a terminal."""
    lines = [
        f"Incidents opened {report.since:%Y-%m-%d %H:%M} - {report.until:%Y-%m-%d %H:%M} UTC: "
        f"{report.incidents}",
        "",
        f"{'SEV':<4} {'COUNT':>5} {'ACKED':>5} {'RESOLVED':>8}  {'MTTA':<14} {'MTTR':<14}",
    ]
    for level, stats in report.by_severity.items():
        lines.append(
            f"{level:<4} {stats.incidents:>5} {stats.acknowledged:>5} {stats.resolved:>8}  "
            f"{_secs(stats.mtta_seconds):<14} {_secs(stats.mttr_seconds):<14}"
        )
    lines += [
        "",
        f"actions: {report.actions_automatic} automatic, {report.actions_by_hand} by hand "
        f"({report.actions_approved} approved by a person)",
        f"escalations: {report.escalations} (in {report.escalated_incidents} incident(s))",
        f"reopened incidents: {report.reopened_incidents}; opened in maintenance: {report.in_maintenance}",
        f"flapping groups: {report.flapping_groups}",
    ]
    lines += [f"  {key}" for key in report.flapping_group_keys]
    return "\n".join(line.rstrip() for line in lines)
