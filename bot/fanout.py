"""Who hears about an incident change: one place that lists the notification tasks to send."""

from __future__ import annotations

from bot.settings import Settings, get_settings
from bot.slack.tasknames import NOTIFY_INCIDENT

#: Reconcile PagerDuty with an incident. Args: incident_id.
PAGERDUTY_SYNC = "workers.tasks.notify.pagerduty_sync"
#: Apply a verified PagerDuty webhook v3 event. Args: event (dict), webhook id.
PAGERDUTY_WEBHOOK = "workers.tasks.notify.pagerduty_webhook"


_override: Settings | None = None


def fanout_settings() -> Settings:
    """The settings that decide which integrations hear about changes (the process settings by default)."""
    return _override or get_settings()


def use_settings(settings: Settings | None) -> None:
    """Decide the fan-out with other settings (tests and embedding); None goes back to the process's."""
    global _override
    _override = settings


def change_notifications(
    settings: Settings, incident_id: str, event_id: str | None = None
) -> list[tuple[str, tuple[object, ...]]]:
    """The (task name, args) to send after `incident_id` changed, for the integrations configured."""
    tasks: list[tuple[str, tuple[object, ...]]] = []
    if settings.slack_configured:
        tasks.append((NOTIFY_INCIDENT, (incident_id, event_id)))
    if settings.pagerduty_configured:
        tasks.append((PAGERDUTY_SYNC, (incident_id,)))
    return tasks
